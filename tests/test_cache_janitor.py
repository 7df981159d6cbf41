"""CacheJanitor on real files in a temporary folder: age limit, disk budget (blocks and inodes), symbolic links,
the sweep task."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from webui.web.cache_janitor import CacheJanitor

pytestmark = pytest.mark.timeout(30)

HOUR = 3600.0


def put(root: Path, name: str, size: int, age: float) -> Path:
    """Write ``size`` bytes at ``root/name``, last modified ``age`` seconds ago."""
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def on_disk(*paths: Path) -> int:
    """Bytes the files and folders at ``paths`` take on disk (their allocated blocks)."""
    return sum(path.lstat().st_blocks * 512 for path in paths)


def janitor(root: Path, max_bytes: int = 10**6, max_age: float = HOUR, interval: float = 60.0,
            max_inodes: int | None = None) -> CacheJanitor:
    return CacheJanitor(root, max_bytes=max_bytes, max_age=max_age, interval=interval, max_inodes=max_inodes)


def test_removes_old_files_and_the_folders_it_empties(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "gradio"
    old = put(root, "aaa/old.png", 100, age=2 * HOUR)
    nested = put(root, "bbb/sub/old.webp", 50, age=2 * HOUR)
    young = put(root, "aaa/young.png", 10, age=60)
    (root / "ccc").mkdir()  # an empty folder the sweep did not empty: maybe an upload about to land
    removed = on_disk(old, nested)

    with caplog.at_level(logging.INFO, logger="webui.web.cache_janitor"):
        result = janitor(root).sweep()

    assert not old.exists() and not nested.exists() and young.exists()
    assert not (root / "bbb").exists() and (root / "aaa").is_dir() and (root / "ccc").is_dir()
    assert sorted(entry.path.name for entry in result.expired) == ["old.png", "old.webp"]
    assert result.over_budget == [] and result.directories == 2 and result.kept_inodes == 3
    assert result.kept_bytes == on_disk(young, root / "aaa", root / "ccc")
    assert f"removed 2 file(s), {removed} bytes on disk" in caplog.text and "2 older than 3600 s" in caplog.text


def test_trims_to_the_byte_budget_oldest_first(tmp_path: Path) -> None:
    root = tmp_path / "gradio"
    files = [put(root, f"{index:02d}/image.png", 1000, age=600 - 10 * index) for index in range(10)]  # 00 oldest

    each = on_disk(files[0], files[0].parent)  # a file and the folder it alone holds

    result = janitor(root, max_bytes=3 * each + each // 2).sweep()

    assert [path.exists() for path in files] == [False] * 7 + [True] * 3
    assert [entry.path for entry in result.over_budget] == files[:7]
    assert result.kept_bytes == 3 * each and result.kept_inodes == 6 and result.expired == []


def test_leaves_a_young_small_cache_alone(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "gradio"
    files = [put(root, f"{index}/upload.jpg", 2000, age=30 * index) for index in range(5)]

    everything = on_disk(*files, *(path.parent for path in files))

    with caplog.at_level(logging.INFO, logger="webui.web.cache_janitor"):
        result = janitor(root, max_bytes=everything).sweep()

    assert all(path.exists() for path in files)
    assert result.removed == [] and result.kept_bytes == everything
    assert "removed" not in caplog.text


def test_ignores_symlinks_pointing_outside(tmp_path: Path) -> None:
    root, outside = tmp_path / "gradio", tmp_path / "outside"
    precious = put(outside, "precious.bin", 50_000, age=10 * HOUR)
    tree = put(outside, "tree/deep.bin", 50_000, age=10 * HOUR)
    young = put(root, "aaa/young.png", 100, age=60)
    (root / "aaa" / "file-link").symlink_to(precious)
    (root / "dir-link").symlink_to(outside / "tree", target_is_directory=True)
    (root / "dangling").symlink_to(outside / "missing")
    for link in ("aaa/file-link", "dir-link", "dangling"):
        os.utime(root / link, (0, 0), follow_symlinks=False)  # the links themselves are ancient

    kept = on_disk(young, root / "aaa")

    result = janitor(root, max_bytes=kept, max_inodes=2).sweep()  # the targets alone are many times the budget

    assert precious.exists() and tree.exists() and young.exists()
    assert all((root / link).is_symlink() for link in ("aaa/file-link", "dir-link", "dangling"))
    assert result.removed == [] and result.kept_bytes == kept and result.kept_inodes == 2


def test_sweeps_periodically_in_a_thread_until_stopped(tmp_path: Path) -> None:
    root = tmp_path / "gradio"
    sweeper = janitor(root, interval=0.05)
    threads: list[int] = []
    sweep = sweeper.sweep
    sweeper.sweep = lambda: threads.append(threading.get_ident()) or sweep()  # type: ignore[method-assign]

    async def scenario() -> None:
        sweeper.start()
        for round_ in range(2):  # a file that expires later is caught by a later sweep
            old = put(root, f"{round_}/old.png", 10, age=2 * HOUR)
            while old.exists():
                await asyncio.sleep(0.01)  # the loop stays free while the sweeps run
        await sweeper.stop()
        after_stop = put(root, "late/old.png", 10, age=2 * HOUR)
        await asyncio.sleep(0.2)
        assert after_stop.exists()

    asyncio.run(asyncio.wait_for(scenario(), timeout=10))

    assert len(threads) >= 2 and threading.get_ident() not in threads


@pytest.mark.parametrize("folder", [tempfile.gettempdir, lambda: "/"], ids=["tmp", "root"])
def test_refuses_to_sweep_a_folder_that_is_not_a_cache(folder: Callable[[], str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    # The temporary folder as the janitor sees it when it runs (the test session points it into its own).
    sweeper = janitor(Path(folder()), max_bytes=2**62, max_age=1e12)  # would remove nothing even if it swept
    sweeps: list[None] = []
    sweeper.sweep = lambda: sweeps.append(None)  # type: ignore[method-assign,assignment,return-value]

    async def scenario() -> None:
        sweeper.start()
        await asyncio.sleep(0.1)
        await sweeper.stop()

    with caplog.at_level(logging.ERROR, logger="webui.web.cache_janitor"):
        asyncio.run(scenario())
    assert sweeps == [] and "not started" in caplog.text


def tiny_uploads(root: Path, count: int) -> list[Path]:
    """``count`` 16-byte uploads laid out as Gradio does (a folder per upload), the first the oldest."""
    return [put(root, f"{index:064x}/tiny.txt", 16, age=600 - index * 0.1) for index in range(count)]


def test_many_tiny_files_are_counted_by_their_blocks(tmp_path: Path) -> None:
    root = tmp_path / "gradio"
    uploads = tiny_uploads(root, 300)  # 4800 bytes of content, hundreds of times that on disk
    each = on_disk(uploads[0], uploads[0].parent)
    assert 300 * 16 < 100 * each

    result = janitor(root, max_bytes=100 * each).sweep()

    assert [path.exists() for path in uploads] == [False] * 200 + [True] * 100
    assert result.kept_bytes == 100 * each and result.directories == 200
    assert sorted(path.name for path in root.iterdir()) == sorted(path.parent.name for path in uploads[200:])


def test_many_tiny_files_are_held_to_the_inode_budget(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path / "gradio"
    uploads = tiny_uploads(root, 300)  # 600 inodes: a folder and a file each

    with caplog.at_level(logging.INFO, logger="webui.web.cache_janitor"):
        result = janitor(root, max_bytes=2**40, max_inodes=101).sweep()

    assert [path.exists() for path in uploads] == [False] * 250 + [True] * 50
    assert result.kept_inodes == 100 and len(list(root.rglob("*"))) == 100
    assert "250 over the budget" in caplog.text and "100 inodes left" in caplog.text
