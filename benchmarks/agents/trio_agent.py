"""Agent for the Trio peers: ``python trio_agent.py PEER`` (PEER: an adapter).

Runs inside the peer's own virtual environment and obeys the control protocol
of ``control.py``: ``hello``, ``serve``, ``run``, ``hold``/``release``,
``mem_start``/``mem``/``mem_stop`` and ``quit``.
"""

from __future__ import annotations

import cProfile
import importlib
import json
import os
import sys
import traceback
from typing import Any

import trio

from control import (
    Reply,
    Request,
    memory_op,
    profile_entries,
    python_info,
    raise_fd_limit,
    send_reply,
)
from interface import TrioPeer
from trio_workloads import WORKLOADS


async def _lines(stream: trio.abc.ReceiveStream) -> Any:
    buffer = b""
    while True:
        chunk = await stream.receive_some()
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            yield line


class Holder:
    """Keeps ``count`` idle connections open until released."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.closed = trio.Event()

    async def run(
        self,
        peer: TrioPeer,
        request: Request,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        count, concurrency = request["count"], request.get("concurrency", 50)
        host, port = request["host"], request["port"]
        compression = request.get("compression", False)

        async def connection(task_status: trio.TaskStatus[None]) -> None:
            async with peer.connect(host, port, compression=compression):
                task_status.started()
                await self.release.wait()

        try:
            async with trio.open_nursery() as nursery:

                async def opener(share: int) -> None:
                    for _ in range(share):
                        await nursery.start(connection)

                async with trio.open_nursery() as openers:
                    for index in range(concurrency):
                        share = count // concurrency + (index < count % concurrency)
                        openers.start_soon(opener, share)
                task_status.started(count)
        finally:
            self.closed.set()


class Agent:
    def __init__(self, peer: TrioPeer, nursery: trio.Nursery) -> None:
        self.peer = peer
        self.nursery = nursery
        self.holder: Holder | None = None
        self.profiler: cProfile.Profile | None = None

    async def handle(self, request: Request) -> Reply:
        op = request["op"]
        if op == "hello":
            info = {**python_info(), **self.peer.info()}
            return {
                "ok": True,
                "info": info,
                "compression": self.peer.supports_compression,
            }
        if op == "serve":
            port = await self.nursery.start(
                lambda task_status: self.peer.serve(
                    request["host"],
                    compression=request.get("compression", False),
                    task_status=task_status,
                )
            )
            return {"ok": True, "port": port}
        if op == "run":
            return await self.run(request)
        if op == "hold":
            self.holder = Holder()
            holder = self.holder
            count = await self.nursery.start(
                lambda task_status: holder.run(self.peer, request, task_status)
            )
            return {"ok": True, "open": count}
        if op == "release":
            if self.holder is not None:
                self.holder.release.set()
                await self.holder.closed.wait()
                self.holder = None
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

    async def run(self, request: Request) -> Reply:
        workload = WORKLOADS[request["workload"]]
        result = await workload(
            self.peer,
            request["host"],
            request["port"],
            request.get("compression", False),
            request["params"],
        )
        return {"ok": True, "result": result}


async def main(peer_name: str) -> None:
    raise_fd_limit()
    peer: TrioPeer = importlib.import_module(f"peer_{peer_name}").create()
    stdin = trio.lowlevel.FdStream(os.dup(0))
    async with trio.open_nursery() as nursery:
        agent = Agent(peer, nursery)
        async for line in _lines(stdin):
            request = json.loads(line)
            if request["op"] == "quit":
                break
            try:
                with trio.fail_after(request.get("timeout", 120)):
                    reply = await agent.handle(request)
            except Exception:
                reply = {"ok": False, "error": traceback.format_exc()}
            send_reply(reply)
        nursery.cancel_scope.cancel()
    send_reply({"ok": True, "bye": True})


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
