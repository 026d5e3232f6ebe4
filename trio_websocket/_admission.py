"""Who may connect: origins, credentials, caps, and request size limits.

A server checks every client against an :class:`Admission` policy before
its handler runs; a client that fails a check gets a plain HTTP error
response (with ``Content-Length`` and ``Connection: close``) and the handler
is never called.

The checks happen in this order:

0. Before a TCP connection is accepted: the cap on handshakes in progress
   (``max_handshakes``). While it is reached the server accepts nobody;
   new connections wait in the operating system's backlog.
1. When the TCP connection arrives: the cap on concurrent connections
   (503) and the cap on handshakes in progress from the client's IP
   address (429). These are answered without reading the request.
2. While the request is read: the request line and header size limits
   (414 and 431).
3. Once the request has arrived, for WebSocket upgrades only: the
   ``Origin`` header (403), then basic auth (401). Plain HTTP requests
   given to a server's ``http_handler`` are that handler's business.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

import trio

from ._url import Endpoint

#: Default of ``Admission.max_handshakes``.
MAX_HANDSHAKES = 1000

#: Allowed ``Origin`` values: exact strings, compiled regular expressions
#: (which must match the whole value), or ``None`` for "no Origin header".
OriginRule = str | re.Pattern[str] | None
#: Basic auth: a ``{user: password}`` mapping or a ``check(user, password)``.
Credentials = Mapping[str, str] | Callable[[str, str], bool]


class CheckedRequest(Protocol):
    """What the origin and credential checks read of a request.

    A :class:`~trio_websocket.WebSocketRequest` is one.
    """

    @property
    def headers(self) -> list[tuple[bytes, bytes]]:
        """Every request header, as ``(name, value)`` byte pairs."""


@dataclass(frozen=True)
class Admission:
    """A server's admission policy; every limit but ``max_handshakes`` is off
    by default.

    Pass it as ``serve_websocket(..., admission=Admission(...))`` or to
    :class:`WebSocketServer`::

        admission = Admission(
            origins={"https://example.com", re.compile(r"https://.*\\.example\\.com")},
            basic_auth={"alice": "s3cret"},
            max_connections=10_000,
            retry_after=30,
        )

    ``origins``
        The ``Origin`` values a WebSocket upgrade may carry (403 otherwise).
        Browsers always send one; include ``None`` to also admit clients
        that send none (most non-browser clients). ``None`` (the default)
        admits every origin.
    ``basic_auth``
        Require HTTP basic auth (401 with ``WWW-Authenticate`` otherwise):
        a mapping of user names to passwords, or a function
        ``check(user, password) -> bool``.
    ``realm``
        The realm named in the ``WWW-Authenticate`` challenge.
    ``max_connections``
        How many clients the server serves at once, from TCP accept to
        close, handshakes included; one more gets 503.
    ``retry_after``
        Seconds sent in a ``Retry-After`` header with 503 and 429 refusals.
    ``max_handshakes``
        How many clients may be in the handshake (TCP accepted, request not
        yet complete) at once; default 1000, ``None`` for no limit. While
        that many are, the server stops accepting connections: the next
        ones wait in the operating system's listen backlog and are served
        as handshakes finish or time out (see ``handshake_timeout``). This
        bounds what slow clients that never finish their request can hold.
    ``max_handshakes_per_ip``
        How many clients from one IP address may be in the handshake (TCP
        accepted, request not yet complete) at once; one more gets 429.
        This stops one host from holding many half-open requests.
    ``max_request_line``
        Longest request line (``GET /path HTTP/1.1``) in bytes; 414 beyond.
    ``max_header_size``
        Largest total size of the header lines in bytes; 431 beyond.

    The engine has its own fixed limits (8192 bytes per line, 128 headers);
    these two can only make them stricter.
    """

    origins: Collection[OriginRule] | None = None
    basic_auth: Credentials | None = None
    realm: str = "trio-websocket"
    max_connections: int | None = None
    retry_after: int | None = None
    max_handshakes: int | None = MAX_HANDSHAKES
    max_handshakes_per_ip: int | None = None
    max_request_line: int | None = None
    max_header_size: int | None = None


@dataclass(frozen=True)
class Refusal:
    """An HTTP error response that refuses a client."""

    status_code: int
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


class Gate:
    """Applies one :class:`Admission` policy and keeps its counters.

    A server has one gate; :meth:`connection` and :meth:`handshake` are
    context managers that hold a slot for as long as the client is in that
    stage.
    """

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.slots = HandshakeSlots(admission.max_handshakes)
        self._connections = 0
        self._handshakes: Counter[str] = Counter()

    def admit_connection(self, remote: Endpoint | str) -> Refusal | None:
        """Admit a new TCP client (taking a slot) or return why not.

        An admitted client must give its slot back with
        :meth:`release_connection`. (Not a context manager: one held open per
        connection would cost each idle connection a generator frame.)
        """
        refusal = self._refuse_connection(_ip(remote))
        if refusal is None:
            self._connections += 1
        return refusal

    def release_connection(self) -> None:
        """Give back the slot of a client that :meth:`admit_connection` took."""
        self._connections -= 1

    @property
    def tracks_addresses(self) -> bool:
        """Whether the policy needs each client's address (per-IP limits)."""
        return self.admission.max_handshakes_per_ip is not None

    @contextmanager
    def handshake(self, remote: Endpoint | str) -> Iterator[None]:
        """Count a handshake in progress from the client's address."""
        ip = _ip(remote)
        if not ip:
            yield
            return
        self._handshakes[ip] += 1
        try:
            yield
        finally:
            self._handshakes[ip] -= 1
            if not self._handshakes[ip]:
                del self._handshakes[ip]

    def _refuse_connection(self, ip: str) -> Refusal | None:
        policy = self.admission
        if _reached(self._connections, policy.max_connections):
            return self._try_later(503, b"Too many connections, try again later.\n")
        if ip and _reached(self._handshakes[ip], policy.max_handshakes_per_ip):
            return self._try_later(429, b"Too many handshakes from your address.\n")
        return None

    def _try_later(self, status_code: int, body: bytes) -> Refusal:
        retry_after = self.admission.retry_after
        headers = () if retry_after is None else (("Retry-After", str(retry_after)),)
        return Refusal(status_code, headers, body)

    def refuse_request(self, request: CheckedRequest) -> Refusal | None:
        """Check a WebSocket upgrade request's origin and credentials."""
        policy = self.admission
        if policy.origins is not None and not _origin_allowed(request, policy.origins):
            return Refusal(403, body=b"Origin not allowed.\n")
        if policy.basic_auth is not None and not _authorized(
            request, policy.basic_auth
        ):
            challenge = f'Basic realm="{policy.realm}", charset="UTF-8"'
            return Refusal(
                401, (("WWW-Authenticate", challenge),), b"Authentication required.\n"
            )
        return None


class HandshakeSlots:
    """The cap on clients between TCP accept and a complete request.

    A server's accept loops wait for a free slot before each accept and
    take it; the client's task gives it back when its handshake is over.
    """

    def __init__(self, limit: int | None) -> None:
        self._limit = math.inf if limit is None else limit
        self._taken = 0
        self._freed = trio.lowlevel.ParkingLot()

    async def wait_for_one(self) -> None:
        """Wait until a slot is free (returns at once if one is)."""
        while self._taken >= self._limit:
            await self._freed.park()

    def take(self) -> None:
        """Take a slot for a client just accepted (even if none is free)."""
        self._taken += 1

    def give_back(self) -> None:
        """Give back a slot that :meth:`take` took."""
        self._taken -= 1
        self._freed.unpark()


def _reached(count: int, limit: int | None) -> bool:
    return limit is not None and count >= limit


def _ip(remote: Endpoint | str) -> str:
    """The client's IP address as text; empty for non-IP transports."""
    return str(remote.address) if isinstance(remote, Endpoint) else ""


def _header_values(request: CheckedRequest, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in request.headers if key == name]


def _origin_allowed(request: CheckedRequest, rules: Collection[OriginRule]) -> bool:
    values = _header_values(request, b"origin")
    if len(values) > 1:
        return False
    if not values:
        return None in rules
    return any(_origin_matches(rule, values[0]) for rule in rules)


def _origin_matches(rule: OriginRule, origin: str) -> bool:
    if isinstance(rule, re.Pattern):
        return rule.fullmatch(origin) is not None
    return rule == origin


def _authorized(request: CheckedRequest, credentials: Credentials) -> bool:
    values = _header_values(request, b"authorization")
    if len(values) != 1:
        return False
    user_password = _basic_credentials(values[0])
    if user_password is None:
        return False
    user, password = user_password
    if callable(credentials):
        return bool(credentials(user, password))
    expected = credentials.get(user)
    return expected is not None and hmac.compare_digest(
        expected.encode(), password.encode()
    )


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """Decode ``Basic base64(user:password)``, or None if malformed."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None
