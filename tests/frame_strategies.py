"""Hypothesis strategies for frame streams, shared by the codec's tests.

A stream is a list of frames, mostly well-formed, with every field open to
mischief (reserved opcodes and bits, the wrong mask bit, fragmentation out
of order, oversized and fragmented control frames, invalid UTF-8, close
payloads of every kind) plus some raw garbage and frames cut short (the
rest never comes); :func:`splits` cuts the joined stream into the reads a
connection might see.
"""

from __future__ import annotations

import itertools
import struct
import zlib

from hypothesis import strategies as st
from raw_peer import BINARY, CLOSE, CONT, PING, PONG, TEXT, close_payload, wire_frame

#: The message size limit the codec's tests use.
LIMIT = 300

_close_codes = st.sampled_from(
    [1000, 1001, 1002, 1007, 3000, 4999, 0, 999, 1005, 1006, 1016, 5000]
)
_texts = st.one_of(
    st.text(max_size=30).map(str.encode),
    st.sampled_from(
        [b"\xff", b"\xed\xa0\x80", b"\xc3", b"\xf4\x90\x80\x80", "é€😀".encode()]
    ),
)
payloads = st.one_of(
    st.binary(max_size=40),
    _texts,
    st.integers(LIMIT - 2, LIMIT + 2).map(lambda n: b"x" * n),
    st.sampled_from([b"y" * 125, b"y" * 126, b"z" * 70000]),
)
_close_payloads = st.one_of(
    st.builds(close_payload, _close_codes, _texts),
    st.binary(max_size=3),
)


def deflate(data: bytes) -> bytes:
    """Compress one message for permessage-deflate (RFC 7692)."""
    compressor = zlib.compressobj(wbits=-12)
    out = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return out[:-4]


@st.composite
def frames(
    draw: st.DrawFn,
    *,
    masked: bool,
    deflate_on: bool = False,
    data_payloads: st.SearchStrategy[bytes] = payloads,
    close_payloads: st.SearchStrategy[bytes] = _close_payloads,
) -> bytes:
    """One frame, valid or not; ``data_payloads`` and ``close_payloads``
    draw the payloads of data and close frames."""
    opcode = draw(
        st.sampled_from([TEXT, TEXT, BINARY, BINARY, CONT, CONT, PING, PONG, CLOSE])
        | st.integers(0, 15)
    )
    if opcode == CLOSE:
        payload = draw(close_payloads)
    elif opcode in (PING, PONG):
        payload = draw(st.binary(max_size=20) | st.just(b"p" * 126))
    else:
        payload = draw(data_payloads)
    rsv = draw(st.sampled_from([0] * 12 + [4, 2, 1]))
    if deflate_on and opcode in (TEXT, BINARY) and draw(st.booleans()):
        rsv, payload = 4, deflate(payload)
    key = draw(st.binary(min_size=4, max_size=4)) if masked else None
    if draw(st.integers(0, 29)) == 0:
        key = None if masked else b"\0\0\0\0"  # the wrong mask bit
    fin = draw(st.sampled_from([True, True, False]))
    return wire_frame(opcode, payload, fin=fin, rsv=rsv, key=key)


@st.composite
def fragmented_message(draw: st.DrawFn, *, masked: bool) -> list[bytes]:
    """A message cut into fragments, maybe with pings between them: frames."""
    text = draw(st.booleans())
    data = draw(_texts if text else st.binary(max_size=60))
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=4)))
    parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    out: list[bytes] = []
    for i, part in enumerate(parts):
        key = draw(st.binary(min_size=4, max_size=4)) if masked else None
        if i and draw(st.integers(0, 3)) == 0:
            out.append(wire_frame(PING, b"between", key=key))
        opcode = CONT if i else TEXT if text else BINARY
        out.append(wire_frame(opcode, part, fin=i == len(parts) - 1, key=key))
    return out


@st.composite
def cut_short(draw: st.DrawFn, *, masked: bool) -> list[bytes]:
    """A text message, maybe after a fragment, whose last frame stops
    partway through: frames."""
    key = draw(st.binary(min_size=4, max_size=4)) if masked else None
    first, last = draw(_texts), draw(_texts | payloads)
    out = []
    if draw(st.booleans()):
        out.append(wire_frame(TEXT, first, fin=False, key=key))
    opcode = CONT if out else TEXT
    data = wire_frame(opcode, last + b"rest", fin=draw(st.booleans()), key=key)
    out.append(data[: draw(st.integers(1, len(data) - 1))])
    return out


def pieces(*, masked: bool, deflate_on: bool = False) -> st.SearchStrategy[list[bytes]]:
    """What a peer sends after the handshake: frames, fragmented messages and
    garbage too short to hold a frame and more."""
    piece = st.one_of(
        *[frames(masked=masked, deflate_on=deflate_on).map(lambda f: [f])] * 5,
        fragmented_message(masked=masked),
        cut_short(masked=masked),
        st.binary(min_size=1, max_size=3).map(lambda b: [b]),
        st.sampled_from(
            [
                b"\x82\xff" + b"\x7f" + b"\xff" * 7,  # a 64-bit length, MSB set
                b"\x82\xff" + struct.pack("!Q", 2**40) + b"abcd",
                b"\x81\xfe\xff\xff",
                b"\x88\x80",
            ]
        ).map(lambda b: [b]),
    )
    return st.lists(piece, max_size=6).map(lambda ps: [f for p in ps for f in p])


def streams(*, masked: bool, deflate_on: bool = False) -> st.SearchStrategy[bytes]:
    """:func:`pieces` joined into one byte string."""
    return pieces(masked=masked, deflate_on=deflate_on).map(b"".join)


def splits(data: bytes) -> st.SearchStrategy[list[bytes]]:
    """``data`` cut into arbitrary non-empty reads."""

    def cut(offsets: list[int]) -> list[bytes]:
        bounds = [0, *sorted(offsets), len(data)]
        return [data[a:b] for a, b in itertools.pairwise(bounds) if b > a]

    return st.lists(st.integers(0, len(data)), max_size=8).map(cut)
