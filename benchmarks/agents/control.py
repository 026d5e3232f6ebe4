"""The agents' control protocol (standard library only).

The runner writes one JSON object per line on an agent's stdin and reads one
JSON reply per line on its stdout. Every request has an ``op``; every reply
has ``ok`` and either the op's fields or ``error``.
"""

from __future__ import annotations

import cProfile
import gc
import json
import os
import pstats
import resource
import sys
import tracemalloc
from typing import Any

Request = dict[str, Any]
Reply = dict[str, Any]


def raise_fd_limit() -> None:
    """Let one process hold a thousand connections and more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 65536
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def send_reply(reply: Reply) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def memory_op(op: str) -> Reply:
    """``mem_start`` / ``mem`` / ``mem_stop``: traced Python memory and RSS."""
    gc.collect()
    if op == "mem_start":
        tracemalloc.start()
    traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0
    reply = {"ok": True, "traced": traced, "rss": rss_bytes()}
    if op == "mem_stop":
        tracemalloc.stop()
    return reply


def python_info() -> dict[str, Any]:
    return {"python": sys.version.split()[0], "executable": sys.executable}


def profile_entries(profiler: cProfile.Profile, top: int) -> list[dict[str, Any]]:
    """The functions with the most own time: name, calls, own and total seconds."""
    stats: dict[tuple[str, int, str], tuple[int, int, float, float, object]]
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    rows = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    return [
        {
            "function": f"{os.path.basename(file)}:{line}({name})",
            "calls": calls,
            "tottime": own,
            "cumtime": total,
        }
        for (file, line, name), (_, calls, own, total, _) in rows
    ]
