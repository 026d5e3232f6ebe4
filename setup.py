"""Build hook: compile the frame codec with mypyc when the machine can.

``trio_websocket/_frames.py`` is the hot path of every connection. When mypyc
and a C compiler are available, a copy of it is compiled as the extension
module ``trio_websocket._frames_compiled``; the package uses that copy only
while it matches the pure module byte for byte (see ``trio_websocket/_codec.py``),
so an editable install never runs a compiled copy older than its source.
Without mypyc or a compiler the build goes on without the extension and the
pure module runs. ``TRIO_WEBSOCKET_PURE_BUILD=1`` skips the compilation.

Everything else about the package is declared in ``pyproject.toml``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from setuptools import setup

ROOT = Path(__file__).resolve().parent
SOURCE = ROOT / "trio_websocket" / "_frames.py"
COPY_ROOT = ROOT / "build" / "mypyc_source"


def compiled_codec() -> list[Any]:
    """The extension modules to build: the compiled codec, or none."""
    if os.environ.get("TRIO_WEBSOCKET_PURE_BUILD") == "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        return []
    try:
        extensions = mypycify(
            ["--config-file", str(_mypy_config()), str(_versioned_copy())],
            opt_level="3",
        )
    except (Exception, SystemExit) as exc:  # mypyc exits on a type error
        print(f"trio-websocket: not compiling the frame codec ({exc})")
        return []
    for extension in extensions:
        extension.optional = True  # no C compiler: build without it
    return list(extensions)


def _mypy_config() -> Path:
    """mypy's settings for the compilation, apart from the project's own.

    The copy is checked on its own, in a build environment without
    websockets: its one import (the C masking) is left to run time.
    """
    COPY_ROOT.mkdir(parents=True, exist_ok=True)
    config = COPY_ROOT / "mypy.ini"
    config.write_text("[mypy]\nignore_missing_imports = True\n")
    return config.relative_to(ROOT)


def _versioned_copy() -> Path:
    """A copy of the codec, named for the compiled module, holding its hash."""
    source = SOURCE.read_bytes()
    package = COPY_ROOT / "trio_websocket"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    copy = package / "_frames_compiled.py"
    digest = hashlib.sha256(source).hexdigest()
    copy.write_bytes(source + f'\nSOURCE_SHA256 = "{digest}"\n'.encode())
    return copy.relative_to(ROOT)


setup(ext_modules=compiled_codec())
