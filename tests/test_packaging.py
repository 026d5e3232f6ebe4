"""Packaging: what an installed copy offers, and what importing it costs.

Import checks run in a fresh interpreter, since by the time these tests run
the test session has imported everything already.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import pytest

import trio_websocket

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT: dict[str, Any] = tomllib.loads(
    (ROOT / "pyproject.toml").read_text(encoding="utf-8")
)

# Imported by `import trio_websocket` only if something went wrong: testing
# helpers (trio.testing imports pytest when it is installed), and the modules
# behind names that load on first access.
NOT_ON_IMPORT = (
    "pytest",
    "_pytest",
    "trio.testing",
    "trio_websocket._broadcast",
    "trio_websocket._pair",
    "trio_websocket._reconnect",
    "trio_websocket._routing",
    "trio_websocket._stream",
)


def run_python(code: str, tmp_path: Path) -> Any:
    """Run ``code`` in a fresh interpreter importing this tree; return its JSON."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_import_loads_no_testing_helpers(tmp_path: Path) -> None:
    loaded = run_python(
        "import json, sys, trio_websocket\n"
        f"print(json.dumps([m for m in {NOT_ON_IMPORT!r} if m in sys.modules]))",
        tmp_path,
    )
    assert loaded == []


def test_every_public_name_resolves(tmp_path: Path) -> None:
    code = """
import json, trio_websocket
names = trio_websocket.__all__
listed = dir(trio_websocket)
missing = [name for name in names if not hasattr(trio_websocket, name)]
star = {}
exec("from trio_websocket import *", star)
print(json.dumps({
    "missing": missing,
    "not_in_dir": [name for name in names if name not in listed],
    "not_starred": [name for name in names if name not in star],
    "modules": {
        name: getattr(trio_websocket, name).__module__
        for name in names
        if hasattr(getattr(trio_websocket, name), "__module__")
    },
}))
"""
    found = run_python(code, tmp_path)
    assert found["missing"] == []
    assert found["not_in_dir"] == []
    assert found["not_starred"] == []
    assert all(
        module.startswith("trio_websocket.") for module in found["modules"].values()
    ), found["modules"]
    assert sorted(trio_websocket.__all__) == sorted(set(trio_websocket.__all__))


def test_unknown_names_are_attribute_errors() -> None:
    with pytest.raises(AttributeError, match="no attribute 'open_websocket_ulr'"):
        trio_websocket.open_websocket_ulr  # type: ignore[attr-defined]  # noqa: B018


def test_py_typed_marker_ships() -> None:
    assert (ROOT / "trio_websocket" / "py.typed").is_file()
    assert resources.files("trio_websocket").joinpath("py.typed").is_file()
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["trio_websocket"]


def test_editable_install_is_a_path_entry() -> None:
    # setuptools writes an import hook for `pip install -e .` unless the
    # package root is explicit; mypy cannot follow the hook, so a user's own
    # scripts would see no types. The .pth must hold a plain directory.
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"": "."}
    # The installed record, not the egg-info a build leaves in the tree.
    installed = [
        dist
        for dist in metadata.distributions(name="trio-websocket")
        if dist.read_text("direct_url.json")
    ]
    if not installed:  # pragma: no cover
        pytest.skip("trio-websocket is not installed by pip")
    dist = installed[0]
    direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    if not direct_url.get("dir_info", {}).get("editable"):  # pragma: no cover
        pytest.skip("trio-websocket is not installed in editable mode")
    files = [str(path) for path in dist.files or ()]
    assert not [name for name in files if re.search(r"__editable__.*finder", name)]
    pth = [path for path in dist.files or () if str(path).endswith(".pth")]
    assert pth, files
    for path in pth:
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        assert lines, path
        for line in lines:
            assert not line.startswith("import"), line
            assert (Path(line) / "trio_websocket" / "__init__.py").is_file(), line


def test_license_ships() -> None:
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License")
    assert "The trio-websocket authors" in license_text
    project = PYPROJECT["project"]
    assert project["license"] == "MIT"
    assert project["license-files"] == ["LICENSE"]


def test_python_classifiers_start_at_requires_python() -> None:
    project = PYPROJECT["project"]
    floor = re.fullmatch(r">=\s*3\.(\d+)", project["requires-python"])
    assert floor is not None, project["requires-python"]
    minors = sorted(
        int(match[1])
        for classifier in project["classifiers"]
        if (
            match := re.fullmatch(
                r"Programming Language :: Python :: 3\.(\d+)", classifier
            )
        )
    )
    assert minors, project["classifiers"]
    assert minors[0] == int(floor[1])
    assert minors == list(range(minors[0], minors[-1] + 1))


def test_lowest_constraints_pin_every_lower_bound() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "lowest_constraints.py")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pins = result.stdout.split()
    expected = [
        re.sub(r"\s*>=\s*", "==", requirement)
        for requirement in PYPROJECT["project"]["dependencies"]
    ]
    assert pins == expected


def test_lowest_constraints_refuse_a_dependency_without_a_floor(
    tmp_path: Path,
) -> None:
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\ndependencies = ["trio<1"]\n', encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "lowest_constraints.py"), str(pyproject)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "no '>=' lower bound" in result.stderr


def test_a_feature_raises_the_floors_it_needs() -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / ".ci" / "lowest_constraints.py"),
            "--with",
            "redis",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pins = dict(line.split("==") for line in result.stdout.split())
    extra = PYPROJECT["project"]["optional-dependencies"]["redis"]
    assert f"coredis=={pins['coredis']}" in [re.sub(">=", "==", r) for r in extra]
    assert f"trio>={pins['trio']}" in extra  # higher than the library's own floor
    assert "trio" in " ".join(PYPROJECT["project"]["dependencies"])
