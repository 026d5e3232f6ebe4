"""The fixed peer: ``python fixed_agent.py`` (asyncio, uvloop when installed).

Every side under test talks to this same peer in another process, so only
that side's cost differs between rows. It is written to cost as little as
possible per message: it parses every complete frame of a read at once and
answers them with one write, and it never validates what it receives.

As a server it runs echo servers (WebSocket, WebSocket with
permessage-deflate, and the plain length-prefixed framing). As a client it
runs the same workloads as ``trio_workloads.py`` against a server under test.
It obeys the control protocol of ``control.py``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sys
import traceback
from collections.abc import Callable
from time import perf_counter
from typing import Any, cast

from control import Reply, Request, memory_op, python_info, raise_fd_limit, send_reply
from fixed_wire import (
    BINARY,
    CLOSE,
    PING,
    TEXT,
    Framer,
    PlainFramer,
    WebSocketFramer,
    client_deflate,
    client_request,
    server_response,
)
from payloads import client_share, messages_for

Params = dict[str, Any]
Result = dict[str, Any]
MiB = 2**20
_CLOSE_1000 = (1000).to_bytes(2, "big")

# ------------------------------------------------------------------ servers


class EchoServer(asyncio.Protocol):
    """Echoes every data message; answers pings and close frames."""

    def __init__(self, proto: str, deflate_enabled: bool) -> None:
        self._websocket = proto == "ws"
        self._deflate_enabled = deflate_enabled
        self._framer: Framer | None = None if self._websocket else PlainFramer()
        self._head = bytearray()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        transport = self._transport
        assert transport is not None
        framer = self._framer
        if framer is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            response, deflate = server_response(
                bytes(self._head[:end]), deflate_enabled=self._deflate_enabled
            )
            transport.write(response)
            data = bytes(self._head[end + 4 :])
            framer = self._framer = WebSocketFramer(client=False, deflate=deflate)
        out: list[bytes] = []
        for opcode, payload in framer.feed(data):
            if opcode <= BINARY:
                out += framer.frame(opcode, payload)
            elif opcode == PING:
                out += framer.frame(PING + 1, payload)
            elif opcode == CLOSE:
                out += framer.frame(CLOSE, payload[:2])
                transport.writelines(out)
                transport.close()
                return
        if out:
            transport.writelines(out)

    def eof_received(self) -> bool | None:
        return None  # close our side too (the plain framing's close)


# ------------------------------------------------------------------ clients


class Client(asyncio.Protocol):
    """One client connection; counts echoes rather than queueing them."""

    def __init__(self, proto: str, host: str, port: int, deflate: bool) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.lost: asyncio.Future[None] = loop.create_future()
        self.received = 0
        self.last: tuple[int, bytes] | None = None
        self._want = 0
        self._waiter: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self._websocket = proto == "ws"
        self._request = (host, port, deflate)
        self._accept = b""
        self._head = bytearray()
        self.framer: Framer = PlainFramer()
        self.transport: asyncio.Transport | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if self._websocket:
            host, port, deflate = self._request
            request, self._accept = client_request(host, port, deflate=deflate)
            transport.write(request)
        else:
            self.opened.set_result(None)

    def data_received(self, data: bytes) -> None:
        if not self.opened.done():
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            ok, deflate = client_deflate(bytes(self._head[:end]), self._accept)
            if not ok:
                self.opened.set_exception(ConnectionError("handshake refused"))
                return
            self.framer = WebSocketFramer(client=True, deflate=deflate)
            self.opened.set_result(None)
            data = bytes(self._head[end + 4 :])
        for frame in self.framer.feed(data):
            opcode = frame[0]
            if opcode <= BINARY:
                self.received += 1
                self.last = frame
            elif opcode == PING:
                assert self.transport is not None
                self.transport.writelines(self.framer.frame(PING + 1, frame[1]))
        waiter = self._waiter
        if waiter is not None and self.received >= self._want and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        for future in (self.opened, self.lost, self._waiter, self._writable):
            if future is not None and not future.done():
                if future is self.lost:
                    future.set_result(None)
                else:
                    future.set_exception(ConnectionError("connection lost"))

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # used by workloads
    def send(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.writelines(self.framer.frame(opcode, payload))

    def send_many(self, messages: list[tuple[int, bytes]]) -> None:
        assert self.transport is not None
        frame = self.framer.frame
        self.transport.writelines([chunk for m in messages for chunk in frame(*m)])

    async def writable(self) -> None:
        if self._writable is not None:
            await self._writable

    async def wait_for(self, count: int) -> None:
        if self.received >= count:
            return
        self._want = count
        self._waiter = asyncio.get_running_loop().create_future()
        await self._waiter

    async def close(self) -> None:
        assert self.transport is not None
        if self._websocket:
            self.send(CLOSE, _CLOSE_1000)
        else:
            self.transport.write_eof()
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), 5)
        finally:
            self.transport.close()


async def open_client(target: Request) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: Client(
            target["proto"],
            target["host"],
            target["port"],
            target.get("compression", False),
        ),
        target["host"],
        target["port"],
    )
    await client.opened
    return client


def encoded(params: Params) -> list[tuple[int, bytes]]:
    return [
        (TEXT, message.encode()) if isinstance(message, str) else (BINARY, message)
        for message in messages_for(params)
    ]


async def warm_up(
    client: Client, messages: list[tuple[int, bytes]], rounds: int
) -> None:
    for index in range(rounds):
        message = messages[index % len(messages)]
        client.send(*message)
        await client.wait_for(client.received + 1)
        if client.last != message:
            raise AssertionError("the echo server returned a different message")


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, math.floor(fraction * len(ordered)))]


async def round_trips(target: Request, params: Params) -> Result:
    messages = encoded(params)
    client = await open_client(target)
    await warm_up(client, messages, params["warmup"])
    opcode, payload = messages[0]
    samples: list[float] = []
    start = perf_counter()
    deadline = start + params["seconds"]
    for _ in range(params["max_count"]):
        before = perf_counter()
        client.send(opcode, payload)
        await client.wait_for(client.received + 1)
        after = perf_counter()
        samples.append(after - before)
        if after >= deadline:
            break
    elapsed = perf_counter() - start
    await client.close()
    rate = len(samples) / elapsed
    return {
        "value": rate,
        "count": len(samples),
        "elapsed": elapsed,
        "mib_per_s": rate * params["size"] / MiB,
        "p50_us": _percentile(samples, 0.50) * 1e6,
        "p99_us": _percentile(samples, 0.99) * 1e6,
    }


async def pipelined(target: Request, params: Params) -> Result:
    messages = encoded(params)
    client = await open_client(target)
    await warm_up(client, messages, params["warmup"])
    base = client.received
    sent = 0
    start = perf_counter()
    deadline = start + params["seconds"]
    cycle = itertools.cycle(messages)
    batch, window = 32, params["window"]
    while sent < params["max_count"] and perf_counter() < deadline:
        client.send_many(list(itertools.islice(cycle, batch)))
        sent += batch
        await client.writable()
        if sent >= window:
            await client.wait_for(base + sent - window)
        else:
            await asyncio.sleep(0)  # let the echoes in
    await client.wait_for(base + sent)
    elapsed = perf_counter() - start
    await client.close()
    return {"value": sent / elapsed, "count": sent, "elapsed": elapsed}


async def fan_in(target: Request, params: Params) -> Result:
    messages = encoded(params)
    opcode, payload = messages[0]
    clients = await asyncio.gather(
        *(open_client(target) for _ in range(params["conns"]))
    )
    for client in clients:
        await warm_up(client, messages, 2)
    deadline = math.inf

    async def run(client: Client) -> int:
        done = 0
        for _ in range(params["max_count"]):
            client.send(opcode, payload)
            await client.wait_for(client.received + 1)
            done += 1
            if perf_counter() >= deadline:
                break
        return done

    start = perf_counter()
    deadline = start + params["seconds"]
    counts = await asyncio.gather(*(run(client) for client in clients))
    elapsed = perf_counter() - start
    await asyncio.gather(*(client.close() for client in clients))
    total = sum(counts)
    return {"value": total / elapsed, "count": total, "elapsed": elapsed}


async def handshakes(target: Request, params: Params) -> Result:
    max_count = params["max_count"]
    started = done = 0
    start = perf_counter()
    deadline = start + params["seconds"]

    async def worker() -> None:
        nonlocal started, done
        while started < max_count and perf_counter() < deadline:
            started += 1
            client = await open_client(target)
            await client.close()
            done += 1

    await asyncio.gather(*(worker() for _ in range(params["concurrency"])))
    elapsed = perf_counter() - start
    return {"value": done / elapsed, "count": done, "elapsed": elapsed}


async def mixed(target: Request, params: Params) -> Result:
    """Like ``trio_workloads.mixed``: clients echoing messages of random size."""
    pool = encoded(params)
    count = params["clients"]
    clients = await asyncio.gather(*(open_client(target) for _ in range(count)))
    shares = [client_share(pool, index, count) for index in range(count)]
    for client, messages in zip(clients, shares, strict=True):
        await warm_up(client, messages, params["warmup"])
    deadline = math.inf
    finished: list[float] = []

    async def run(client: Client, messages: list[tuple[int, bytes]]) -> list[int]:
        done = payload = 0
        for opcode, data in itertools.islice(
            itertools.cycle(messages), params["max_count"]
        ):
            client.send(opcode, data)
            await client.wait_for(client.received + 1)
            done += 1
            payload += len(data)
            if perf_counter() >= deadline:
                break
        finished.append(perf_counter())
        return [done, payload]

    start = perf_counter()
    deadline = start + params["seconds"]
    results = await asyncio.gather(
        *(
            run(client, messages)
            for client, messages in zip(clients, shares, strict=True)
        )
    )
    elapsed = max(finished) - start
    await asyncio.gather(*(client.close() for client in clients))
    total = sum(done for done, _ in results)
    return {
        "value": total / elapsed,
        "count": total,
        "elapsed": elapsed,
        "mib_per_s": sum(payload for _, payload in results) / elapsed / MiB,
    }


WORKLOADS: dict[str, Callable[[Request, Params], Any]] = {
    "round_trips": round_trips,
    "pipelined": pipelined,
    "fan_in": fan_in,
    "handshakes": handshakes,
    "mixed": mixed,
}

# -------------------------------------------------------------------- agent


class Agent:
    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.held: list[Client] = []

    async def handle(self, request: Request) -> Reply:
        op = request["op"]
        if op == "hello":
            return {"ok": True, "info": {**python_info(), **_loop_info()}}
        if op == "serve":
            return await self.serve(request)
        if op == "run":
            result = await WORKLOADS[request["workload"]](request, request["params"])
            return {"ok": True, "result": result}
        if op == "hold":
            return await self.hold(request)
        if op == "release":
            held, self.held = self.held, []
            await _limited((client.close() for client in held), 50)
            return {"ok": True}
        if op in ("mem_start", "mem", "mem_stop"):
            return memory_op(op)
        raise ValueError(f"unknown op {op!r}")

    async def serve(self, request: Request) -> Reply:
        loop = asyncio.get_running_loop()
        proto, compression = request["proto"], request.get("compression", False)
        server = await loop.create_server(
            lambda: EchoServer(proto, compression), request["host"], 0, backlog=1024
        )
        self.servers.append(server)
        return {"ok": True, "port": server.sockets[0].getsockname()[1]}

    async def hold(self, request: Request) -> Reply:
        async def one() -> None:
            self.held.append(await open_client(request))

        await _limited((one() for _ in range(request["count"])), 50)
        return {"ok": True, "open": len(self.held)}


async def _limited(coroutines: Any, limit: int) -> None:
    semaphore = asyncio.Semaphore(limit)

    async def run(coroutine: Any) -> None:
        async with semaphore:
            await coroutine

    await asyncio.gather(*(run(coroutine) for coroutine in coroutines))


def _loop_info() -> dict[str, str]:
    try:
        import uvloop

        return {
            "library": "fixed peer (asyncio + uvloop)",
            "version": uvloop.__version__,
        }
    except ImportError:
        return {"library": "fixed peer (asyncio)", "version": sys.version.split()[0]}


async def main() -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    agent = Agent()
    while line := await reader.readline():
        request = json.loads(line)
        if request["op"] == "quit":
            break
        try:
            reply = await asyncio.wait_for(
                agent.handle(request), request.get("timeout", 120)
            )
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        send_reply(reply)
    send_reply({"ok": True, "bye": True})


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
