"""Print a pip constraints file pinning each runtime dependency to its floor.

Every requirement under ``[project].dependencies`` in ``pyproject.toml`` must
declare a ``>=`` lower bound; ``trio>=0.25`` becomes ``trio==0.25``. CI
installs the package with these constraints and runs the tests, so the
declared lower bounds stay true.

Usage: ``python3 .ci/lowest_constraints.py [pyproject.toml] > constraints.txt``
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

# name, optional [extras], then the specifiers, then an optional ; marker
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?"
    r"\s*(?P<specifiers>[^;]*?)\s*(?:;\s*(?P<marker>.*))?$"
)
FLOOR = re.compile(r">=\s*(?P<version>[^,\s]+)")


def lowest_constraints(pyproject: Path) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    lines = []
    for requirement in project.get("dependencies", []):
        match = REQUIREMENT.match(requirement)
        floor = FLOOR.search(match["specifiers"]) if match else None
        if match is None or floor is None:
            raise SystemExit(f"{requirement!r} declares no '>=' lower bound")
        line = f"{match['name']}=={floor['version']}"
        if match["marker"]:
            line += f"; {match['marker']}"
        lines.append(line)
    return lines


def main() -> None:
    root = Path(__file__).resolve().parent.parent
    pyproject = Path(sys.argv[1]) if len(sys.argv) > 1 else root / "pyproject.toml"
    for line in lowest_constraints(pyproject):
        print(line)


if __name__ == "__main__":
    main()
