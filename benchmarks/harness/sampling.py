"""py-spy sampling of an agent process while it runs one measurement.

Idle samples (the process waiting in epoll) are dropped by py-spy, so each
sample is 1/RATE second of CPU time; system-call time is charged to the
Python line that made the call.
"""

from __future__ import annotations

import collections
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .envs import ENVS

RATE = 1000  # samples per second
_LINE_NUMBER = re.compile(r":\d+\)$")


@dataclass
class Samples:
    """Collapsed stacks: own (leaf) and inclusive sample counts per function."""

    own: collections.Counter[str] = field(default_factory=collections.Counter)
    inclusive: collections.Counter[str] = field(default_factory=collections.Counter)
    total: int = 0

    def add(self, stack: list[str], count: int) -> None:
        functions = [_LINE_NUMBER.sub(")", frame) for frame in stack]
        self.own[functions[-1]] += count
        for function in set(functions):
            self.inclusive[function] += count
        self.total += count


def parse(raw: str) -> Samples:
    samples = Samples()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            samples.add(stack.split(";"), int(count))
    return samples


@contextmanager
def sampled(pid: int) -> Iterator[Samples]:
    """Sample ``pid`` with py-spy for the duration of the block."""
    samples = Samples()
    py_spy = ENVS["tools"].path / "bin" / "py-spy"
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "stacks.txt"
        argv = [str(py_spy), "record", "--pid", str(pid), "--rate", str(RATE)]
        argv += ["--format", "raw", "--output", str(output), "--nonblocking"]
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        try:
            time.sleep(0.5)  # attach
            yield samples
        finally:
            process.send_signal(signal.SIGINT)
            _, errors = process.communicate(timeout=30)
        if not output.exists():
            raise RuntimeError(
                f"py-spy wrote nothing: {errors.decode(errors='replace')}"
            )
        parsed = parse(output.read_text())
        samples.own, samples.inclusive, samples.total = (
            parsed.own,
            parsed.inclusive,
            parsed.total,
        )
