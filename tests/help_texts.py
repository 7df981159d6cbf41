"""``python -m tests.help_texts``: the ``--help`` of many repository commands from one Python process.

Reads a JSON list of commands on stdin, each ``[target, *args]`` where ``target`` is ``launch.py`` or a
module run with ``python -m``; runs each as ``__main__`` (``runpy``, as ``python -m`` does) with those
arguments, and writes a JSON list of ``{"code", "stdout", "stderr"}`` to stdout. Each command's own parser
prints its help, as in a process of its own; the interpreter and the imports they share start once
(a Python start-up per command cost the docs test seconds).
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys

from bench.harness.processes import REPO


def run_one(target: str, args: list[str]) -> dict:
    """Run one command as ``__main__``; its exit code and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    code: object = 0
    saved_argv = sys.argv
    sys.argv = [target if target == "launch.py" else f"-m {target}", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if target == "launch.py":
                runpy.run_path(str(REPO / "launch.py"), run_name="__main__")
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        code = stop.code
    except Exception as exc:  # reported as the command's failure, as a process would
        code, _ = 1, err.write(f"{type(exc).__name__}: {exc}")
    finally:
        sys.argv = saved_argv
    return {"code": 0 if code is None else code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    """Commands on stdin, their results on stdout (see the module)."""
    commands = json.load(sys.stdin)
    real_stdout = sys.stdout
    results = [run_one(target, args) for target, *args in commands]
    json.dump(results, real_stdout)


if __name__ == "__main__":
    main()
