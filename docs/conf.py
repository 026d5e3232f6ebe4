"""Sphinx configuration for the trio-websocket documentation.

Build with ``python -m sphinx -W --keep-going -b html docs docs/_build/html``.
The build needs no network access.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

import trio_websocket

project = "trio-websocket"
author = "the trio-websocket authors"
copyright = "the trio-websocket authors"
version = release = trio_websocket.__version__

extensions = ["sphinx.ext.autodoc"]

exclude_patterns = ["_build", "examples"]
templates_path: list[str] = []
html_static_path: list[str] = []
html_theme = "alabaster"
html_theme_options = {"description": "WebSocket client and server for Trio"}

default_role = "py:obj"
primary_domain = "py"
highlight_language = "python3"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Every page refers to the package's names without the module prefix.
rst_prolog = ".. currentmodule:: trio_websocket\n"
