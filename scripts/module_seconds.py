"""Write ``tests/module_seconds.json`` (seconds each test module takes) from a pytest log run with
``--durations=0``: ``scripts/test.sh --durations=0 | tee run.log; python scripts/module_seconds.py run.log``.

The test processes take modules longest first (``tests/conftest.py``), so that no long module starts last
while the other process has nothing left: refresh the figures when modules are added or become slower.
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

TABLE = Path(__file__).resolve().parent.parent / "tests" / "module_seconds.json"
DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s+(?:setup|call|teardown)\s+(tests/[\w/]+\.py)::")


def module_seconds(log: str) -> dict[str, float]:
    """Module -> its tests' seconds (setup, call and teardown), from pytest's durations report."""
    seconds: Counter[str] = Counter()
    for line in log.splitlines():
        if found := DURATION.match(line):
            seconds[found[2]] += float(found[1])
    return {module: round(total, 1) for module, total in seconds.most_common()}


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    table = module_seconds(Path(argv[0]).read_text(errors="replace"))
    if not table:
        print(f"no durations in {argv[0]}: run pytest with --durations=0", file=sys.stderr)
        return 1
    TABLE.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{TABLE}: {len(table)} modules, {sum(table.values()):.0f} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
