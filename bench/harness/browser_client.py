"""``BrowserProtocolClient``: what the studio page itself does in a browser.

It keeps the balancer's cookie, reads ``/config``, joins Gradio's queue with the *Generate button's*
event (not the API endpoint) and follows the SSE stream, progress messages included,
then downloads the image from the node that made it. With ``api_name`` it joins the
client API's event instead: Gradio's queue protocol without ``gradio_client``.
"""

from __future__ import annotations

import secrets
from typing import Any

import httpx

from bench.harness.generation import DEFAULT_TIMEOUT, CallFailed, Job, Rejected, Reply, reply_from_gallery
from bench.harness.page_events import PageEvent, stream_messages


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
        # A page's requests carry a browser's fetch metadata, as a real tab's do (HAProxy's cross-site rules read it).
        page = {"Sec-Fetch-Mode": "cors", "Sec-Fetch-Site": "same-origin"} if api_name is None else None
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout, follow_redirects=True, headers=page)
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

    def outcome(self, event_id: str) -> dict[str, Any]:
        """Open the session's stream (late, for a test) and read what the joined button event showed, by elem_id."""
        assert self.event is not None
        data, _ = self._follow_stream(event_id)
        return self.event.named_outputs(data)

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
