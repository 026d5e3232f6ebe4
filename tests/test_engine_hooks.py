"""The engine internals that ``trio_websocket/_engine.py`` relies on.

Each hook there falls back to the engine's public path when the engine does
not look as expected, so a websockets release that changes its internals
would only make the library quietly slower or less precise. These tests make
such a release fail loudly instead: one per hook, each checking the shape the
hook relies on, then the hook itself.
"""

from __future__ import annotations

from typing import Any

from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Close, Frame, Opcode
from websockets.protocol import CLOSING, OPEN, Protocol, Side
from websockets.streams import StreamReader
from websockets.uri import parse_uri

from trio_websocket._engine import (
    CAN_PARSE_ON_DEMAND,
    CAN_QUEUE_FRAMES,
    ClientEngine,
    ParserOnDemand,
    SizingReader,
    between_frames,
    parser_failure,
    queue_frame,
    release_handshake,
    send_uncompressed,
    track_frame_sizes,
)


def client() -> Protocol:
    """An open client-side engine: it receives unmasked frames."""
    return Protocol(Side.CLIENT)


def from_server(opcode: Opcode, data: bytes, *, fin: bool = True) -> bytes:
    return Frame(opcode, data, fin=fin).serialize(mask=False)


def received_frame(engine: Protocol) -> Frame:
    """The one frame the engine parsed since last asked."""
    [frame] = engine.events_received()
    assert isinstance(frame, Frame)
    return frame


def test_close_between_fragments_relies_on_current_size() -> None:
    engine = client()
    engine.receive_data(from_server(Opcode.TEXT, b"ab", fin=False))
    assert engine.current_size == 2  # the engine's size of the open message
    ours = ClientEngine(parse_uri("ws://example.com/"), state=OPEN)
    ours.receive_data(from_server(Opcode.TEXT, b"ab", fin=False))
    ours.receive_data(from_server(Opcode.CLOSE, Close(1001, "").serialize()))
    assert ours.close_sent == Close(1001, "")  # answered, not failed with 1002


def test_release_handshake_relies_on_the_parser_generator() -> None:
    engine = client()
    assert between_frames(engine.parser)  # the gi_yieldfrom chain to at_eof
    assert isinstance(engine.reader.buffer, bytearray)
    before = engine.parser
    assert release_handshake(engine)  # our codec may take over
    assert engine.parser is not before
    assert isinstance(engine.parser, ParserOnDemand)
    engine.receive_data(from_server(Opcode.TEXT, b"still parses"))
    assert received_frame(engine).data == b"still parses"


def test_parser_on_demand_relies_on_next_of_the_parser() -> None:
    assert CAN_PARSE_ON_DEMAND
    engine = client()
    engine.parser = ParserOnDemand(engine)  # type: ignore[assignment]
    engine.receive_data(from_server(Opcode.TEXT, b"one")[:2])  # half a frame
    made: Any = engine.parser
    assert made.gi_code is Protocol.parse.__code__  # the engine's, put in place
    assert not between_frames(made)
    engine.receive_data(from_server(Opcode.TEXT, b"one")[2:])
    assert received_frame(engine).data == b"one"
    assert engine.parser is made


def test_parser_on_demand_sees_the_end_of_the_input() -> None:
    engine = client()
    engine.parser = ParserOnDemand(engine)  # type: ignore[assignment]
    engine.receive_eof()
    assert isinstance(parser_failure(engine), EOFError)


def test_release_handshake_keeps_a_parser_inside_a_frame() -> None:
    engine = client()
    engine.receive_data(from_server(Opcode.BINARY, b"xyz")[:3])
    before = engine.parser
    assert not release_handshake(engine)  # so our codec may not take over
    assert engine.parser is before


def test_size_reads_relies_on_the_reader_class() -> None:
    engine = client()
    assert type(engine.reader) is StreamReader
    sizer = track_frame_sizes(engine)
    assert isinstance(sizer, SizingReader) and sizer is engine.reader
    message = from_server(Opcode.BINARY, b"x" * 1000)
    engine.receive_data(message[:100])
    assert sizer.missing == 1000 - (100 - 4)  # the parser's read_exact(1000)
    engine.receive_data(message[100:])
    frame = received_frame(engine)
    assert frame.data == b"x" * 1000 and type(frame.data) is bytes


def test_size_reads_leaves_an_unknown_reader_alone() -> None:
    engine = client()
    engine.reader = SizingReader()  # not exactly the engine's class
    assert track_frame_sizes(engine).missing == 0
    assert type(engine.reader) is SizingReader


def test_send_uncompressed_relies_on_the_extensions_list() -> None:
    engine = Protocol(Side.SERVER)  # sends unmasked frames
    deflate = PerMessageDeflate(False, False, 15, 15)
    engine.extensions = [deflate]
    engine.send_binary(b"a" * 100)
    [compressed] = engine.data_to_send()
    assert compressed[0] & 0x40  # RSV1: compressed
    send_uncompressed(engine, engine.send_binary, b"a" * 100, True)
    [plain] = engine.data_to_send()
    assert not plain[0] & 0x40 and plain.endswith(b"a" * 100)
    assert engine.extensions == [deflate]


def test_shared_frames_rely_on_the_writes_list() -> None:
    assert CAN_QUEUE_FRAMES
    engine = Protocol(Side.SERVER)
    frame = Frame(Opcode.TEXT, b"shared").serialize(mask=False)
    queue_frame(engine, frame)
    assert engine.data_to_send() == [frame]


def test_parser_failure_relies_on_parser_exc() -> None:
    engine = client()
    assert parser_failure(engine) is None
    engine.receive_data(bytes([0x83, 0x00]))  # a reserved opcode
    assert engine.state is CLOSING
    assert isinstance(parser_failure(engine), Exception)
    assert parser_failure(engine) is engine.parser_exc


def test_the_engine_answers_pings_itself() -> None:
    # Not a hook: the documented behaviour by which a connection knows that a
    # ping it received needs a write (see WebSocketConnection._pong_due).
    engine = client()
    engine.receive_data(from_server(Opcode.PING, b"hi"))
    assert received_frame(engine).opcode is Opcode.PING
    [pong] = engine.data_to_send()
    assert pong[0] == 0x8A  # a final pong (masked, as a client sends it)
