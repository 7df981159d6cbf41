"""Exit 0 when every requirement in the given file (and files it includes) is installed."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement


def requirements(path: Path) -> list[Requirement]:
    """Parse a pip requirements file, following ``-r`` includes."""
    found: list[Requirement] = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-r "):
            found += requirements(path.parent / line[3:].strip())
        else:
            found.append(Requirement(line))
    return found


def main(path: str) -> int:
    missing = []
    for requirement in requirements(Path(path)):
        try:
            installed = version(requirement.name)
        except PackageNotFoundError:
            missing.append(f"{requirement} (not installed)")
            continue
        if not requirement.specifier.contains(installed.split("+")[0], prereleases=True):
            missing.append(f"{requirement} (have {installed})")
    for item in missing:
        print(f"missing: {item}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
