"""Print a pip constraints file pinning each runtime dependency to its floor.

Every requirement under ``[project].dependencies`` in ``pyproject.toml`` must
declare a ``>=`` lower bound; ``trio>=0.25`` becomes ``trio==0.25``. CI
installs the package with these constraints and runs the tests, so the
declared lower bounds stay true.

Optional features (``--with redis``) add their own requirements; where a
feature raises the floor of a package the library already needs (the Redis
extra needs a newer trio), the higher floor wins.

Usage: ``python3 .ci/lowest_constraints.py [--with FEATURE] > constraints.txt``
"""

from __future__ import annotations

import argparse
import re
import tomllib
from pathlib import Path

# name, optional [extras], then the specifiers, then an optional ; marker
REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?"
    r"\s*(?P<specifiers>[^;]*?)\s*(?:;\s*(?P<marker>.*))?$"
)
FLOOR = re.compile(r">=\s*(?P<version>[^,\s]+)")


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def lowest_constraints(pyproject: Path, features: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    requirements = list(project.get("dependencies", []))
    for feature in features:
        requirements += project["optional-dependencies"][feature]
    floors: dict[str, tuple[str, str | None]] = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        floor = FLOOR.search(match["specifiers"]) if match else None
        if match is None or floor is None:
            raise SystemExit(f"{requirement!r} declares no '>=' lower bound")
        name, version = match["name"].lower(), floor["version"]
        known = floors.get(name)
        if known is None or _release(version) > _release(known[0]):
            floors[name] = (version, match["marker"])
    lines = []
    for name, (version, marker) in floors.items():
        lines.append(f"{name}=={version}" + (f"; {marker}" if marker else ""))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with", dest="features", action="append", default=[])
    parser.add_argument("pyproject", nargs="?", type=Path)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    pyproject = args.pyproject or root / "pyproject.toml"
    for line in lowest_constraints(pyproject, args.features):
        print(line)


if __name__ == "__main__":
    main()
