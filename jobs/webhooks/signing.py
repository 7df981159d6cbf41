"""Signing webhook requests per Standard Webhooks (https://www.standardwebhooks.com), with its own package.

Each request carries ``webhook-id`` (the message: the same on every retry), ``webhook-timestamp`` (this attempt,
Unix seconds) and ``webhook-signature`` (``v1,<base64 HMAC-SHA256 of "id.timestamp.body">``). The secret is
``whsec_<base64>``, one per deployment; it is never logged or shown in a ``repr``.
"""

from __future__ import annotations

import base64
import logging
import math
import os
import secrets
from datetime import datetime
from pathlib import Path

from standardwebhooks import Webhook

logger = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
SECRET_FILE = "webhook-secret"
"""The generated secret's file in the run directory, when the operator names none."""


def new_secret() -> str:
    """A fresh signing secret, ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


class WebhookSigner:
    """Signs webhook bodies with one secret (``whsec_…``)."""

    def __init__(self, secret: str) -> None:
        if not secret.startswith(SECRET_PREFIX):
            raise ValueError("the webhook secret must start with whsec_ (make one with jobs.webhooks.signing"
                             ".new_secret)")
        try:
            self._webhook = Webhook(secret)
        except Exception as error:  # the package raises binascii.Error, EmptyWebhookSecretError …
            raise ValueError("the webhook secret is not whsec_ followed by base64") from error

    def __repr__(self) -> str:
        return "WebhookSigner(secret=<hidden>)"

    def headers(self, message_id: str, body: bytes, at: datetime) -> dict[str, str]:
        """The three Standard Webhooks headers for ``body`` sent at ``at`` (a timezone-aware time)."""
        return {
            "webhook-id": message_id,
            "webhook-timestamp": str(math.floor(at.timestamp())),
            "webhook-signature": self._webhook.sign(message_id, at, body),
        }


def read_secret(path: Path, create: bool = False) -> str:
    """The ``whsec_`` secret in the file ``path``; with ``create``, a missing file is first made with a new secret
    (mode 0600, atomically: services starting together all read the one that was written first)."""
    if create and not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(new_secret() + "\n")
        try:
            os.link(draft, path)
            logger.info("webhook signing secret generated in %s (mode 0600): give it to the webhooks' receivers, "
                        "and the same file to every balancer host", path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise ValueError(f"the webhook secret file {path} cannot be read ({error.strerror})") from None
    try:
        WebhookSigner(secret)
    except ValueError as error:
        raise ValueError(f"the webhook secret file {path} does not hold a secret: {error}") from None
    return secret
