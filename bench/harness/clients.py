"""The three ways a user reaches portrait-ha, as blocking clients that check what they get back.

- ``RestClient``: ``POST /generate`` (JSON) on a worker or on HAProxy's public frontend.
- ``GradioApiClient``: ``gradio_client.Client(url).predict(..., api_name="/generate")``.
- ``BrowserProtocolClient``: what the studio page itself does in a browser: it keeps the
  balancer's cookie, reads ``/config``, joins Gradio's queue with the *Generate button's*
  event (not the API endpoint) and follows the SSE stream, progress messages included,
  then downloads the image from the node that made it. With ``api_name`` it joins the
  client API's event instead: Gradio's queue protocol without ``gradio_client``.

Every ``generate`` takes a ``Job`` and returns a ``Reply`` after checking the image: it must
decode as a PNG of the requested size. Anything else raises ``CallFailed``; a request the
server refused as invalid raises ``Rejected`` with the server's message (what malformed
requests are expected to get).
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import io
import json
import secrets
import ssl
import struct
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
from gradio_client import Client
from gradio_client.exceptions import AppError
from PIL import Image

DEFAULT_TIMEOUT = 600.0


@dataclass(frozen=True)
class Job:
    """One generation request, in the units every path understands."""

    prompt: str
    steps: int
    width: int
    height: int
    seed: int
    guidance: float = 1.0
    lora_scale: float = 1.0

    def rest_body(self) -> dict[str, Any]:
        """The JSON body of ``POST /generate``."""
        return asdict(self)


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class Reply:
    """A checked generation result."""

    seed: int
    width: int
    height: int
    worker_id: str
    web_node: str | None = None
    attempts: int = 1
    pixels_sha256: str = ""
    """Hash of the decoded RGB pixels: equal for equal images whatever the PNG encoder did."""
    progress_events: int = 0
    job_id: str | None = None
    """The recorded job that made the image (``X-Job-Id``, or the web front's ``info``), when there is one."""


class CallFailed(Exception):
    """A generation call did not produce a valid image; the message says why."""


class Rejected(CallFailed):
    """The server refused the request as invalid; the message is what it told the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def pixels_digest(image: Image.Image) -> str:
    """SHA-256 of an image's RGB pixels and size."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def check_image(data: bytes, job: Job) -> str:
    """Decode ``data`` as a PNG of the job's size; its pixel digest. Raises ``CallFailed``."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as exc:  # PIL raises many types for broken data
        raise CallFailed(f"the image does not decode: {exc}") from None
    if image.format != "PNG" or image.size != (job.width, job.height):
        raise CallFailed(f"expected a {job.width}x{job.height} PNG, got {image.format} {image.size}")
    return pixels_digest(image)


# ------------------------------------------------------------------------------------- REST
class RestClient:
    """``POST /generate`` on one base URL (a worker, or HAProxy's public frontend)."""

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, headers: dict[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        """``headers``: sent with every request (a worker's own port wants ``LaunchedCluster.internal_headers``);
        ``transport``: e.g. one with TCP keep-alive (``webui.keepalive``), as docs/api.md advises."""
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers, transport=transport)

    def generate(self, job: Job) -> Reply:
        """Run ``job``; a checked ``Reply`` or ``CallFailed``/``Rejected``."""
        return self.parse(self.post_json(job.rest_body()), job)

    def generate_unhashed(self, job: Job) -> Reply:
        """Run ``job``, checking its status, seed and PNG header (signature, size) but not its pixels:
        for load phases, where decoding every image would load the machine being measured."""
        response = self.post_json(job.rest_body())
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            header = base64.b64decode(body["images"][0][:32])
            size = struct.unpack(">II", header[16:24])
            if header[:8] != PNG_SIGNATURE or size != (job.width, job.height) or body["seed"] != job.seed:
                raise CallFailed(f"not the asked image: PNG header {header[:24]!r}, seed {body['seed']}")
            return Reply(body["seed"], job.width, job.height, body["worker_id"],
                         job_id=response.headers.get("x-job-id"))
        except (ValueError, KeyError, IndexError, TypeError, struct.error) as exc:
            raise CallFailed(f"malformed /generate answer: {exc!r}") from None

    def post_json(self, body: Any) -> httpx.Response:
        """POST any JSON body to ``/generate`` (transport errors become ``CallFailed``)."""
        return self._send(lambda: self.http.post("/generate", json=body))

    def post_raw(self, content: bytes, content_type: str = "application/json") -> httpx.Response:
        """POST raw bytes to ``/generate``, e.g. broken JSON."""
        return self._send(lambda: self.http.post("/generate", content=content, headers={"content-type": content_type}))

    @staticmethod
    def _send(call: Any) -> httpx.Response:
        try:
            return call()
        except httpx.HTTPError as exc:
            raise CallFailed(f"{type(exc).__name__}: {exc}") from None

    @staticmethod
    def parse(response: httpx.Response, job: Job) -> Reply:
        """Check a ``/generate`` response against the job that was sent."""
        if response.status_code != 200:
            raise error_from_response(response)
        try:
            body = response.json()
            digest = check_image(base64.b64decode(body["images"][0]), job)
            if body["seed"] != job.seed:
                raise CallFailed(f"asked for seed {job.seed}, got {body['seed']}")
            return Reply(body["seed"], job.width, job.height, body["worker_id"], pixels_sha256=digest,
                         job_id=response.headers.get("x-job-id"))
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise CallFailed(f"malformed /generate answer: {exc!r}") from None

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()


def error_from_response(response: httpx.Response) -> CallFailed:
    """``Rejected`` for a 4xx with the API's error body, ``CallFailed`` for anything else."""
    try:
        body = response.json()
        detail = body.get("detail") if isinstance(body, dict) else None
    except ValueError:
        detail = None
    text = detail or response.text[:300]
    if 400 <= response.status_code < 500 and detail:
        return Rejected(str(detail), response.status_code)
    return CallFailed(f"HTTP {response.status_code}: {text}")


# ------------------------------------------------------------------------------- gradio_client
class GradioApiClient:
    """The web front's ``/generate`` client endpoint through ``gradio_client`` (one reused Client)."""

    def __init__(self, url: str, download_dir: Path | None = None, tls_context: ssl.SSLContext | None = None,
                 call_timeout: float = DEFAULT_TIMEOUT, headers: dict[str, str] | None = None) -> None:
        """``tls_context``: one context for all of the client's requests (``ssl_verify=``); ``call_timeout``:
        seconds a call may take before it fails (``gradio_client`` itself would wait for ever on an event
        stream that only sends heartbeats); ``headers``: sent with every request (e.g. a stickiness cookie).

        By default ``gradio_client`` opens a new ``httpx`` client for the join, the event
        stream and the download of every call, and each loads the CA bundle again (tens of
        ms each on a loaded CPU, even for plain http). A context made once (verifying as the
        default does) is reused by all of them.
        """
        kwargs: dict[str, Any] = {"verbose": False}
        if download_dir is not None:
            kwargs["download_files"] = str(download_dir)
        if headers is not None:
            kwargs["headers"] = headers
        if tls_context is not None:
            kwargs["ssl_verify"] = tls_context  # httpx takes a context where gradio_client says bool
        self.url, self.kwargs, self.call_timeout = url, kwargs, call_timeout
        self.client = Client(url, **kwargs)

    def generate(self, job: Job) -> Reply:
        """Run ``job``; a checked ``Reply``. A ``gr.Error`` from the app becomes ``Rejected``; no result within
        ``call_timeout`` ``CallFailed`` (the client is then replaced: its event stream may be stuck)."""
        try:
            submitted = self.client.submit(
                job.prompt, "", job.steps, job.guidance, job.width, job.height, job.seed, job.lora_scale, 1,
                api_name="/generate",
            )
            gallery, info = submitted.result(timeout=self.call_timeout)
        except concurrent.futures.TimeoutError:
            self.replace_client()
            raise CallFailed(f"no result within {self.call_timeout:g} s (the event stream sent nothing "
                             "but heartbeats)") from None
        except concurrent.futures.CancelledError:
            raise CallFailed("the event stream ended before the result (e.g. a web front with no job of this "
                             "session answered it)") from None
        except AppError as exc:
            raise Rejected(str(exc)) from None
        except Exception as exc:  # gradio_client raises plain Exceptions for transport problems
            raise CallFailed(f"{type(exc).__name__}: {exc}") from None
        return reply_from_gallery(gallery, info, job, read_file=lambda path: Path(path).read_bytes())

    def replace_client(self) -> None:
        """A new ``gradio_client.Client`` (new session, no stream left open) in place of the current one."""
        self.client.close()
        self.client = Client(self.url, **self.kwargs)

    def close(self) -> None:
        """Stop the client's background threads and remove its downloads."""
        self.client.close()


def reply_from_gallery(gallery: Any, info: Any, job: Job, read_file: Any, progress_events: int = 0) -> Reply:
    """Check a (gallery, info) pair from the web front and build a ``Reply``."""
    if not gallery or not isinstance(info, dict):
        raise CallFailed(f"empty result: gallery={gallery!r} info={info!r}")
    first = gallery[0]
    ref = first.get("image", first) if isinstance(first, dict) else first[0]
    if isinstance(ref, dict):
        ref = ref.get("path") or ref.get("url")
    digest = check_image(read_file(ref), job)
    if info.get("seed") != job.seed:
        raise CallFailed(f"asked for seed {job.seed}, got {info.get('seed')}")
    return Reply(
        info["seed"], job.width, job.height, info.get("worker_id") or info["job_id"], info.get("web_node"),
        info.get("attempts", 1),
        pixels_sha256=digest, progress_events=progress_events, job_id=info.get("job_id"),
    )


# ----------------------------------------------------------------------------- browser protocol
@dataclass(frozen=True)
class PageEvent:
    """One event of the page (e.g. the Generate button's click), as the app's ``/config`` describes it, and the
    events the page runs after it (``.then``: with jobs, Generate records the job and a second event follows it)."""

    fn_index: int
    trigger_id: int | None
    inputs: list[tuple[str | None, Any]]
    """(elem_id, the value the page starts with) of each input component, in order (label for an API event)."""
    outputs: list[str | None]
    """elem_id of each output component, in order."""
    input_ids: tuple[int, ...] = ()
    output_ids: tuple[int, ...] = ()
    then: PageEvent | None = None
    """The event the page runs once this one completed (its inputs read the values this one's outputs set)."""

    @classmethod
    def api(cls, config: dict[str, Any], api_name: str) -> PageEvent:
        """The client API's ``api_name`` event; its inputs are keyed by their labels (the API's argument names)."""
        components = {c["id"]: c.get("props", {}) for c in config["components"]}
        for index, dependency in enumerate(config["dependencies"]):
            if dependency.get("api_name") == api_name:
                return cls(
                    fn_index=dependency.get("id", index),
                    trigger_id=None,
                    inputs=[(components[i].get("label"), components[i].get("value")) for i in dependency["inputs"]],
                    outputs=[components[o].get("elem_id") for o in dependency["outputs"]],
                )
        raise CallFailed(f"the app has no API endpoint /{api_name}")

    @classmethod
    def find(cls, config: dict[str, Any], elem_id: str, trigger: str = "click") -> PageEvent:
        """The ``trigger`` event of the component with ``elem_id`` (and those chained after it); ``CallFailed`` if
        the page has none."""
        components = {c["id"]: c for c in config["components"]}
        target = next((c for c in components.values() if c.get("props", {}).get("elem_id") == elem_id), None)
        if target is None:
            raise CallFailed(f"the page has no component #{elem_id}")
        dependencies = config["dependencies"]

        def describe(component_id: int) -> tuple[str | None, Any]:
            props = components[component_id].get("props", {})
            return props.get("elem_id"), props.get("value")

        def event(index: int, seen: frozenset[int] = frozenset()) -> PageEvent:
            dependency = dependencies[index]
            fn = dependency.get("id", index)
            chained = next((i for i, d in enumerate(dependencies)
                            if d.get("trigger_after") == fn and d.get("id", i) not in seen), None)
            return cls(fn_index=fn, trigger_id=target["id"], inputs=[describe(i) for i in dependency["inputs"]],
                       outputs=[describe(o)[0] for o in dependency["outputs"]],
                       input_ids=tuple(dependency["inputs"]), output_ids=tuple(dependency["outputs"]),
                       then=None if chained is None else event(chained, seen | {fn}))

        for index, dependency in enumerate(dependencies):
            if [target["id"], trigger] in [list(t) for t in dependency.get("targets", [])]:
                return event(index)
        raise CallFailed(f"#{elem_id} has no {trigger} event")

    def payload(self, values: dict[str, Any]) -> list[Any]:
        """The event's input data: ``values`` by elem_id, the page's own value for the others."""
        return [values.get(elem_id, default) if elem_id else default for elem_id, default in self.inputs]

    def chained_payload(self, shown: dict[int, Any]) -> list[Any]:
        """A chained event's input data: what earlier events set (``shown``, by component id), else the page's."""
        return [shown.get(component, default) for component, (_, default) in zip(self.input_ids, self.inputs,
                                                                                 strict=True)]

    def named_outputs(self, data: list[Any]) -> dict[str, Any]:
        """The event's output data by elem_id."""
        return {elem_id: value for elem_id, value in zip(self.outputs, data, strict=False) if elem_id}

    def component_values(self, data: list[Any]) -> dict[int, Any]:
        """The values the event's output data sets, by component id (Gradio's updates, such as ``gr.skip()``, set
        none: they are not values)."""
        return {component: value for component, value in zip(self.output_ids, data, strict=False)
                if not (isinstance(value, dict) and value.get("__type__") == "update")}


def stream_messages(stream: httpx.Response, event_id: str) -> Iterator[dict[str, Any]]:
    """The SSE messages of a session's queue stream that concern event ``event_id``: those tagged with its id and
    the untagged, session-wide ones (heartbeats, ``close_stream``, ``unexpected_error``), as Gradio's page routes
    them. Another event's messages (a call that failed earlier may still complete) are skipped."""
    for line in stream.iter_lines():
        if not line.startswith("data:"):
            continue
        message = json.loads(line[5:])
        if message.get("event_id") in (None, event_id):
            yield message


class BrowserProtocolClient:
    """Gradio's queue protocol exactly as the studio page speaks it (one browser tab).

    ``open`` loads the page and its ``/config`` through the balancer, which sets the sticky
    cookie this client then keeps, like a browser; ``generate`` fills the page's inputs by
    their elem_ids, triggers the Generate button's event, follows the event stream and
    downloads the resulting image.
    """

    def __init__(self, base_url: str, timeout: float = DEFAULT_TIMEOUT, api_name: str | None = None) -> None:
        """``api_name``: join that client API event (e.g. ``generate``) instead of the Generate button's."""
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=True)
        self.session_hash = secrets.token_hex(6)
        self.api_name = api_name
        self.event: PageEvent | None = None

    def open(self) -> None:
        """Load the page and find the Generate button's (or the API's) event in the app config."""
        try:
            self.http.get("/").raise_for_status()
            config = self.http.get("/config").raise_for_status().json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CallFailed(f"page did not load: {exc}") from None
        self.event = PageEvent.api(config, self.api_name) if self.api_name else PageEvent.find(config, "generate")

    def generate(self, job: Job) -> Reply:
        """Click Generate with ``job``'s values; a checked ``Reply`` (``Rejected`` when the page shows an error)."""
        try:
            event_id = self.join(job)
            data, progress_events = self._follow_stream(event_id)
            assert self.event is not None
            event, shown = self.event, self.event.named_outputs(data)
            values = event.component_values(data)
            while event.then is not None:  # the page's next event (with jobs: follow the recorded job)
                if (error := shown.get("error")) and isinstance(error, dict) and error.get("visible"):
                    break
                event = event.then
                data, more = self._follow_stream(self._join_event(event, event.chained_payload(values)))
                progress_events += more
                values.update(event.component_values(data))
                shown.update(event.named_outputs(data))
        except httpx.HTTPError as exc:
            raise CallFailed(f"{type(exc).__name__}: {exc}") from None
        error = shown.get("error")
        if isinstance(error, dict) and error.get("visible") and error.get("value"):
            raise Rejected(str(error["value"]))
        return reply_from_gallery(shown.get("gallery"), shown.get("info"), job, read_file=self._download,
                                  progress_events=progress_events)

    def join(self, job: Job) -> str:
        """Click Generate with ``job``'s values: the event joins the queue; its event id (results follow on the
        session's stream, tagged with it)."""
        if self.event is None:
            self.open()
        assert self.event is not None
        if self.api_name:
            values = {**job.rest_body(), "negative_prompt": "", "num_images": 1}
        else:
            values = {
                "prompt": job.prompt, "negative-prompt": "", "steps": job.steps, "guidance": job.guidance,
                "width": job.width, "height": job.height, "seed": job.seed, "seed-random": False,
                "lora-scale": job.lora_scale, "num-images": 1,
            }
        return self._join_event(self.event, self.event.payload(values))

    def _join_event(self, event: PageEvent, data: list[Any]) -> str:
        """Join ``event`` with ``data``: its event id."""
        body = {"data": data, "event_data": None, "fn_index": event.fn_index, "trigger_id": event.trigger_id,
                "session_hash": self.session_hash}
        joined = self.http.post("/gradio_api/queue/join", json=body)
        if joined.status_code != 200:
            raise CallFailed(f"queue/join: HTTP {joined.status_code}: {joined.text[:200]}")
        try:
            return str(joined.json()["event_id"])
        except (ValueError, KeyError, TypeError):
            raise CallFailed(f"queue/join: no event id in {joined.text[:200]!r}") from None

    def leave_once_running(self, job: Job) -> dict[int, Any]:
        """Click Generate, follow the stream until the first denoising step, then close the tab; what the page's
        components held then (by component id: with jobs, the kept job)."""
        event_id = self.join(job)
        assert self.event is not None
        values: dict[int, Any] = {}
        if self.event.then is not None:  # with jobs: Generate records the job, the next event follows it
            data, _ = self._follow_stream(event_id)
            values = self.event.component_values(data)
            event_id = self._join_event(self.event.then, self.event.then.chained_payload(values))
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session_hash}) as stream:
            for message in stream_messages(stream, event_id):
                if message.get("msg") == "progress" and (message.get("progress_data") or [{}])[0].get("index"):
                    break  # a denoising step: the job runs on a worker
        self.close()
        return values

    def click(self, elem_id: str, shown: dict[int, Any]) -> list[Any]:
        """Click the button ``elem_id`` of a page whose components hold ``shown`` (by component id); its output."""
        config = self.http.get("/config").raise_for_status().json()
        event = PageEvent.find(config, elem_id)
        data, _ = self._follow_stream(self._join_event(event, event.chained_payload(shown)))
        return data

    def _follow_stream(self, event_id: str) -> tuple[list[Any], int]:
        """Read the session's SSE stream until event ``event_id`` completes: (output data, its progress messages).

        The stream carries every event of the session: like the page, only messages tagged with this event's id,
        or with none (session-wide), are this job's; a completion left over from an earlier call is not."""
        progress_events = 0
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": self.session_hash}) as stream:
            if stream.status_code != 200:
                stream.read()
                raise CallFailed(f"queue/data: HTTP {stream.status_code}: {stream.text[:200]}")
            for message in stream_messages(stream, event_id):
                kind = message.get("msg")
                if kind == "progress":
                    progress_events += 1
                elif kind == "process_completed":
                    output = message.get("output") or {}
                    if not message.get("success"):
                        raise Rejected(str(output.get("error") or output))
                    return output["data"], progress_events
                elif kind in ("unexpected_error", "close_stream"):
                    raise CallFailed(f"the event stream ended: {message}")
        raise CallFailed("the event stream closed before the job completed")

    def _download(self, ref: str) -> bytes:
        """Fetch a gallery file the way the page's <img> does (same cookie, same node)."""
        url = ref if ref.startswith("http") else f"/gradio_api/file={ref}"
        response = self.http.get(url)
        if response.status_code != 200:
            raise CallFailed(f"image download: HTTP {response.status_code} for {url}")
        return response.content

    def close(self) -> None:
        """Close the connection pool (the tab)."""
        self.http.close()
