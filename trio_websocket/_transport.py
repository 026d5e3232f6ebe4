"""Moving bytes for a connection, with a fast path for plain TCP sockets.

Every ``send_all`` and successful ``receive_some`` of a :class:`trio.SocketStream`
ends with a trip through Trio's scheduler. For a WebSocket connection that
trip costs more than the system call itself: a small message is one write,
and a reader that has just been woken by data does not need to yield again
before processing it. So for plain TCP sockets the connection calls
``os.read`` / ``os.write`` on the non-blocking descriptor and parks only
when the kernel says it would block; every other stream (TLS, Unix
sockets wrapped differently, in-memory streams) goes through its own
methods.

Fairness is kept explicitly: every read yields once (before or after it
looks, see :meth:`SocketTransport.receive`), and a writer that has written
a few dozen times without waiting yields once, so a flood in either
direction cannot starve other tasks. A consumer waiting for its next
message yields *before* the read: on a busy server the message usually
arrives while the other tasks run, so the read finds it instead of failing
and parking the task on epoll.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

import trio

_Arg = TypeVar("_Arg")
_Result = TypeVar("_Result")

#: What a read asks for when the caller gives no size (Trio's receive_some
#: default too).
DEFAULT_READ_SIZE = 65536
# A writer yields to the scheduler at least once every this many writes.
_WRITES_PER_YIELD = 32
# errno values that mean the peer is gone rather than a bug of ours.
_BROKEN = frozenset(
    {errno.EPIPE, errno.ECONNRESET, errno.ECONNABORTED, errno.ENOTCONN, errno.ETIMEDOUT}
)


class StreamTransport:
    """The general case: delegate to the stream's own methods."""

    # Whether a cancelled receive() never loses data, so that any task may
    # read (a TLS stream cancelled mid-record cannot promise that).
    receive_is_cancel_safe = False

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.closed = False

    async def aclose(self) -> None:
        """Close the stream gracefully (once)."""
        if not self.closed:
            self.closed = True
            await self.stream.aclose()

    async def aclose_forcefully(self) -> None:
        """Close the stream at once, without any goodbye (once)."""
        if not self.closed:
            self.closed = True
            await trio.aclose_forcefully(self.stream)

    async def receive(
        self, max_bytes: int | None, *, yield_first: bool = False
    ) -> bytes | bytearray:
        """Up to ``max_bytes`` bytes, ``b""`` at the end of the stream.

        ``yield_first`` only matters for :class:`SocketTransport`; the
        stream's own ``receive_some`` decides when it yields.
        """
        return await self.stream.receive_some(max_bytes)

    async def receive_within(
        self, max_bytes: int | None, seconds: float
    ) -> bytes | bytearray | None:
        """:meth:`receive`, or ``None`` if nothing came for ``seconds`` (only
        :class:`SocketTransport` gives up; here it waits as long as it takes)."""
        return await self.receive(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write all of ``data``."""
        await self.stream.send_all(data)


class SocketTransport(StreamTransport):
    """Plain TCP: system calls on the descriptor, parking only when needed."""

    receive_is_cancel_safe = True

    def __init__(self, stream: trio.SocketStream) -> None:
        super().__init__(stream)
        self._socket = stream.socket
        self._writes_without_yield = 0

    async def aclose(self) -> None:
        """Close the socket now: a TCP close needs no waiting, so no yield."""
        self.close_now()

    async def aclose_forcefully(self) -> None:
        """The same as :meth:`aclose` for a plain socket."""
        await self.aclose()

    def fileno(self) -> int:
        """The socket's descriptor (:exc:`trio.ClosedResourceError` once closed)."""
        fileno = self._socket.fileno()
        if fileno == -1:
            raise trio.ClosedResourceError("the socket was closed")
        return fileno

    def close_now(self) -> None:
        """:meth:`aclose`, for callers that cannot await."""
        self.closed = True
        self._socket.close()

    async def receive(
        self, max_bytes: int | None, *, yield_first: bool = False
    ) -> bytes | bytearray:
        """Read what the kernel has; wait only if it has nothing.

        Every read yields to the scheduler once, before or after it looks.
        ``yield_first`` is for a task that comes back for the peer's next
        message right after its own work (a consumer that just answered):
        while the other tasks run, the message has often arrived, and the
        read finds it instead of failing and parking on epoll. Otherwise the
        read looks first, which spares a task that has to wait anyway (for
        a round trip, say) a pass through the scheduler.
        """
        size = max_bytes or DEFAULT_READ_SIZE
        if yield_first:
            # Nothing is read before the yield: a cancel there loses nothing.
            await trio.lowlevel.checkpoint()
        data = _system_call(os.read, self.fileno(), size)
        if data is not None and not yield_first:
            # Yield after, but never raise Cancelled: that would lose what
            # was read.
            await trio.lowlevel.cancel_shielded_checkpoint()
        while data is None:  # None again after a spurious wake-up
            await trio.lowlevel.wait_readable(self._socket)
            data = _system_call(os.read, self.fileno(), size)
        return data

    async def receive_within(
        self, max_bytes: int | None, seconds: float
    ) -> bytes | bytearray | None:
        """:meth:`receive` (reading first), or ``None`` if the socket stays
        silent for ``seconds`` (then nothing was read)."""
        data = _system_call(os.read, self.fileno(), max_bytes or DEFAULT_READ_SIZE)
        if data is not None:
            await trio.lowlevel.cancel_shielded_checkpoint()  # as receive()
            return data
        with trio.move_on_after(seconds) as waiting:
            await trio.lowlevel.wait_readable(self._socket)
        if waiting.cancelled_caught:
            return None
        return await self.receive(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write everything, waiting for buffer space only when it runs out."""
        await trio.lowlevel.checkpoint_if_cancelled()
        sent = _system_call(os.write, self.fileno(), data)
        if sent == len(data):  # the common case: the kernel took it all
            self._writes_without_yield += 1
            if self._writes_without_yield >= _WRITES_PER_YIELD:
                self._writes_without_yield = 0
                await trio.lowlevel.cancel_shielded_checkpoint()
            return
        view = memoryview(data)[sent or 0 :]
        while view:
            await trio.lowlevel.wait_writable(self._socket)
            sent = _system_call(os.write, self.fileno(), view)
            if sent is not None:
                view = view[sent:]
        self._writes_without_yield = 0

    def write_nowait(self, data: bytes) -> int:
        """Write what the kernel takes now, without waiting; return how much."""
        return _system_call(os.write, self.fileno(), data) or 0


def _system_call(
    call: Callable[[int, _Arg], _Result], fileno: int, arg: _Arg
) -> _Result | None:
    """``os.read`` or ``os.write``: ``None`` if it would block, Trio's
    exceptions for a broken peer.

    Callers wait *after* this returns, never inside an ``except`` block: a
    task suspended there keeps the exception and its traceback alive, which
    costs every idle connection about a kilobyte.
    """
    try:
        return call(fileno, arg)
    except BlockingIOError:
        return None
    except OSError as exc:
        raise _translate(exc) from exc


def _translate(exc: OSError) -> Exception:
    if exc.errno in _BROKEN:
        return trio.BrokenResourceError(f"the connection broke: {exc}")
    if exc.errno == errno.EBADF:
        return trio.ClosedResourceError("the socket was closed")
    return exc


def transport_for(stream: trio.abc.Stream) -> StreamTransport:
    """The fastest correct way to move bytes over ``stream``."""
    if type(stream) is trio.SocketStream and os.name == "posix":
        return SocketTransport(stream)
    return StreamTransport(stream)
