"""A tiny stand-in for a node process, for balancer and sidecar tests that need no model.

    python -m tests.fake_node --name w1 --port 8123 [--delay 0.5] [--exit-code 86 --exit-after 0.3]

Serves ``GET /readyz`` and ``/healthz`` (200, JSON), ``GET|POST /generate`` (waits ``--delay``
seconds, or the ``delay`` query parameter, then answers JSON naming this process and echoing the
request headers) and ``GET /`` (the name and the headers). With ``--exit-code``
it exits with that code ``--exit-after`` seconds after it started listening; with
``--once-file`` it does that only when the file does not exist yet (and creates it), so the
restarted process stays up. With ``--hog-file PATH``, once that file appears it is removed and
the process spins a CPU core for the seconds written in it (at most 30) while holding the GIL:
busy, answering nothing (a long call that never releases the GIL).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def make_handler(name: str, delay: float) -> type[BaseHTTPRequestHandler]:
    """A request handler class that answers as ``name``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length).decode(errors="replace") if length else ""
            path = self.path.split("?", 1)[0]
            if path in ("/readyz", "/healthz"):
                self._send(200, {"status": "ready", "name": name, "busy": False})
            elif path.startswith("/generate"):
                query = parse_qs(urlsplit(self.path).query)
                time.sleep(float(query.get("delay", [delay])[0]))
                self._send(200, {"worker_id": name, "pid": os.getpid(), "path": self.path, "body": body,
                                 "done_at": time.time(), "headers": dict(self.headers.items())})
            else:
                self._send(200, {"name": name, "path": self.path, "headers": dict(self.headers.items())})

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


class QuietServer(ThreadingHTTPServer):
    """Ignores clients that hang up early (HAProxy's health checks do)."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass


MAX_HOG_SECONDS = 30.0


def hog_when_asked(path: Path) -> None:
    """Wait for ``path`` (written whole: renamed into place); then spin for the seconds it names, never letting
    another thread run."""
    while not path.exists():
        time.sleep(0.05)
    seconds = min(MAX_HOG_SECONDS, float(path.read_text()))
    path.unlink()
    sys.setswitchinterval(MAX_HOG_SECONDS * 2)  # no other thread gets the GIL until this one lets go
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass
    sys.setswitchinterval(0.005)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--delay", type=float, default=0.0, help="Seconds /generate takes.")
    parser.add_argument("--exit-code", type=int, default=None, help="Exit with this code after --exit-after.")
    parser.add_argument("--exit-after", type=float, default=0.2)
    parser.add_argument("--once-file", type=Path, default=None, help="Exit only if this file is absent.")
    parser.add_argument("--hog-file", type=Path, default=None, help="Spin holding the GIL once this file appears.")
    args = parser.parse_args()

    server = QuietServer((args.host, args.port), make_handler(args.name, args.delay))
    if args.exit_code is not None:
        crash = args.once_file is None or not args.once_file.exists()
        if args.once_file is not None:
            args.once_file.touch()
        if crash:
            threading.Timer(args.exit_after, os._exit, args=(args.exit_code,)).start()
    if args.hog_file is not None:
        threading.Thread(target=hog_when_asked, args=(args.hog_file,), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
