"""Recipe: JSON messages, with a clear answer to a malformed one."""

from __future__ import annotations

import json
from typing import Any

import trio

from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    open_websocket_url,
    serve_websocket,
)

UNSUPPORTED_DATA = 1003


async def send_json(connection: WebSocketConnection, value: Any) -> None:
    await connection.send_message(json.dumps(value, separators=(",", ":")))


async def receive_json(connection: WebSocketConnection) -> Any:
    message = await connection.get_message()
    try:
        return json.loads(message)
    except json.JSONDecodeError:
        await connection.aclose(UNSUPPORTED_DATA, "expected JSON")
        raise


async def calculator(request: WebSocketRequest) -> None:
    connection = await request.accept()
    try:
        while True:
            query = await receive_json(connection)
            await send_json(connection, {"id": query["id"], "sum": sum(query["add"])})
    except (ConnectionClosed, json.JSONDecodeError):
        pass


async def ask(url: str) -> list[object]:
    answers: list[object] = []
    async with open_websocket_url(url) as ws:
        await send_json(ws, {"id": 1, "add": [1, 2, 3]})
        answers.append(await receive_json(ws))
        await ws.send_message("this is not JSON")
        try:
            await ws.get_message()
        except ConnectionClosed as closed:
            answers.append(closed.reason)
    return answers


async def main() -> list[object]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, calculator, "127.0.0.1", 0, None)
        answers = await ask(f"ws://127.0.0.1:{server.port}/")
        nursery.cancel_scope.cancel()
    for answer in answers:
        print(answer)
    return answers


if __name__ == "__main__":
    trio.run(main)
