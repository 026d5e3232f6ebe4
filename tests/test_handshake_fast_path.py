"""The direct path of the handshake against the engine's, byte for byte.

For every request (or response) the direct path either declines, and the
engine handles it as before, or produces exactly what the engine would have:
the same answer on the wire (``Date`` aside), the same headers for the
application, and the engine left in the same state.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.uri import WebSocketURI

import trio_websocket._client as client_module
import trio_websocket._request as request_module
from trio_websocket import HandshakeError
from trio_websocket._client import ClientConfig, _direct_request, _engine_request
from trio_websocket._engine import CAN_OPEN_DIRECTLY, ClientEngine, open_directly
from trio_websocket._handshake import ENGINE_LOGGER, accept_value, header_pairs
from trio_websocket._request import DirectAnswer, read_request
from trio_websocket._settings import Settings

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
_DATE = re.compile(rb"\r\nDate: [^\r]*")

CORE = [
    (b"Host", b"example.com"),
    (b"Upgrade", b"websocket"),
    (b"Connection", b"Upgrade"),
    (b"Sec-WebSocket-Key", KEY),
    (b"Sec-WebSocket-Version", b"13"),
]
EXTRA = [
    (b"User-Agent", b"test/1.0 \xe9"),
    (b"Origin", b"https://example.com"),
    (b"Origin", b"https://other.example"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; server_max_window_bits=9"),
    (b"Sec-WebSocket-Extensions", b"x-unknown, permessage-deflate"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; bad=="),
    (b"Sec-WebSocket-Protocol", b"chat, superchat"),
    (b"Sec-WebSocket-Protocol", b"chat,,"),
    (b"Connection", b"keep-alive"),
    (b"Upgrade", b"h2c"),
    (b"Content-Length", b"0"),
    (b"Transfer-Encoding", b"chunked"),
    (b"Sec-WebSocket-Key", b"c2hvcnQ="),
    (b"X-Empty", b""),
    (b"X-Tab", b"a\tb"),
]
VARIANTS = {
    b"Connection": [b"keep-alive, Upgrade", b"upgrade", b"Upgrade,", b"a b, upgrade"],
    b"Upgrade": [b"WebSocket", b"websocket/13", b"websocket, h2c"],
    b"Sec-WebSocket-Version": [b"8", b"13, 8"],
    b"Sec-WebSocket-Key": [b"not base64!", KEY + b"="],
}


def _negotiated(extensions: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """Extensions as comparable values: their parameters, not their zlib state."""
    return [
        (
            type(e).__name__,
            {k: v for k, v in vars(e).items() if k not in ("decoder", "encoder")},
        )
        for e in extensions
    ]


def _casing(name: bytes, how: int) -> bytes:
    return [name, name.lower(), name.upper()][how]


@st.composite
def requests(draw: Any) -> bytes:
    """Upgrade requests: mostly valid, with some of everything that is not."""
    fields = [
        (name, draw(st.sampled_from([value, *VARIANTS.get(name, [])])))
        if draw(st.integers(0, 5)) == 0
        else (name, value)
        for name, value in CORE
        if draw(st.integers(0, 15))  # now and then a header is missing
    ]
    fields += draw(st.lists(st.sampled_from(EXTRA), max_size=4))
    fields = draw(st.permutations(fields))
    lines = [
        _casing(name, draw(st.integers(0, 2)))
        + draw(st.sampled_from([b": ", b":", b" : "]))
        + value
        for name, value in fields
    ]
    start = draw(
        st.sampled_from(
            [b"GET /chat?x=1 HTTP/1.1"] * 6
            + [
                b"POST / HTTP/1.1",
                b"GET / HTTP/1.0",
                b"GET /a b HTTP/1.1",
                b"GET /\xe9 HTTP/1.1",
            ]
        )
    )
    head = b"\r\n".join([start, *lines])
    end = draw(
        st.sampled_from([b"\r\n\r\n"] * 8 + [b"\r\n", b"\n\r\n", b"\r\n\r\n\x81\x80"])
    )
    odd = draw(
        st.sampled_from([b""] * 8 + [b"\r\n folded", b"\r\nbad line", b"\r\n: no name"])
    )
    request: bytes = head + odd + end
    return request


async def _serve_once(
    data: bytes, compression: Any, direct: bool, accept: bool
) -> tuple[Any, ...]:
    """What a server sends in answer to ``data``, and the state it ends in."""
    client, server = trio.testing.memory_stream_pair()
    await client.send_all(data)
    await client.send_stream.aclose()
    taken = None
    state: tuple[Any, ...] = ()
    async with trio.open_nursery() as nursery:
        try:
            request = await read_request(
                nursery, server, Settings(compression=compression)
            )
        except HandshakeError:
            request = None
        if request is not None:
            taken = isinstance(request._response, DirectAnswer)
            offered = request.proposed_subprotocols
            headers = request.headers
            if accept:
                ws = await request.accept(
                    subprotocol=offered[0] if offered else None,
                    extra_headers=[("X-App", "1"), ("Server", "ours")],
                )
                protocol = ws._protocol
                state = (
                    protocol.state,
                    _negotiated(protocol.extensions),
                    protocol.subprotocol,
                    ws.handshake_headers,
                    headers,
                )
            else:
                await request.reject(403)
                state = (headers,)
        answer = b""
        while chunk := await client.receive_some():
            answer += chunk
            if accept and request is not None and b"\r\n\r\n" in answer:
                break
        nursery.cancel_scope.cancel()
    return _DATE.sub(b"", answer), state, taken


def _both(
    data: bytes, compression: Any, accept: bool, monkeypatch: Any
) -> tuple[Any, Any]:
    monkeypatch.setattr(request_module, "direct_path_allowed", lambda: False)
    engine = trio.run(_serve_once, data, compression, False, accept)
    monkeypatch.undo()
    direct = trio.run(_serve_once, data, compression, True, accept)
    return engine, direct


@pytest.mark.skipif(not CAN_OPEN_DIRECTLY, reason="no direct path with this engine")
@settings(max_examples=250, deadline=None)
@given(requests(), st.sampled_from(["deflate", None]), st.booleans())
def test_server_answers_as_the_engine(
    data: bytes, compression: Any, accept: bool
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        (engine_answer, engine_state, _), (answer, state, _) = _both(
            data, compression, accept, monkeypatch
        )
    assert answer == engine_answer
    assert state == engine_state


def test_server_takes_the_direct_path_for_a_common_request() -> None:
    data = (
        b"\r\n".join([b"GET / HTTP/1.1", *(n + b": " + v for n, v in CORE)])
        + b"\r\n\r\n"
    )
    answer, _, taken = trio.run(_serve_once, data, "deflate", True, True)
    assert taken
    assert answer.startswith(b"HTTP/1.1 101 Switching Protocols\r\nX-App: 1\r\n")


# -- Client side --------------------------------------------------------------


def _client_engine(subprotocols: list[str] | None, compression: Any) -> ClientProtocol:
    protocol = ClientEngine(
        WebSocketURI(False, "example.com", 0, "/", ""),
        subprotocols=subprotocols,  # type: ignore[arg-type]
        extensions=Settings(compression=compression).client_extensions(),
        logger=ENGINE_LOGGER,
    )
    protocol.key = KEY.decode()
    return protocol


@given(
    st.sampled_from([None, ["chat"], ["chat", "super"]]),
    st.sampled_from(["deflate", None]),
    st.lists(
        st.sampled_from(
            [("X-A", "1"), ("user-agent", "me"), ("Origin", "o"), ("HOST", "h")]
        ),
        max_size=3,
    ),
    st.sampled_from([None, "https://example.com"]),
    st.sampled_from([None, ("user", "pass")]),
)
def test_client_requests_as_the_engine(
    subprotocols: list[str] | None,
    compression: Any,
    extra: list[tuple[str, str]],
    origin: str | None,
    credentials: tuple[str, str] | None,
) -> None:
    config = ClientConfig.build(
        "test", subprotocols=subprotocols, extra_headers=extra, origin=origin
    )
    config = ClientConfig(**{**vars(config), "credentials": credentials})
    engine = _engine_request(_client_engine(subprotocols, compression), "h:1", config)
    direct = _direct_request(
        _client_engine(subprotocols, compression), "h:1", "/", config
    )
    assert direct == engine


def _response(
    fields: list[tuple[bytes, bytes]], status: bytes = b"101 Switching Protocols"
) -> bytes:
    lines = [b"HTTP/1.1 " + status, *(n + b": " + v for n, v in fields)]
    return b"\r\n".join(lines) + b"\r\n\r\n"


ACCEPT = accept_value(KEY)
RESPONSE_EXTRA = [
    (b"Sec-WebSocket-Extensions", b"permessage-deflate"),
    (b"Sec-WebSocket-Extensions", b"permessage-deflate; client_max_window_bits=12"),
    (b"Sec-WebSocket-Extensions", b"x-unknown"),
    (b"Sec-WebSocket-Protocol", b"chat"),
    (b"Sec-WebSocket-Protocol", b"chat, super"),
    (b"Sec-WebSocket-Protocol", b"other"),
    (b"Sec-WebSocket-Accept", ACCEPT),
    (b"Sec-WebSocket-Accept", b"wrong"),
    (b"Connection", b"close"),
    (b"Server", b"x \xe9"),
    (b"Date", b"today"),
]


@given(
    st.lists(st.sampled_from(RESPONSE_EXTRA), max_size=3),
    st.booleans(),
    st.sampled_from([b"101 Switching Protocols", b"101 OK", b"200 OK", b"101"]),
    st.sampled_from([None, ["chat"]]),
    st.sampled_from(["deflate", None]),
    st.sampled_from([b"", b"\x81\x02hi", b"\x81\x7e\x01"]),  # frames behind
)
def test_client_reads_responses_as_the_engine(
    extra: list[tuple[bytes, bytes]],
    casing: bool,
    status: bytes,
    subprotocols: list[str] | None,
    compression: Any,
    behind: bytes,
) -> None:
    core = [
        (b"Upgrade", b"websocket"),
        (b"Connection", b"Upgrade"),
        (b"Sec-WebSocket-Accept", ACCEPT),
    ]
    fields = [(n.lower() if casing else n, v) for n, v in core + extra]
    data = _response(fields, status)
    direct = _client_engine(subprotocols, compression)
    opened = client_module._open_directly(direct, data + behind)
    engine = _client_engine(subprotocols, compression)
    engine.receive_data(data)
    events = engine.events_received()
    if opened is None:
        return
    assert engine.handshake_exc is None
    assert isinstance(events[0], Response)
    assert opened == (list(header_pairs(events[0].headers)), behind)
    assert direct.state is engine.state is State.OPEN
    assert direct.subprotocol == engine.subprotocol
    assert _negotiated(direct.extensions) == _negotiated(engine.extensions)


# -- The hook -----------------------------------------------------------------


@pytest.mark.parametrize("side", [ServerProtocol, "client"])
def test_open_directly_leaves_the_engine_open_and_parsing_frames(side: Any) -> None:
    protocol = _client_engine(None, None) if side == "client" else ServerProtocol()
    assert CAN_OPEN_DIRECTLY
    open_directly(protocol, [], None)
    assert protocol.state is State.OPEN
    mask = b"" if side == "client" else b"\x00\x00\x00\x00"
    protocol.receive_data(bytes([0x81, (0x80 if mask else 0) | 2]) + mask + b"hi")
    (frame,) = protocol.events_received()
    assert isinstance(frame, Frame)
    assert frame.opcode is Opcode.TEXT and frame.data == b"hi"
