"""The compiled frame codec is used only when present and built from our source."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from trio_websocket import _codec, _frames

SOURCE = b"def parse(): ...\n"
PRINT_BUILD = "from trio_websocket import _codec; print(_codec.BUILD)"


def compiled_build(stamp: str | None) -> ModuleType:
    module = ModuleType("trio_websocket._frames_compiled")
    if stamp is not None:
        module.SOURCE_SHA256 = stamp  # type: ignore[attr-defined]
    return module


def test_a_build_made_from_this_source_is_used() -> None:
    build = compiled_build(hashlib.sha256(SOURCE).hexdigest())
    assert _codec.choose(build, SOURCE, force_pure=False) is build


@pytest.mark.parametrize(
    "build",
    [
        None,  # no compiler at install time
        compiled_build(hashlib.sha256(b"an older version").hexdigest()),  # stale
        compiled_build(None),  # not one of our builds
    ],
    ids=["absent", "stale", "unstamped"],
)
def test_otherwise_the_pure_codec_runs(build: ModuleType | None) -> None:
    assert _codec.choose(build, SOURCE, force_pure=False) is _frames


def test_the_pure_codec_can_be_forced() -> None:
    build = compiled_build(hashlib.sha256(SOURCE).hexdigest())
    assert _codec.choose(build, SOURCE, force_pure=True) is _frames


def build_in_a_new_process(**environment: str) -> str:
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from trio_websocket import _codec; print(_codec.BUILD)",
        ],
        env={**os.environ, **environment},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_the_environment_variable_forces_the_pure_codec() -> None:
    assert build_in_a_new_process(TRIO_WEBSOCKET_PURE="1") == "pure"


def test_the_build_is_the_one_expected() -> None:
    """CI says which build each of its runs must have (a failed compilation
    would otherwise go unnoticed, the pure codec standing in)."""
    expected = os.environ.get("TRIO_WEBSOCKET_EXPECT_BUILD")
    if expected is None:
        assert _codec.BUILD in ("compiled", "pure")
        return
    assert expected == _codec.BUILD


def test_a_compiled_build_in_use_matches_the_source() -> None:
    if _codec.BUILD == "pure":
        assert _codec.codec is _frames
        return
    stamp = _codec.codec.SOURCE_SHA256  # type: ignore[attr-defined]
    assert stamp == hashlib.sha256(Path(_frames.__file__).read_bytes()).hexdigest()
