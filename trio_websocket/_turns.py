"""Who reads the socket: the reader task, or the consumer waiting for a message.

A connection needs a reader task, so that pings are answered and a close is
noticed while nobody calls ``get_message``. But when somebody does wait for a
message, the reader task is a detour: the network wakes the reader, the reader
wakes the consumer, and that second wake-up costs about as much as everything
else a small message needs. So on plain TCP sockets the two take turns:

* While the reader task has the socket, a consumer waits on the message queue
  as usual. When a read hands messages to every waiting consumer, the reader
  *lends* them the socket: it sleeps and leaves the socket to them.
* A consumer that finds the queue empty while the socket is lent reads the
  socket itself, feeds the engine, and returns the first message. Control
  frames it reads are handled as the reader would handle them, except that
  anything needing a write (a pong, the answer to a close) wakes the reader
  to write it, so a consumer's cancellation can never cut a frame in half.
* The reader wakes up when it is needed: a consumer waits while another
  reads, a ping waits for its pong, the connection is closing, the input
  ended, or the engine has frames to send. It also wakes up when consumers
  have not read for a while (:data:`QUIET_INTERVAL` at first, growing while
  they keep reading), so an application that stops reading still answers
  pings within about a second. While a consumer is blocked reading, the
  reader sleeps without a deadline: an idle connection costs no wake-ups.
* Where the reader may rest (see ``_idle``), it does not even sleep: once a
  consumer has been blocked reading for a whole interval, the reader task
  ends and leaves the socket lent. It starts again when the consumer's turn
  ends (it got a message, or gave up), or when it is woken while no
  consumer reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

# How long consumers may go without reading before the reader task takes the
# socket back. Each wake-up of a reader that lent the socket costs about as
# much as a small message, so while consumers keep reading the interval
# doubles, up to the longest; twice that is the most a ping or close from
# the peer can wait for an answer while the application is busy between two
# get_message() calls.
QUIET_INTERVAL = 0.1
LONGEST_QUIET_INTERVAL = 0.5


class ReadTurns:
    """Takes turns at the socket between the reader task and consumers."""

    __slots__ = (
        "_lent",
        "_lent_scope",
        "_reader_needed",
        "_reader_rests",
        "_reads",
        "_resume_reader",
        "consumer_reading",
    )

    def __init__(
        self, reader_needed: Callable[[], bool], resume_reader: Callable[[], None]
    ) -> None:
        self._reader_needed = reader_needed
        self._resume_reader = resume_reader
        self.consumer_reading = False
        self._lent = False
        self._reader_rests = False  # ended, leaving the socket lent
        self._reads = 0  # consumer reads finished, to tell a quiet interval
        self._lent_scope: trio.CancelScope | None = None  # while lent

    @property
    def consumer_may_read(self) -> bool:
        """True when the socket is free for a consumer to read."""
        return self._lent and not self.consumer_reading

    def start_consumer_turn(self) -> None:
        """A consumer starts reading the socket (see :attr:`consumer_may_read`)."""
        self.consumer_reading = True

    def end_consumer_turn(self) -> None:
        """The consumer stopped reading; wake the reader if it is needed."""
        self.consumer_reading = False
        self._reads += 1
        if self._lent:
            self._after_consumer_turn()

    def _after_consumer_turn(self) -> None:
        if self._reader_rests:
            self._take_back_from_rest()
            return
        scope = self._lent_scope
        assert scope is not None
        if self._reader_needed():
            scope.cancel()
        elif scope.deadline == math.inf:
            # Start the quiet interval; later reads only add to the count.
            scope.deadline = trio.current_time() + QUIET_INTERVAL

    def wake_reader(self) -> None:
        """Make a reader that lent the socket look again at whether it is
        needed (a resting one starts again once no consumer reads)."""
        if self._lent_scope is not None:
            self._lent_scope.cancel()
        elif self._reader_rests and not self.consumer_reading:
            self._take_back_from_rest()

    def _take_back_from_rest(self) -> None:
        self._reader_rests = self._lent = False
        self._resume_reader()

    async def lend_socket_to_consumers(self, *, may_rest: bool = False) -> bool:
        """Leave the socket to consumers until the reader task is needed.

        Returns True if the reader task should end instead (``may_rest``):
        the socket stays lent until :meth:`end_consumer_turn` or
        :meth:`wake_reader` starts the reader again.
        """
        self._lent = True
        try:
            reads = -1
            interval = QUIET_INTERVAL
            while True:
                active = reads != self._reads
                if self.consumer_reading:
                    # Reading for a whole interval means idle: sleep until its
                    # turn ends (which sets a deadline) or somebody wakes us,
                    # or rest.
                    if not active and may_rest and not self._reader_needed():
                        self._reader_rests = True
                        return True
                    deadline = interval if active else math.inf
                elif active and not self._reader_needed():
                    deadline = interval
                else:
                    return False
                if active:  # consumers keep reading: look less often
                    interval = min(2 * interval, LONGEST_QUIET_INTERVAL)
                reads = self._reads
                deadline += trio.current_time()
                self._lent_scope = trio.CancelScope(deadline=deadline)
                with self._lent_scope:
                    await trio.sleep_forever()
        finally:
            self._lent = self._reader_rests
            self._lent_scope = None
