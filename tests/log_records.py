"""What the library logged, read from pytest's ``caplog``.

Shared by ``test_logging_levels`` and ``test_observability``.
"""

from __future__ import annotations

import logging

import pytest

LOGGER = "trio-websocket"


def ours(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of the library's loggers, engine included."""
    return [
        record
        for record in caplog.records
        if record.name == LOGGER or record.name.startswith(LOGGER + ".")
    ]


def messages(caplog: pytest.LogCaptureFixture, level: int = logging.DEBUG) -> list[str]:
    """The messages of the library's own logger at ``level`` or above."""
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == LOGGER and record.levelno >= level
    ]


def about(caplog: pytest.LogCaptureFixture, who: object) -> list[logging.LogRecord]:
    """The library's records that start with a connection's name."""
    return [
        record
        for record in caplog.records
        if record.name == LOGGER and record.getMessage().startswith(f"{who}: ")
    ]


def lines_about(caplog: pytest.LogCaptureFixture, who: object) -> list[str]:
    """The messages of :func:`about`."""
    return [record.getMessage() for record in about(caplog, who)]
