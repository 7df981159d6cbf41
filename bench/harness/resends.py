"""docs/api.md's resend advice as a load call: a call whose answer was lost is sent again after 0.5 s, 1 s, 2 s.

``advised_call`` runs one generation through any client of the harness (``RestClient``, ``GradioApiClient``) and
sends it again, same job and seed, while its answer is lost (a connection error, a reset, a timeout, a 502/503/504),
then gives up. Its ``Record`` says how many tries it took (``attempts``) and how long all of them took together.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.harness.generation import CallFailed, Rejected, Reply
from bench.harness.load import FAILED, OK, Clock, Record

RESEND_PAUSES = (0.5, 1.0, 2.0)
"""docs/api.md: resend after 0.5 s, 1 s, 2 s on a connection error, a reset, a timeout or a 502/503/504."""


def advised_call(clock: Clock, client: str, kind: str, call: Callable[[], Reply], resend_refusals: bool = False,
                 pauses: tuple[float, ...] = RESEND_PAUSES) -> Record:
    """``call`` with the advised resends, as one ``Record`` on ``clock`` (``attempts``: tries made; ``detail``: why
    the first try failed when a resend saved it, or why the last one failed). Every lost answer (``CallFailed``)
    is resent; a refusal (``Rejected``: a 4xx, or the web front's error message) only with ``resend_refusals``, as a
    ``gradio_client`` user calls again after any error."""
    start, first_failure, attempt = clock.now(), "", 0
    for pause in (*pauses, None):
        attempt += 1
        try:
            reply = call()
        except CallFailed as exc:
            detail = f"{type(exc).__name__}: {exc}"[:300]
            first_failure = first_failure or detail
            if pause is None or (isinstance(exc, Rejected) and not resend_refusals):
                break
            time.sleep(pause)
        except Exception as exc:  # an answer the client cannot read: no resend helps
            detail = f"unexpected {type(exc).__name__}: {exc}"[:300]
            break
        else:
            return Record(client, kind, True, start, clock.now(), OK, first_failure, reply.worker_id,
                          reply.web_node, attempt)
    return Record(client, kind, True, start, clock.now(), FAILED, detail, attempts=attempt)
