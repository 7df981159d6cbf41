"""``python -m bench.compile_probe [off]``: compile a tiny model on CPU as a worker would; print JSON.

The worker's own setup runs first (``use_compile_cache`` on ``WorkerSettings().compile_cache_dir``,
so ``PORTRAIT_COMPILE_CACHE_DIR`` applies); ``off`` skips it (torch's defaults, the control).
Prints the seconds of the first call (compile + run) and Inductor's FX graph cache hits and misses.
Used by ``tests/test_compile_cache.py`` and for ``bench/results/compile-cache.md``.
"""

from __future__ import annotations

import json
import sys
import time

from webui.settings import WorkerSettings
from webui.worker.compile_cache import use_compile_cache


def main(argv: list[str]) -> int:
    """Compile, call once, report."""
    if argv[:1] != ["off"]:
        use_compile_cache(WorkerSettings().compile_cache_dir)
    import torch  # after the cache is chosen, as in the worker
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(), torch.nn.Linear(128, 8))
    compiled = torch.compile(model)
    started = time.perf_counter()
    with torch.no_grad():
        compiled(torch.randn(4, 64))
    seconds = time.perf_counter() - started
    inductor = counters["inductor"]
    print(json.dumps({"seconds": round(seconds, 3), "fxgraph_cache_hit": inductor["fxgraph_cache_hit"],
                      "fxgraph_cache_miss": inductor["fxgraph_cache_miss"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
