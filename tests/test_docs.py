"""The documentation stays true: README.md is a short front door, every relative link and anchor in
README.md, docs/ and bench/README.md resolves, every repository command the docs name exists with the
flags they give it, their cluster-file examples validate, and the README's first-portrait examples
(gradio_client and curl) work against a real cluster (fixed-latency stand-in, not a model).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from balancer.config.basics import ClusterConfigError
from balancer.config.loading import parse_cluster
from bench.harness.launched_cluster import LaunchedCluster
from bench.harness.processes import REPO

README = REPO / "README.md"
DOCS = [README, *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]
README_MAX_LINES = 200
README_ADDRESS = "http://127.0.0.1:8080"
"""The public address the README's examples use (launch.py's default)."""

FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*$", re.M)
COMMAND = re.compile(r"\bpython3? -m ([\w.]+)(.*)|\b(launch\.py|scripts/run\.sh)\b(.*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
OWN_PACKAGES = ("assets.", "balancer.", "bench.", "webui.", "jobs")


def code_blocks(text: str, language: str | None = None) -> list[str]:
    """The fenced code blocks of a Markdown text (only those in ``language`` when given)."""
    return [body for lang, body in FENCE.findall(text) if language is None or lang == language]


def readme_example(language: str, marker: str) -> str:
    """The README's ``language`` code block that contains ``marker``."""
    return next(b for b in code_blocks(README.read_text(encoding="utf-8"), language) if marker in b)


def prose(text: str) -> str:
    """A Markdown text without its fenced code blocks and inline code."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, Markdown marks and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).lower()
    kept = "".join(ch for ch in text if ch in " -_" or unicodedata.category(ch)[0] in "LN")
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every heading anchor of a Markdown file, with GitHub's -1, -2 suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def commands(text: str) -> Iterator[tuple[str, list[str]]]:
    """(module or "launch.py", words after it) of every repository command in code blocks and inline code."""
    pieces = [line for block in code_blocks(text) for line in block.replace("\\\n", " ").splitlines()]
    pieces += INLINE_CODE.findall(FENCE.sub("", text))
    for piece in pieces:
        for part in re.split(r"&&|\||;|>", piece.split(" #")[0]):
            match = COMMAND.search(part)
            if match is None:
                continue
            module, module_args, _, launch_args = match.groups()
            if module is None:
                yield "launch.py", launch_args.split()  # scripts/run.sh passes its arguments to launch.py
            elif module.startswith(OWN_PACKAGES):  # not pytest, pip, ruff
                yield module, module_args.split()


def help_texts(commands: list[tuple[str, str | None]]) -> dict[tuple[str, str | None], str]:
    """``--help`` of repository commands (and of some of their subcommands), each run as ``__main__`` like
    ``python -m`` runs it, all in one Python process (``tests/help_texts.py``)."""
    argvs = [[target, *filter(None, [sub]), "--help"] for target, sub in commands]
    done = subprocess.run([sys.executable, "-m", "tests.help_texts"], input=json.dumps(argvs), cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"tests.help_texts failed: {done.stderr[-2000:]}"
    texts = {}
    for key, argv, result in zip(commands, argvs, json.loads(done.stdout), strict=True):
        assert result["code"] == 0, f"{' '.join(argv)} failed: {result['stderr'][-2000:]}"
        texts[key] = result["stdout"]
    return texts


def subcommands(help_output: str) -> set[str]:
    """The subcommands an argparse help lists: as ``{a,b,c}``, or one per line under ``COMMAND``."""
    listed = {name for group in re.findall(r"\{([\w,-]+)\}", help_output) for name in group.split(",")}
    return listed | set(re.findall(r"^ {4}([a-z][\w-]*)\b", help_output, re.M))


def test_the_readme_is_a_short_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; keep it to {README_MAX_LINES}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(doc: Path) -> None:
    broken = []
    for target in LINK.findall(prose(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path_part, _, anchor = target.partition("#")
        path = (doc.parent / path_part).resolve() if path_part else doc
        if not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (path.suffix != ".md" or anchor not in anchors(path)):
            broken.append(f"{target}: no heading #{anchor} in {path.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_the_commands_the_docs_name_exist_with_their_flags() -> None:
    named = [(target, words) for doc in DOCS for target, words in commands(doc.read_text(encoding="utf-8"))]
    helps = help_texts([(target, None) for target in sorted({target for target, _ in named})])
    flags: dict[tuple[str, str | None], set[str]] = {}
    for target, words in named:
        first = words[0] if words and not words[0].startswith("-") else None
        sub = first if first in subcommands(helps[target, None]) else None
        flags.setdefault((target, sub), set()).update(FLAG.findall(" ".join(words)))
    assert ("launch.py", None) in flags and ("balancer.cli", "rolling-restart") in flags, sorted(flags, key=str)
    helps |= help_texts(sorted((key for key in flags if key[1]), key=str))
    missing = []
    for (target, sub), given in sorted(flags.items(), key=str):
        offered = set(FLAG.findall(helps[target, None] + (helps[target, sub] if sub else "")))
        missing += [" ".join(filter(None, [target, sub, flag])) for flag in sorted(given - offered)]
    assert not missing, "flags the docs name that --help does not list: " + ", ".join(missing)


def test_the_cluster_file_examples_validate(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("studio:$6$salt$hash\n", encoding="utf-8")
    examples = [(doc, block) for doc in DOCS for block in code_blocks(doc.read_text(encoding="utf-8"), "yaml")]
    assert examples, "no yaml example in the docs"
    for doc, block in examples:
        data = yaml.safe_load(block)
        if "users_file" in data:
            data["users_file"] = str(users)  # the example's path is the operator's
        try:
            parse_cluster(data)
        except ClusterConfigError as exc:
            pytest.fail(f"{doc.relative_to(REPO)}: a cluster file example is invalid: {exc}")


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    setup = readme_example("bash", "scripts/test.sh")
    for line in setup.splitlines():
        script = REPO / line.split()[0]
        assert script.is_file() and script.stat().st_mode & 0o111, f"{script} is not an executable script"
    assert "exec bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cluster(shared_cluster: LaunchedCluster) -> LaunchedCluster:
    """The session's shared cluster (stand-in nodes): the examples only read."""
    return shared_cluster


def run_example(argv: list[str], cwd: Path) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_the_readme_gradio_client_example_works(cluster: LaunchedCluster, tmp_path: Path) -> None:
    code = readme_example("python", "gradio_client")
    assert README_ADDRESS in code
    out = run_example([sys.executable, "-c", code.replace(README_ADDRESS, cluster.public_url)], tmp_path)
    match = re.search(r"^(\S+) seed \d+ worker (\S+)$", out, re.M)  # after "Loaded as API: ..."
    assert match, out
    assert Image.open(match[1]).format == "PNG"
    assert match[2] in cluster.node_names


def test_the_readme_curl_example_works(cluster: LaunchedCluster, tmp_path: Path) -> None:
    script = readme_example("bash", "curl")
    assert README_ADDRESS in script
    out = run_example(["bash", "-euo", "pipefail", "-c", script.replace(README_ADDRESS, cluster.public_url)],
                      tmp_path)
    assert re.fullmatch(r"seed \d+\n", out), out
    with Image.open(tmp_path / "portrait.png") as image:
        assert image.format == "PNG" and image.size == (768, 1024)
