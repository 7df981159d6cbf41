"""A web front imports Gradio without Gradio's stub writer (``webui/web/gradio_stubs.py``): no ``.pyi`` is written
at run time, and components still work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.harness.processes import REPO

COMPONENT = '''
import gradio as gr


class NameBox(gr.Textbox):
    """A component of our own, as webui.web.photo_input is."""
'''

CHECK = '''
import sys
sys.path.insert(0, sys.argv[1])
{first}
import gradio as gr
import gradio.component_meta
import name_box
with gr.Blocks() as page:
    name_box.NameBox(label="Name")
print(gradio.component_meta.create_or_modify_pyi.__name__,
      sum(isinstance(block, name_box.NameBox) for block in page.blocks.values()),
      sys.modules.get("IPython") is not None)
'''


def import_component(folder: Path, first: str) -> str:
    (folder / "name_box.py").write_text(COMPONENT)
    done = subprocess.run([sys.executable, "-c", CHECK.format(first=first), str(folder)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_a_web_front_s_gradio_writes_no_stub_and_its_components_work(tmp_path: Path) -> None:
    assert import_component(tmp_path, "import webui.web") == "skip_stub 1 False"  # and no IPython imported
    assert not (tmp_path / "name_box.pyi").exists()


def test_without_it_gradio_writes_a_stub_beside_the_component(tmp_path: Path) -> None:
    """The control: what the web front skips is real (if Gradio stops writing stubs, gradio_stubs can go)."""
    assert import_component(tmp_path, "").startswith("create_or_modify_pyi 1")
    assert (tmp_path / "name_box.pyi").exists()
