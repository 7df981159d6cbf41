"""The worker process (``python -m webui.worker``): settings, then the app under uvicorn (``main``).

It reads its settings (command line and ``PORTRAIT_*``), sets up logging and the compile cache,
optionally waits as a warm standby for its go signal, and serves until SIGTERM or a fatal error;
``ProcessExit`` then ends it with the app's exit code (``EXIT_OOM``, ``EXIT_LOAD_FAILED``) after
the responses in flight.
"""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from pydantic import ValidationError

from webui.contract import EXIT_LOAD_FAILED, PRIVATE_UMASK
from webui.log_setup import configure_logging
from webui.settings import WorkerSettings
from webui.settings_common import settings_from_cli, settings_problems
from webui.worker.app import create_app
from webui.worker.compile_cache import use_compile_cache
from webui.worker.faults import FaultPlan
from webui.worker.pipelines.base import PipelineLoader
from webui.worker.pipelines.loader import load_pipeline as load_portrait_pipeline
from webui.worker.standby import WarmStandby, hold_go_signal

logger = logging.getLogger("webui.worker")  # also when run as __main__


class ProcessExit:
    """Lets the app end the process with a chosen code, after the responses in flight."""

    def __init__(self) -> None:
        self.code = 0
        self.server: uvicorn.Server | None = None

    def __call__(self, code: int) -> None:
        if not self.code:
            self.code = code
        if self.server is not None:
            self.server.should_exit = True  # uvicorn stops listening, then drains connections


def main(argv: list[str] | None = None) -> int:
    """Run a worker: parse settings (CLI + ``PORTRAIT_*``), serve until SIGTERM or a fatal error."""
    os.umask(PRIVATE_UMASK)  # its logs, uploads and images: this user's only
    settings = settings_from_cli(WorkerSettings, argv, "python -m webui.worker")
    if settings is None:
        return 2
    try:
        faults = FaultPlan.from_env()
    except ValidationError as exc:
        print(f"python -m webui.worker: invalid setting: {settings_problems(exc)}", file=sys.stderr)
        return 2
    configure_logging()
    use_compile_cache(settings.compile_cache_dir)  # before the pipeline (or a standby) compiles anything
    loader: PipelineLoader = load_portrait_pipeline
    if settings.standby is not None:
        hold_go_signal()
        standby = WarmStandby(settings, settings.standby)
        if not standby.prepare():
            return EXIT_LOAD_FAILED
        standby.wait_for_go()
        loader = standby.loader
    process_exit = ProcessExit()
    app = create_app(settings, pipeline_loader=loader, on_fatal=process_exit, faults=faults)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, log_level="info", access_log=False,
        timeout_graceful_shutdown=settings.graceful_shutdown, **settings.uvicorn_tls(),
    )
    server = uvicorn.Server(config)
    process_exit.server = server
    logger.info("worker %s on %s://%s:%d (model %s)", settings.resolved_node(),
                "https" if settings.tls_cert else "http", settings.host, settings.port, settings.model)
    server.run()
    return process_exit.code


if __name__ == "__main__":
    sys.exit(main())
