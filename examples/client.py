"""A client that sends a few messages to a WebSocket server and prints replies.

With no arguments it talks to the echo server of ``echo_server.py``. Give
messages on the command line to send those instead.
"""

from __future__ import annotations

import argparse

import trio

from trio_websocket import open_websocket_url


async def talk(url: str, messages: list[str]) -> None:
    """Send each message and print what comes back, then close."""
    async with open_websocket_url(url) as connection:
        for message in messages:
            await connection.send_message(message)
            print(f"> {message}")
            reply = await connection.get_message()
            print(f"< {reply if isinstance(reply, str) else reply.hex()}")
        await connection.ping()
        print("ping answered; closing")
    print(f"closed: {connection.closed}")


def main() -> None:
    """Parse the command line and run the conversation."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="ws://127.0.0.1:8000/")
    parser.add_argument("messages", nargs="*", default=["hello", "trio", "websocket"])
    args = parser.parse_args()
    trio.run(talk, args.url, args.messages)


if __name__ == "__main__":
    main()
