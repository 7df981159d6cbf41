"""The soak's clients and their requests: good jobs, and each client type's catalogue of malformed ones."""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

from bench.harness.browser_client import BrowserProtocolClient
from bench.harness.generation import Job, Reply
from bench.harness.gradio_api_client import GradioApiClient
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.load import Clock, LoadClient, Record, timed_call
from bench.harness.rest_client import RestClient

PROMPT = "candid portrait in a sunflower field, golden hour"

MalformedCall = tuple[Callable[[Any], Reply], list[str]]
"""A bad request for one client type: (call taking the client, words the refusal must contain)."""


def _rest_json(body: dict[str, Any]) -> Callable[[RestClient], Reply]:
    return lambda rest: RestClient.parse(rest.post_json(body), BAD_JOB)


BAD_JOB = Job(PROMPT, 4, 520, 512, seed=3)
"""A job whose width is no multiple of 16 (Z-Image's rule)."""

REST_MALFORMED: list[MalformedCall] = [
    (_rest_json({"prompt": PROMPT, "steps": 0}), ["steps"]),
    (_rest_json({"prompt": PROMPT, "width": 520, "height": 512}), ["width", "16"]),
    (_rest_json({"prompt": PROMPT, "num_images": 99}), ["num_images"]),
    (_rest_json({"prompt": ""}), ["prompt"]),
    (_rest_json({"prompt": PROMPT, "guidance": "lots"}), ["guidance"]),
    (_rest_json({"prompt": PROMPT, "seed": -3}), ["seed"]),
    (_rest_json({"prompt": PROMPT, "colour": "red"}), ["colour"]),
    (_rest_json({"prompt": PROMPT, "init_image": "not an image"}), ["init_image"]),
    (lambda rest: RestClient.parse(rest.post_raw(b'{"prompt": "unterminated'), BAD_JOB), ["JSON"]),
]
PAGE_MALFORMED: list[MalformedCall] = [
    # Values the page itself lets a person send: its width slider moves in steps of 8.
    (lambda client: client.generate(BAD_JOB), ["width", "16"]),
    (lambda client: client.generate(Job("", 4, 256, 256, seed=3)), ["prompt"]),
]
GRADIO_MALFORMED: list[MalformedCall] = PAGE_MALFORMED + [
    # The client API takes plain numbers: the worker's limits apply.
    (lambda client: client.generate(Job(PROMPT, 500, 256, 256, seed=3)), ["steps"]),
]


class Traffic:
    """Builds the soak's clients; each request is good or (with some probability) malformed."""

    def __init__(self, cluster: LaunchedCluster, clock: Clock, args: argparse.Namespace) -> None:
        self.cluster = cluster
        self.clock = clock
        self.args = args
        self.closers: list[Callable[[], None]] = []

    def job(self, index: int, i: int) -> Job:
        """The ``i``-th good job of client ``index`` (distinct seeds)."""
        return Job(PROMPT, self.args.steps, self.args.size, self.args.size, seed=100_000 * (index + 1) + i)

    def client(self, name: str, kind: str, index: int, get: Callable[[int], Any], malformed: list[MalformedCall]
               ) -> LoadClient:
        """A load client of ``kind`` calling ``get(i)`` (its client for request ``i``)."""
        rng = random.Random(f"{self.args.seed}-{name}")

        def call(i: int) -> Record:
            client = get(i)
            if rng.random() < self.args.malformed:
                bad, words = rng.choice(malformed)
                return timed_call(self.clock, name, kind, False, lambda: bad(client), words)
            return timed_call(self.clock, name, kind, True, lambda: client.generate(self.job(index, i)))

        return LoadClient(name, call, max_requests=100_000, pause=rng.uniform(0, self.args.pause))

    def clients(self) -> list[LoadClient]:
        """Browser tabs, one reused gradio_client, REST clients."""
        url = self.cluster.public_url
        clients = []
        for index in range(self.args.browsers):
            clients.append(self.client(f"browser-{index}", "browser", index, self._tab(url), PAGE_MALFORMED))
        gradio = GradioApiClient(url + "/")
        self.closers.append(gradio.close)
        clients.append(self.client("gradio_client", "gradio_client", 50, lambda i: gradio, GRADIO_MALFORMED))
        for index in range(self.args.rest):
            rest = RestClient(url)
            self.closers.append(rest.close)
            clients.append(self.client(f"rest-{index}", "rest", 60 + index, lambda i, rest=rest: rest,
                                       REST_MALFORMED))
        return clients

    def _tab(self, url: str) -> Callable[[int], BrowserProtocolClient]:
        """A browser tab that reloads the page (new tab, new session) every few jobs."""
        current: list[BrowserProtocolClient] = []

        def get(i: int) -> BrowserProtocolClient:
            if i % self.args.reopen_every == 0:
                for old in current:
                    old.close()
                current[:] = [BrowserProtocolClient(url)]
            return current[0]

        self.closers.append(lambda: [tab.close() for tab in current])
        return get
