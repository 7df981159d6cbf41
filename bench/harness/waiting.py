"""Waiting for something to happen: a URL to answer, a condition to hold."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

import httpx

T = TypeVar("T")


def wait_http(url: str, status: int = 200, timeout: float = 90.0,
              proc: subprocess.Popen | None = None, auth: tuple[str, str] | None = None) -> httpx.Response:
    """Poll ``url`` (with basic ``auth``) until it answers ``status``, also while nothing listens there yet; fail
    early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} while waiting for {url}")
        try:
            response = httpx.get(url, timeout=5, auth=auth)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")


def wait_until(check: Callable[[], T], what: str, timeout: float = 15.0, interval: float = 0.02) -> T:
    """Poll ``check`` until it returns something truthy (returned); ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what} within {timeout}s (last: {last!r})")
