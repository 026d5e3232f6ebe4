"""Agent for the asyncio peers: ``python asyncio_agent.py PEER``.

The cross-runtime references (``peer_websockets_asyncio.py``,
``peer_aiohttp.py``), on uvloop as the fixed peer is (plain asyncio when
uvloop is not installed). Obeys the control protocol of ``control.py`` like
``trio_agent.py``: ``hello``, ``serve``, ``run``, ``hold``/``release``,
``mem_start``/``mem``/``mem_stop``, ``profile_start``/``profile_stop`` and
``quit``.
"""

from __future__ import annotations

import asyncio
import cProfile
import importlib
import json
import sys
import traceback
from contextlib import AsyncExitStack
from typing import Any

from asyncio_interface import AsyncioPeer
from asyncio_workloads import WORKLOADS

from control import (
    Reply,
    Request,
    memory_op,
    profile_entries,
    python_info,
    raise_fd_limit,
    send_reply,
)

HOLD_CONCURRENCY = 50


def loop_info() -> dict[str, str]:
    try:
        import uvloop
    except ImportError:
        return {"loop": "asyncio"}
    return {"loop": f"uvloop {uvloop.__version__}"}


class Agent:
    def __init__(self, peer: AsyncioPeer) -> None:
        self.peer = peer
        self.held: AsyncExitStack | None = None
        self.profiler: cProfile.Profile | None = None

    async def handle(self, request: Request) -> Reply:
        op = request["op"]
        if op == "hello":
            info = {**python_info(), **self.peer.info(), **loop_info()}
            info["library"] += f" ({info['loop']})"
            return {
                "ok": True,
                "info": info,
                "compression": self.peer.supports_compression,
            }
        if op == "serve":
            port = await self.peer.serve(
                request["host"], compression=request.get("compression", False)
            )
            return {"ok": True, "port": port}
        if op == "run":
            workload = WORKLOADS[request["workload"]]
            result = await workload(
                self.peer,
                request["host"],
                request["port"],
                request.get("compression", False),
                request["params"],
            )
            return {"ok": True, "result": result}
        if op == "hold":
            return await self.hold(request)
        if op == "release":
            held, self.held = self.held, None
            if held is not None:
                await held.aclose()
            return {"ok": True}
        if op in ("mem_start", "mem", "mem_stop"):
            return memory_op(op)
        if op == "profile_start":
            self.profiler = cProfile.Profile()
            self.profiler.enable()
            return {"ok": True}
        if op == "profile_stop":
            assert self.profiler is not None
            self.profiler.disable()
            entries = profile_entries(self.profiler, request.get("top", 25))
            self.profiler = None
            return {"ok": True, "entries": entries}
        raise ValueError(f"unknown op {op!r}")

    async def hold(self, request: Request) -> Reply:
        """Open ``count`` idle connections, 50 handshakes at a time."""
        held = self.held = AsyncExitStack()
        host, port = request["host"], request["port"]
        compression = request.get("compression", False)
        count: int = request["count"]
        opened = 0

        async def opener(share: int) -> None:
            nonlocal opened
            for _ in range(share):
                await held.enter_async_context(
                    self.peer.connect(host, port, compression=compression)
                )
                opened += 1

        async with asyncio.TaskGroup() as group:
            for index in range(HOLD_CONCURRENCY):
                share = count // HOLD_CONCURRENCY + (index < count % HOLD_CONCURRENCY)
                group.create_task(opener(share))
        return {"ok": True, "open": opened}


async def main(peer_name: str) -> None:
    raise_fd_limit()
    peer: AsyncioPeer = importlib.import_module(f"peer_{peer_name}").create()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    agent = Agent(peer)
    while line := await reader.readline():
        request: dict[str, Any] = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply = await asyncio.wait_for(
                agent.handle(request), request.get("timeout", 120)
            )
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        send_reply(reply)
    if agent.held is not None:
        await agent.held.aclose()
    close = getattr(peer, "aclose", None)  # a client session, for one
    if close is not None:
        await close()
    send_reply({"ok": True, "bye": True})


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(sys.argv[1]))
    else:
        uvloop.run(main(sys.argv[1]))
