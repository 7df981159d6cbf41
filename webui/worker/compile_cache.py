"""One compile cache per host: every worker, restart and standby reuses what ``torch.compile`` built.

``torch.compile`` keeps its artefacts on disk: Inductor's FX graph and AOTAutograd caches
(on by default) under ``TORCHINDUCTOR_CACHE_DIR`` and Triton's GPU kernels under
``TRITON_CACHE_DIR``. Left to themselves they land in ``/tmp/torchinductor_USER`` and
``~/.triton``; a cleaned or private ``/tmp`` (systemd ``PrivateTmp``) loses them, and a restarted
worker pays the whole compile again. ``use_compile_cache()`` points both at the worker's
``compile_cache_dir`` (default ``~/.cache/portrait-ha/compile``, mode 0700) before the first
compile; torch reads these variables when it compiles, not when it is imported.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_VARIABLES = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}
"""torch's cache variables and the sub-folder of the compile cache each one gets."""


def use_compile_cache(directory: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Create ``directory`` (0700) and point torch's compile caches into it; returns what was set.

    A variable the operator already set explicitly wins (it is left alone and logged).
    """
    environ = os.environ if environ is None else environ
    directory = directory.expanduser()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)  # this user's only: cached kernels are code the worker loads and runs
    chosen: dict[str, str] = {}
    for variable, folder in CACHE_VARIABLES.items():
        if environ.get(variable):
            logger.info("compile cache: %s already set to %s, kept", variable, environ[variable])
            continue
        chosen[variable] = environ[variable] = str(directory / folder)
    logger.info("compile cache: %s", directory)
    return chosen
