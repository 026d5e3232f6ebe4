"""Which frame codec runs: the compiled build when it is there and current.

The build compiles a copy of :mod:`._frames` with mypyc, as the module
``_frames_compiled``, and stamps it with the SHA-256 of the source it was
made from (see ``setup.py``). This module picks:

* the pure :mod:`._frames` if the environment variable
  ``TRIO_WEBSOCKET_PURE=1`` is set, if no compiled build exists (no C
  compiler at install time), or if the compiled build was made from
  another version of ``_frames.py`` -- an editable install whose source
  changed since it was built, which must not run old code;
* the compiled build otherwise.

:data:`BUILD` says which one runs (``"compiled"`` or ``"pure"``), and
:data:`codec` is the module to use.
"""

from __future__ import annotations

import hashlib
import os
from importlib import import_module
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from . import _frames

PURE_VARIABLE = "TRIO_WEBSOCKET_PURE"


def choose(compiled: ModuleType | None, source: bytes, force_pure: bool) -> ModuleType:
    """The codec to run, given the compiled build (if any) and our source."""
    if force_pure or compiled is None:
        return _frames
    stamp = getattr(compiled, "SOURCE_SHA256", None)
    return compiled if stamp == hashlib.sha256(source).hexdigest() else _frames


def _compiled_build() -> ModuleType | None:
    try:
        return import_module("._frames_compiled", __package__)
    except ImportError:
        return None


def _choose_for_this_process() -> ModuleType:
    if os.environ.get(PURE_VARIABLE) == "1":
        return _frames  # not even importing the compiled build
    compiled = _compiled_build()
    if compiled is None:
        return _frames
    return choose(compiled, Path(_frames.__file__).read_bytes(), force_pure=False)


if TYPE_CHECKING:  # both builds have the same interface
    codec = _frames
else:
    codec = _choose_for_this_process()

#: ``"compiled"`` or ``"pure"``: which frame codec this process runs.
BUILD = "pure" if codec is _frames else "compiled"
