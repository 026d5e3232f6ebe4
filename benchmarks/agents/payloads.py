"""Message payloads shared by every agent (standard library only).

Every peer, and the fixed peer, builds its messages here, so all of them send
exactly the same bytes.
"""

from __future__ import annotations

import json
import random
from typing import Any, TypeVar

T = TypeVar("T")

JSON_POOL_SIZE = 32
MIXED_POOL_SIZE = 256
MIXED_SEED = 14

Message = str | bytes

# Large enough for the 16 MiB bulk scenario, on both sides.
MAX_MESSAGE_SIZE = 64 * 2**20


def text_message(size: int) -> str:
    """An ASCII text message of exactly ``size`` bytes."""
    pattern = "abcdefghijklmnopqrstuvwxyz0123456789"
    return (pattern * (size // len(pattern) + 1))[:size]


def binary_message(size: int) -> bytes:
    """A binary message of exactly ``size`` bytes (not compressible to nothing)."""
    # One generator for the whole block (one per byte made every byte equal).
    block = random.Random(size).randbytes(4096)
    return (block * (size // len(block) + 1))[:size]


def json_messages(size: int = 1024, count: int = JSON_POOL_SIZE) -> list[str]:
    """``count`` distinct JSON-like texts of about ``size`` bytes each.

    They look like API events (keys repeat, values vary), so permessage-deflate
    compresses them the way it compresses real traffic.
    """
    rng = random.Random(1234)
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    messages = []
    for index in range(count):
        items: list[dict[str, object]] = []
        document: dict[str, object] = {"type": "update", "seq": index, "items": items}
        while len(json.dumps(document)) < size - 120:
            items.append(
                {
                    "id": rng.randrange(10**6),
                    "name": rng.choice(words) + "-" + rng.choice(words),
                    "price": round(rng.uniform(1, 1000), 2),
                    "active": rng.random() < 0.5,
                }
            )
        text = json.dumps(document)
        messages.append(text + " " * max(0, size - len(text)))
    return messages


def mixed_messages(
    max_size: int, seed: int = MIXED_SEED, count: int = MIXED_POOL_SIZE
) -> list[bytes]:
    """``count`` binary messages of sizes drawn uniformly from 0 to ``max_size``.

    Seeded, so every peer (and the fixed peer) gets the same sequence; they are
    prefixes of one random block.
    """
    rng = random.Random(seed)
    block = binary_message(max_size)
    return [block[: rng.randint(0, max_size)] for _ in range(count)]


def client_share(messages: list[T], index: int, clients: int) -> list[T]:
    """Client ``index`` of ``clients``: the same pool, from its own offset."""
    offset = index * len(messages) // clients
    return messages[offset:] + messages[:offset]


def messages_for(params: dict[str, Any]) -> list[Message]:
    """The messages a workload cycles through, from its parameters."""
    kind = params.get("kind", "binary")
    size = int(params.get("size", 16))
    if kind == "mixed":
        return list(mixed_messages(size, params.get("seed", MIXED_SEED)))
    if kind == "json":
        return list(json_messages(size))
    if kind == "text":
        return [text_message(size)]
    return [binary_message(size)]
