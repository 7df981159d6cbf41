"""Control a running cluster through its sidecar.

    python -m balancer.cli status [--json]            # every node part: state, pid, GPU, restarts, queue
    python -m balancer.cli drain NODE [--json]        # out of rotation: in-flight requests finish, new go elsewhere
    python -m balancer.cli ready NODE [--json]        # back in rotation
    python -m balancer.cli rolling-restart [--model M] [--lora L] [--json]   # node by node, no request failed
    python -m balancer.cli add-node [--gpu G] [--json]          # one more node, in rotation once ready
    python -m balancer.cli remove-node NODE [--json]            # drained, its requests finished, stopped, gone

On a node host, run on that host, the same commands act on its own nodes through its sidecar
(``rolling-restart`` then drains them through its host agent, ``balancer.operations.rolling``); on a balancer
sharing a floating address, ``status`` also says whether this balancer holds it (keepalived's state).

``status`` is read-only (``GET /status``, no password). The others need the stats page's
user and password (``--user``, ``--password`` or, better, the ``PORTRAIT_STATS_PASSWORD`` environment
variable: a command line is visible to every user of the machine). ``rolling-restart`` starts the
sidecar's operation (``balancer.operations.rolling``) and follows it (``GET /operation``), printing each step.
Exit status: 0 done, 1 refused by the sidecar (wrong password, no such node, another operation
running), 2 bad usage, no sidecar to talk to, or an HAProxy that did not take the change, 3 an
operation that stopped before its end (the report says where and why); errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence

import httpx

from balancer.cli.ctl_output import format_admin, format_event, format_status
from balancer.config.access import STATS_PASSWORD_ENV, StatsSpec
from balancer.config.basics import LOOPBACK
from balancer.config.health import SidecarSpec

PASSWORD_ENV = STATS_PASSWORD_ENV
DEFAULT_SIDECAR = f"http://{LOOPBACK}:{SidecarSpec.model_fields['port'].default}"
DEFAULT_USER: str = StatsSpec.model_fields["user"].default
TIMEOUT = 10.0
"""Seconds one request to the sidecar may take."""

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_FAILED = 0, 1, 2, 3
FOLLOW_INTERVAL = 1.0
"""Seconds between two looks at a running operation."""
REFUSED = {400, 401, 404, 409}
"""HTTP statuses that mean the sidecar understood and said no."""


class CtlError(Exception):
    """A failure to report in one line, with the exit status it means."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def request(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> dict:
    """One request to the sidecar; its JSON answer, or ``CtlError``."""
    url = args.sidecar.rstrip("/") + path
    auth = (args.user, args.password) if args.password is not None else None
    try:
        answer = httpx.request(method, url, auth=auth, json=body, timeout=TIMEOUT)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        reason = str(exc) or type(exc).__name__
        raise CtlError(f"cannot reach the sidecar at {args.sidecar}: {reason}", EXIT_USAGE) from exc
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if answer.is_success:
        return body
    detail = body.get("detail") if isinstance(body, dict) else None
    message = f"{method} {path}: {answer.status_code} {detail or answer.reason_phrase}"
    if answer.status_code == 401:
        message += f" (check --user and --password / {PASSWORD_ENV})"
    raise CtlError(message, EXIT_REFUSED if answer.status_code in REFUSED else EXIT_USAGE)


def follow(args: argparse.Namespace, report: dict) -> dict:
    """Poll ``GET /operation`` until ``report``'s operation ends (printing its steps unless ``--json``)."""
    deadline = time.monotonic() + args.timeout
    shown, ident = 0, report.get("id")
    while True:
        if not args.json:
            for event in report.get("events", [])[shown:]:
                print(format_event(event), flush=True)
            shown = len(report.get("events", []))
        if report.get("state") != "running":
            return report
        if time.monotonic() > deadline:
            raise CtlError(f"{report.get('kind')} #{report.get('id')} still running after {args.timeout:g} s "
                           "(--timeout); it goes on in the sidecar: see GET /operation", EXIT_FAILED)
        time.sleep(FOLLOW_INTERVAL)
        report = request(args, "GET", "/operation")
        if report.get("id") != ident:
            raise CtlError("another operation replaced this one", EXIT_FAILED)


def rolling_restart(args: argparse.Namespace) -> int:
    """Start a rolling restart and follow it to its end."""
    body = {"model": args.model, "lora": args.lora, "drain_timeout": args.drain_timeout, "settle": args.settle}
    if args.ready_timeout is not None:
        body["ready_timeout"] = args.ready_timeout
    return operation(args, "/rolling-restart", body, lambda report: f"{len(report.get('nodes', {}))} nodes restarted")


def operation(args: argparse.Namespace, path: str, body: dict, done: Callable[[dict], str]) -> int:
    """Start an operation, follow it to its end, print its outcome (``done`` says it in words)."""
    report = follow(args, request(args, "POST", path, body))
    kind = str(report.get("kind", "operation")).replace("-", " ")
    if args.json:
        print(json.dumps(report, indent=2))
    elif report.get("state") == "done":
        print(f"{kind} done: {done(report)}")
    if report.get("state") != "done":
        raise CtlError(f"{kind} failed: {report.get('error')}", EXIT_FAILED)
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    """Carry out the parsed command; print its outcome."""
    if args.command == "status":
        document = request(args, "GET", "/status")
        print(json.dumps(document, indent=2) if args.json else format_status(document))
        return EXIT_OK
    if args.command == "rolling-restart":
        return rolling_restart(args)
    if args.command == "add-node":
        body = {"gpu": args.gpu} | ({"ready_timeout": args.ready_timeout} if args.ready_timeout else {})
        return operation(args, "/add-node", body, lambda report: ", ".join(report.get("nodes", {})) + " added")
    if args.command == "remove-node":
        body = {"drain_timeout": args.drain_timeout, "settle": args.settle}
        return operation(args, f"/remove-node/{args.node}", body, lambda report: f"{args.node} removed")
    answer = request(args, "POST", f"/{args.command}/{args.node}")
    print(json.dumps(answer, indent=2) if args.json else format_admin(answer))
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    """The command line: a subcommand each, the common options after it (``ctl status --json``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--sidecar", default=DEFAULT_SIDECAR, metavar="URL",
                        help=f"The sidecar's URL (default: {DEFAULT_SIDECAR}).")
    common.add_argument("--user", default=DEFAULT_USER, help=f"Stats page user (default: {DEFAULT_USER}).")
    common.add_argument("--password", default=os.environ.get(PASSWORD_ENV),
                        help=f"Stats page password (default: ${PASSWORD_ENV}, which is safer: not shown by ps).")
    common.add_argument("--json", action="store_true", help="Machine-readable output: the sidecar's JSON answer.")
    parser = argparse.ArgumentParser(prog="python -m balancer.cli", description=__doc__.splitlines()[0],
                                     epilog="Each command has --help; its options come after it.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("status", parents=[common], help="Every node part: state, pid, GPU, restarts, queue.",
                        description="Every node part: state, operator state, HAProxy's status, pid, GPU, restarts, "
                        "last cause of death, requests in flight and queued (read-only, no password).")
    for name, summary in (
        ("drain", "Take NODE out of rotation: in-flight requests finish, new ones go to other nodes."),
        ("ready", "Put a drained NODE back in rotation."),
    ):
        sub = commands.add_parser(name, parents=[common], help=summary,
                                  description=f"{summary} Every server of the node (web and worker); needs the "
                                  f"stats page's password.")
        sub.add_argument("node", metavar="NODE", help="Node name, as in the cluster file and /status.")
    summary = "Restart every node, one at a time, with no request failed (an update of code or model)."
    sub = commands.add_parser("rolling-restart", parents=[common], help=summary, description=(
        f"{summary} Each node is drained, its requests in flight finish, its worker and web front restart, "
        "and once both are ready it is back in rotation before the next one. Needs the stats page's "
        "password. --model/--lora change the workers' command line (in the sidecar; not written back to "
        "the cluster file)."))
    sub.add_argument("--model", help="The workers' new model (as launch.py --model); unset: keep it.")
    sub.add_argument("--lora", help="The workers' new LoRA (as launch.py --lora); unset: keep it.")
    sub.add_argument("--drain-timeout", type=positive, default=300.0, metavar="S",
                     help="Seconds a drained node may take to be idle, and later its sticky clients to be idle "
                     "before its restarted web front takes them back (default 300).")
    sub.add_argument("--ready-timeout", type=positive, default=None, metavar="S",
                     help="Seconds a restarted node may take to be ready (default: the sidecar's start_timeout).")
    sub.add_argument("--settle", type=float, default=1.0, metavar="S",
                     help="Seconds a drained node must be idle before its restart (default 1: longer than the "
                     "gaps between the requests of one Gradio job).")
    sub.add_argument("--timeout", type=positive, default=3600.0, metavar="S",
                     help="Seconds to follow the operation before giving up on it here (default 3600).")
    summary = "Start one more node (the next free name and ports), in rotation once ready; no HAProxy restart."
    sub = commands.add_parser("add-node", parents=[common], help=summary, description=(
        f"{summary} It runs with the first node's flags; HAProxy gets its servers (cookie, health checks, a "
        "place in the worker queue) at runtime. Needs the stats page's password. Not written back to the "
        "cluster file: launch.py's next start runs the nodes its flags say."))
    sub.add_argument("--gpu", type=int, default=None, metavar="G",
                     help="The new worker's GPU (nvidia-smi index), like gpu: in the cluster file; unset: none.")
    sub.add_argument("--ready-timeout", type=positive, default=None, metavar="S",
                     help="Seconds the new node may take to be ready (default: the sidecar's start_timeout).")
    add_timeout(sub)
    summary = "Take NODE out of the cluster: drained, its requests in flight finished, stopped, its servers deleted."
    sub = commands.add_parser("remove-node", parents=[common], help=summary, description=(
        f"{summary} No HAProxy restart; needs the stats page's password; the last node cannot be removed. "
        "Not written back to the cluster file."))
    sub.add_argument("node", metavar="NODE", help="Node name, as in /status.")
    add_timeout(add_settle(add_drain_timeout(sub)))
    return parser


def add_drain_timeout(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--drain-timeout``."""
    sub.add_argument("--drain-timeout", type=positive, default=300.0, metavar="S",
                     help="Seconds a drained node may take to be idle (default 300).")
    return sub


def add_settle(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--settle``."""
    sub.add_argument("--settle", type=float, default=1.0, metavar="S",
                     help="Seconds a drained node must be idle before it stops (default 1: longer than the "
                     "gaps between the requests of one Gradio job).")
    return sub


def add_timeout(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--timeout``."""
    sub.add_argument("--timeout", type=positive, default=3600.0, metavar="S",
                     help="Seconds to follow the operation before giving up on it here (default 3600).")
    return sub


def positive(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m balancer.cli``: the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.command != "status" and not args.password:
            raise CtlError(f"{args.command} needs the stats page's password: --password or ${PASSWORD_ENV}",
                           EXIT_USAGE)
        return run(args)
    except CtlError as exc:
        print(f"ctl: {exc}", file=sys.stderr)
        return exc.exit_code
