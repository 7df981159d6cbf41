"""A worker's warm standby (``python -m webui.worker --standby FILE``): ready to take over in seconds.

The sidecar starts one next to a worker that has ``standby: true``. It imports everything and
loads the model into host memory (on a GPU machine: nothing on the GPU yet but CUDA's probe of
the device, and the weights page-locked so that the copy at the go runs at the link's full
rate), writes FILE (its PID) once loaded, and waits for ``STANDBY_GO_SIGNAL`` without binding
the port. When the active worker dies, the sidecar sends the go: the standby moves the weights
to the device (the same ``CUDA_VISIBLE_DEVICES``), warms up and serves on the port the dead
worker held. The go signal is blocked from the start, so one sent early waits instead of killing
the process.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path

from webui.contract import STANDBY_GO_SIGNAL
from webui.settings import WorkerSettings
from webui.worker.errors import ModelLoadError
from webui.worker.pipelines.base import Pipeline
from webui.worker.pipelines.loader import load_pipeline

logger = logging.getLogger(__name__)


def hold_go_signal() -> None:
    """Block the go signal (its default action would end the process); ``WarmStandby.wait_for_go`` takes it."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {STANDBY_GO_SIGNAL})


class WarmStandby:
    """Loads the pipeline into host memory, says so in its ready file, and hands it over on the go."""

    def __init__(self, settings: WorkerSettings, ready_file: Path) -> None:
        self.settings = settings
        self.ready_file = ready_file
        self.pipeline: Pipeline | None = None

    def prepare(self) -> bool:
        """Load the model into host memory and write the ready file; False (logged) when it cannot load
        or cannot write that file."""
        started = time.perf_counter()
        try:
            self.pipeline = load_pipeline(self.settings, place=False)
            self.pipeline.pin_host_memory()
        except ModelLoadError as exc:
            logger.critical("standby: cannot load model %r: %s", self.settings.model, exc)
            return False
        except Exception:  # noqa: BLE001 - any failure here means this standby cannot take over
            logger.critical("standby: cannot load model %r", self.settings.model, exc_info=True)
            return False
        try:
            self.ready_file.write_text(str(os.getpid()), encoding="utf-8")
        except OSError as exc:
            logger.critical("standby: cannot write its ready file %s: %s", self.ready_file, exc.strerror or exc)
            return False
        logger.info("standby: model in host memory after %.1f s; waiting for the go (%s)",
                    time.perf_counter() - started, STANDBY_GO_SIGNAL.name)
        return True

    def wait_for_go(self) -> None:
        """Block until the sidecar's go signal (SIGTERM meanwhile ends the process as usual)."""
        signal.sigwait({STANDBY_GO_SIGNAL})
        logger.info("standby: go: taking over port %d", self.settings.port)

    def loader(self, settings: WorkerSettings) -> Pipeline:
        """The worker's pipeline loader after the go: the loaded pipeline, moved to its device."""
        assert self.pipeline is not None, "prepare() first"
        self.pipeline.place()
        return self.pipeline
