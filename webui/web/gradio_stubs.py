"""Import Gradio without its stub writer.

On every import, Gradio 6's component metaclass re-reads the source of each component class, parses it and
rewrites the ``.pyi`` stub beside it (``gradio.component_meta.create_or_modify_pyi``): about 1.1 s of CPU of
each web front's start (some 40 % of importing Gradio) and writes into site-packages, and into this source tree
for our own component, at run time. Stubs are for type checkers; nothing reads them at run time. ``install``
makes that function a no-op as soon as Gradio defines it, before any component class is made.

It also keeps IPython out: Gradio imports it, where installed, for its notebook magics (0.3 s of CPU of each web
front's start); a web front is never a notebook.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

logger = logging.getLogger(__name__)

NOTEBOOK = "IPython"
"""Imported by Gradio only if it can be (``gradio.ipython_ext``); ``None`` in ``sys.modules`` makes it an
ImportError."""
MODULE = "gradio.component_meta"
FUNCTION = "create_or_modify_pyi"


def skip_stub(*args: Any, **kwargs: Any) -> None:
    """What Gradio calls instead of writing a component's ``.pyi`` stub: nothing."""


class _StubSkipper(importlib.abc.MetaPathFinder):
    """Finds ``gradio.component_meta`` once, and replaces its stub writer right after the module runs."""

    def find_spec(self, name: str, path: Any, target: ModuleType | None = None) -> ModuleSpec | None:
        if name != MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module: ModuleType) -> None:
            run(module)
            if hasattr(module, FUNCTION):
                setattr(module, FUNCTION, skip_stub)
            else:  # a Gradio without it: nothing to skip, and nothing breaks
                logger.info("gradio has no %s.%s: its components import unchanged", MODULE, FUNCTION)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def install() -> None:
    """Skip the stub writer and IPython in this process's Gradio, unless Gradio is imported already (then: no
    effect)."""
    if "gradio" not in sys.modules:
        sys.modules.setdefault(NOTEBOOK, None)  # type: ignore[assignment]
    if MODULE not in sys.modules and not any(isinstance(finder, _StubSkipper) for finder in sys.meta_path):
        sys.meta_path.insert(0, _StubSkipper())
