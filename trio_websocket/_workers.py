"""Several worker processes serving one port, and the supervisor that runs them.

:func:`run_workers` is the supervisor: it opens one listening socket per
worker and address with ``SO_REUSEPORT`` (so the kernel spreads incoming
connections over them), starts one process per socket with the
``multiprocessing`` "spawn" method, and keeps them running:

* a worker that dies is started again on the same socket, after a pause
  that doubles from 0.5 s to 10 s while it keeps dying (logged at WARNING);
  connections the kernel hands its socket meanwhile wait in the backlog;
* SIGINT or SIGTERM shut every worker down gracefully (open connections
  are closed with 1001 within ``grace`` seconds), then it returns;
* SIGHUP replaces the workers one at a time: the new process takes over the
  old one's socket, the supervisor waits until it serves, and only then is
  the old one told to stop. The socket stays open throughout, so no
  connection attempt is refused or reset.

The supervisor keeps a copy of every socket: a worker that stops or dies
never closes one, and what waits in its backlog is left for the next.
"""

from __future__ import annotations

import logging
import math
import pickle
import signal
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ._reuse_port import BACKLOG, bind_reuse_port, listener_on
from ._url import Endpoint

if TYPE_CHECKING:
    from multiprocessing.connection import Connection
    from multiprocessing.process import BaseProcess

    from ._server import Handler

logger = logging.getLogger("trio-websocket")

#: The pause before restarting a worker that died: doubled while it keeps dying.
FIRST_RESTART_DELAY = 0.5
LONGEST_RESTART_DELAY = 10.0
#: A worker that served this long before dying is restarted after the first delay.
_STABLE_SECONDS = LONGEST_RESTART_DELAY
#: How long a new worker may take to start serving before it counts as failed.
_START_TIMEOUT = 60.0
#: How long a stopping worker may overrun ``grace`` before it is killed.
_KILL_MARGIN = 5.0
#: How long a worker handing over waits for its clients' handshakes to finish.
_HANDOVER_SECONDS = 1.0

SSLContextFactory = Callable[[], ssl.SSLContext]
Lifespan = Callable[[], AbstractAsyncContextManager[object]]

_index: int | None = None


def worker_index() -> int | None:
    """This process's index among :func:`run_workers`' workers, or ``None``.

    Workers are numbered from 0 to ``workers - 1``; a worker that is
    restarted, or replaced on SIGHUP, keeps its number. Outside a worker
    process (a plain :func:`serve_websocket`, the supervisor) it is ``None``.
    Meant for logs and metrics::

        logger.info("worker %s: %s connected", worker_index(), request.remote)
    """
    return _index


# -- Inside a worker process ---------------------------------------------------


class _SharedListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener on a socket the supervisor keeps open, shared with a successor.

    On a handover the server must not empty the backlog (it would refuse
    those clients with 503, while the next worker is ready to serve them):
    the server looks for a socket through ``transport_listener``, and finds
    none then.
    """

    def __init__(self, inner: trio.abc.Listener[Any]) -> None:
        self._inner = inner
        self.handover = False

    @property
    def transport_listener(self) -> trio.abc.Listener[Any] | None:
        return None if self.handover else self._inner

    async def accept(self) -> trio.abc.Stream:
        stream: trio.abc.Stream = await self._inner.accept()
        return stream

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Spec:
    """What a worker needs to serve; pickled to each worker process."""

    def __init__(
        self,
        handler: Handler,
        ssl_context: SSLContextFactory | None,
        grace: float,
        initializer: Callable[[], object] | None,
        options: Mapping[str, Any],
        lifespan: Lifespan | None = None,
    ) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.grace = grace
        self.initializer = initializer
        self.lifespan = lifespan
        self.options = dict(options)


def _worker_main(
    index: int, spec: _Spec, sockets: list[socket.socket], conn: Connection
) -> None:
    """The body of a worker process."""
    global _index
    _index = index
    # Ctrl-C and a hangup reach the whole process group: the supervisor
    # decides what they mean, and tells the workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if spec.initializer is not None:
        spec.initializer()
    ssl_context = spec.ssl_context() if spec.ssl_context is not None else None
    listeners = [
        _SharedListener(listener_on(trio.socket.from_stdlib_socket(sock), ssl_context))
        for sock in sockets
    ]
    trio.run(_serve_worker, spec, listeners, conn)


async def _serve_worker(
    spec: _Spec, listeners: list[_SharedListener], conn: Connection
) -> None:
    from ._server import WebSocketServer

    lifespan = spec.lifespan() if spec.lifespan is not None else nullcontext()
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with lifespan:
            server = WebSocketServer(spec.handler, listeners, **spec.options)
            async with trio.open_nursery() as nursery:
                await nursery.start(server.run)
                conn.send("ready")
                handover = await _wait_for_stop(signals, conn)
                if handover:
                    for listener in listeners:
                        listener.handover = True
                    await server.stop_accepting(handshake_grace=_HANDOVER_SECONDS)
                nursery.start_soon(partial(server.aclose, grace_period=spec.grace))


async def _wait_for_stop(signals: AsyncIterator[int], conn: Connection) -> bool:
    """Wait for a signal or the supervisor's word; True for a handover."""
    handover = False
    async with trio.open_nursery() as nursery:

        async def from_signals() -> None:
            async for _ in signals:
                break
            nursery.cancel_scope.cancel()

        async def from_supervisor() -> None:
            nonlocal handover
            await trio.lowlevel.wait_readable(conn.fileno())
            # "stop", "handover", or the end of the pipe: the supervisor is gone.
            with suppress(EOFError, OSError):
                handover = conn.recv() == "handover"
            nursery.cancel_scope.cancel()

        nursery.start_soon(from_signals)
        nursery.start_soon(from_supervisor)
    return handover


# -- The supervisor ------------------------------------------------------------


class _Process:
    """One worker process, as the supervisor sees it."""

    def __init__(self, index: int, process: BaseProcess, conn: Connection) -> None:
        self.index = index
        self.process = process
        self.conn = conn
        self.started_at = trio.current_time()
        self.ready = trio.Event()
        self.exited = trio.Event()
        self.stopping = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    async def watch(self) -> None:
        """Note when it serves and when it exits; then free its resources."""
        try:
            async with trio.open_nursery() as nursery:

                async def wait_ready() -> None:
                    await trio.lowlevel.wait_readable(self.conn.fileno())
                    with suppress(EOFError, OSError):
                        if self.conn.recv() == "ready":
                            self.ready.set()

                nursery.start_soon(wait_ready)
                await trio.lowlevel.wait_readable(self.process.sentinel)
                nursery.cancel_scope.cancel()
        finally:
            self.process.join()
            self.conn.close()
            self.exited.set()

    def tell(self, word: str) -> None:
        """Ask the worker to stop ("stop"), or to hand its sockets over."""
        self.stopping = True
        if not self.exited.is_set():
            with suppress(OSError):
                self.conn.send(word)

    async def stop(self, word: str, grace: float) -> None:
        """Stop it gracefully; kill it if it overruns the grace period."""
        self.tell(word)
        with trio.move_on_after(grace + _KILL_MARGIN):
            await self.exited.wait()
            return
        logger.warning(
            "worker %d (pid %s) did not stop in time; killing it", self.index, self.pid
        )
        self.kill()
        await self.exited.wait()

    def kill(self) -> None:
        if not self.exited.is_set():
            with suppress(OSError, ValueError):
                self.process.kill()


class _Supervisor:
    def __init__(
        self, spec: _Spec, sockets: list[list[socket.socket]], nursery: trio.Nursery
    ) -> None:
        import multiprocessing

        self._context = multiprocessing.get_context("spawn")
        self._spec = spec
        self._sockets = sockets  # per worker index, one per address
        self._nursery = nursery
        self._current: list[_Process] = []
        self._locks = [trio.Lock() for _ in sockets]
        self._processes: set[_Process] = set()
        self.stopping = False

    def spawn(self, index: int) -> _Process:
        parent, child = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main,
            args=(index, self._spec, self._sockets[index], child),
            name=f"trio-websocket-worker-{index}",
        )
        try:
            process.start()
        finally:
            child.close()
        worker = _Process(index, process, parent)
        self._processes.add(worker)
        self._nursery.start_soon(self._watch, worker)
        logger.info("worker %d started (pid %s)", index, worker.pid)
        return worker

    async def _watch(self, worker: _Process) -> None:
        try:
            await worker.watch()
        finally:
            self._processes.discard(worker)

    async def start_all(self) -> None:
        """Start every worker and wait until each serves."""
        self._current = [self.spawn(index) for index in range(len(self._sockets))]
        for worker in self._current:
            if not await _until_ready(worker):
                raise RuntimeError(
                    f"worker {worker.index} exited with status "
                    f"{worker.process.exitcode} before serving"
                )

    async def keep_running(self, index: int) -> None:
        """Restart worker ``index`` whenever it dies, with a growing pause."""
        delay = FIRST_RESTART_DELAY
        while True:
            worker = self._current[index]
            await worker.exited.wait()
            if self.stopping:
                return
            async with self._locks[index]:
                if self._current[index] is not worker or self.stopping:
                    continue  # replaced on SIGHUP, or shutting down
                if trio.current_time() - worker.started_at >= _STABLE_SECONDS:
                    delay = FIRST_RESTART_DELAY
                logger.warning(
                    "worker %d (pid %s) exited with status %s; restarting it in %g s",
                    index,
                    worker.pid,
                    worker.process.exitcode,
                    delay,
                )
                await trio.sleep(delay)
                delay = min(delay * 2, LONGEST_RESTART_DELAY)
                if self.stopping:
                    return
                self._current[index] = self.spawn(index)

    async def reload(self) -> None:
        """Replace every worker, one at a time."""
        logger.info("SIGHUP: restarting the workers one at a time")
        for index in range(len(self._sockets)):
            if self.stopping:
                return
            async with self._locks[index]:
                old = self._current[index]
                new = self.spawn(index)
                if not await _until_ready(new):
                    logger.warning(
                        "worker %d: its replacement (pid %s) did not start; "
                        "keeping the running one",
                        index,
                        new.pid,
                    )
                    await new.stop("stop", self._spec.grace)
                    continue
                self._current[index] = new
            await old.stop("handover", self._spec.grace)
        logger.info("SIGHUP: every worker restarted")

    async def stop_all(self) -> None:
        """Stop every worker gracefully, at once."""
        self.stopping = True
        async with trio.open_nursery() as nursery:
            for worker in list(self._processes):
                nursery.start_soon(worker.stop, "stop", self._spec.grace)

    def kill_all(self) -> None:
        for worker in self._processes:
            worker.kill()


async def _until_ready(worker: _Process) -> bool:
    """Wait until ``worker`` serves (True), or exits or takes too long (False)."""
    with trio.move_on_after(_START_TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def on(event: trio.Event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(on, worker.ready)
            nursery.start_soon(on, worker.exited)
    return worker.ready.is_set() and not worker.exited.is_set()


async def _supervise(
    spec: _Spec,
    host: str | bytes | None,
    port: int,
    workers: int,
    ready: Callable[[list[Endpoint]], object] | None,
) -> None:
    sockets = await _open_sockets(host, port, workers)
    try:
        with trio.open_signal_receiver(
            signal.SIGINT, signal.SIGTERM, signal.SIGHUP
        ) as signals:
            error: Exception | None = None
            async with trio.open_nursery() as nursery:
                supervisor = _Supervisor(spec, sockets, nursery)
                try:
                    await supervisor.start_all()
                    for index in range(workers):
                        nursery.start_soon(supervisor.keep_running, index)
                    endpoints = [
                        Endpoint(address, port, spec.ssl_context is not None)
                        for address, port, *_ in (s.getsockname() for s in sockets[0])
                    ]
                    logger.info(
                        "%d workers serving on %s",
                        workers,
                        ", ".join(e.url for e in endpoints),
                    )
                    if ready is not None:
                        ready(endpoints)
                    await _follow_signals(supervisor, signals, nursery)
                except Exception as exc:  # raised out of the nursery: not in a group
                    error = exc
                finally:
                    with trio.CancelScope(shield=True):
                        try:
                            await supervisor.stop_all()
                        finally:
                            supervisor.kill_all()
                nursery.cancel_scope.cancel()
            if error is not None:
                raise error
    finally:
        for group in sockets:
            for sock in group:
                sock.close()
    logger.info("every worker has stopped")


async def _follow_signals(
    supervisor: _Supervisor, signals: AsyncIterator[int], nursery: trio.Nursery
) -> None:
    """Reload on SIGHUP; return on SIGINT or SIGTERM."""
    reload_wanted = trio.Event()

    async def reloader() -> None:
        nonlocal reload_wanted
        while True:
            await reload_wanted.wait()
            reload_wanted = trio.Event()
            await supervisor.reload()

    nursery.start_soon(reloader)
    async for signum in signals:
        if signum == signal.SIGHUP:
            reload_wanted.set()
        else:
            logger.info(
                "%s: stopping every worker gracefully", signal.Signals(signum).name
            )
            return


async def _open_sockets(
    host: str | bytes | None, port: int, workers: int
) -> list[list[socket.socket]]:
    """One listening socket per worker and address, all on one port."""
    groups: list[list[socket.socket]] = []
    try:
        for _ in range(workers):
            trio_sockets = await bind_reuse_port(host, port)
            group = [
                socket.socket(s.family, s.type, s.proto, fileno=s.detach())
                for s in trio_sockets
            ]
            groups.append(group)
            for sock in group:
                sock.listen(BACKLOG)
            port = group[0].getsockname()[1]  # port 0: every worker on the same one
    except BaseException:
        for group in groups:
            for sock in group:
                sock.close()
        raise
    return groups


def run_workers(
    handler: Handler,
    host: str | bytes | None,
    port: int,
    ssl_context: SSLContextFactory | None = None,
    *,
    workers: int = 2,
    grace: float = 10.0,
    initializer: Callable[[], object] | None = None,
    lifespan: Lifespan | None = None,
    ready: Callable[[list[Endpoint]], object] | None = None,
    **serve_options: Any,
) -> None:
    """Serve ``host``:``port`` from ``workers`` processes; block until stopped.

    Each worker process runs a :class:`WebSocketServer` with ``handler`` and
    ``serve_options`` (any keyword :func:`serve_websocket` takes, such as
    ``http_handler``, ``admission`` or ``max_message_size``) on its own
    listening socket; the sockets share the port with ``SO_REUSEPORT``, so
    the kernel spreads the connections over the workers (Linux only).

    Worker processes are started with the ``multiprocessing`` "spawn"
    method, so ``handler`` and the options are pickled: use functions
    defined at the top level of a module (not lambdas, closures or
    methods), and call ``run_workers`` under ``if __name__ ==
    "__main__":``. For the same reason ``ssl_context`` is not an
    :class:`ssl.SSLContext` but a function that builds one in each worker,
    such as ``functools.partial(make_context, "cert.pem", "key.pem")``.
    ``initializer()``, if given, runs first in each worker (to configure
    logging, say). ``lifespan()``, if given, must return an async context
    manager: each worker enters it before it starts serving and leaves it
    once its server has stopped, to hold what the handlers share for the
    worker's lifetime (a connection to a pub/sub broker, say); if entering
    it fails, the worker does not start. :func:`worker_index` tells a
    worker its number.

    The supervisor (the calling process) restarts a worker that dies, after
    a pause doubling from 0.5 s to 10 s (logged at WARNING). SIGINT and
    SIGTERM stop every worker gracefully -- each calls
    :meth:`WebSocketServer.aclose`, closing its connections with 1001 and
    waiting up to ``grace`` seconds -- and then ``run_workers`` returns.
    SIGHUP restarts the workers one at a time without refusing a
    connection. ``port=0`` picks one free port for every worker;
    ``ready(endpoints)``, if given, is called in the supervisor once every
    worker serves. Errors opening the sockets (port in use, unknown host)
    are raised as :exc:`OSError` before any worker starts.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(
            "run_workers needs a function that returns the SSL context "
            "(an SSLContext cannot be sent to a worker process)"
        )
    spec = _Spec(handler, ssl_context, grace, initializer, serve_options, lifespan)
    try:
        pickle.dumps(spec)
    except Exception as exc:
        raise TypeError(
            "run_workers sends the handler and options to worker processes, "
            "so they must pickle (define them at the top level of a module): "
            f"{exc}"
        ) from exc
    if not math.isfinite(grace) or grace < 0:
        raise ValueError(f"grace must be a non-negative number of seconds: {grace}")
    trio.run(_supervise, spec, host, port, workers, ready)


__all__: Sequence[str] = ["run_workers", "worker_index"]
