"""``GradioApiClient``: ``gradio_client.Client(url).predict(..., api_name="/generate")``, checking what comes back."""

from __future__ import annotations

import concurrent.futures
import ssl
from pathlib import Path
from typing import Any

from gradio_client import Client
from gradio_client.exceptions import AppError

from bench.harness.generation import DEFAULT_TIMEOUT, CallFailed, Job, Rejected, Reply, reply_from_gallery


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
