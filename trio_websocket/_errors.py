"""Close reasons and the exceptions users catch.

These classes are part of the public face of the package: they never expose
the protocol engine's own types, and they stay picklable and copyable.
"""

from __future__ import annotations

from collections.abc import Sequence

# Names of the close codes registered in RFC 6455 section 7.4.1 and by IANA.
_CLOSE_CODE_NAMES = {
    1000: "NORMAL_CLOSURE",
    1001: "GOING_AWAY",
    1002: "PROTOCOL_ERROR",
    1003: "UNSUPPORTED_DATA",
    1005: "NO_STATUS_RCVD",
    1006: "ABNORMAL_CLOSURE",
    1007: "INVALID_FRAME_PAYLOAD_DATA",
    1008: "POLICY_VIOLATION",
    1009: "MESSAGE_TOO_BIG",
    1010: "MANDATORY_EXT",
    1011: "INTERNAL_ERROR",
    1012: "SERVICE_RESTART",
    1013: "TRY_AGAIN_LATER",
    1014: "BAD_GATEWAY",
    1015: "TLS_HANDSHAKE",
}


def close_code_name(code: int) -> str:
    """Return the standard name of a close code, or the name of its range."""
    if code in _CLOSE_CODE_NAMES:
        return _CLOSE_CODE_NAMES[code]
    if 1000 <= code <= 2999:
        return "RFC_RESERVED"
    if 3000 <= code <= 3999:
        return "IANA_RESERVED"
    if 4000 <= code <= 4999:
        return "PRIVATE_RESERVED"
    return "INVALID_CODE"


class CloseReason:
    """Why a WebSocket connection closed: a close code and an optional reason.

    ``name`` is the standard name of the code, for example ``NORMAL_CLOSURE``
    for 1000 or ``MESSAGE_TOO_BIG`` for 1009. Codes without a registered name
    are named after their range (``RFC_RESERVED``, ``IANA_RESERVED``,
    ``PRIVATE_RESERVED``) or ``INVALID_CODE``.
    """

    def __init__(self, code: int, reason: str | None) -> None:
        self._code = code
        self._name = close_code_name(code)
        self._reason = reason

    @property
    def code(self) -> int:
        """The numeric close code."""
        return self._code

    @property
    def name(self) -> str:
        """The standard name of the close code."""
        return self._name

    @property
    def reason(self) -> str | None:
        """The reason text sent with the close frame, if any."""
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CloseReason):
            return NotImplemented
        return (self.code, self.reason) == (other.code, other.reason)

    def __hash__(self) -> int:
        return hash((self.code, self.reason))

    def __repr__(self) -> str:
        return (
            f"{self.__class__.__name__}<code={self.code}, name={self.name}, "
            f"reason={self.reason}>"
        )


class ConnectionClosed(Exception):
    """Raised by an operation on a connection that is closed or closing.

    ``reason`` is the connection's :class:`CloseReason`. It is a plain
    attribute: a subclass may set it itself without calling ``__init__``.
    """

    reason: CloseReason | None

    def __init__(self, reason: CloseReason | None) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return repr(getattr(self, "reason", None))

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}<{getattr(self, 'reason', None)!r}>"


class HandshakeError(Exception):
    """The opening handshake failed: the server's answer was not an upgrade.

    This is also the base class of :class:`ConnectionTimeout`,
    :class:`DisconnectionTimeout` and :class:`ConnectionRejected`. When the
    failure has an underlying cause (a TLS certificate error, a malformed
    response), it is chained as ``__cause__``.
    """


class ConnectionTimeout(HandshakeError):
    """Opening the connection (TCP, TLS and handshake) took too long."""


class DisconnectionTimeout(HandshakeError):
    """The closing handshake took too long; the connection was aborted."""


class ConnectionRejected(HandshakeError):
    """The server answered the handshake with an HTTP response other than 101.

    ``status_code``, ``headers`` (a sequence of ``(bytes, bytes)`` pairs with
    lower-case names) and ``body`` (bytes, possibly empty) describe the
    server's response.
    """

    def __init__(
        self,
        status_code: int,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None,
    ) -> None:
        super().__init__(status_code, headers, body)
        self.status_code = status_code
        self.headers = headers
        self.body = body

    def __str__(self) -> str:
        return f"server rejected the WebSocket upgrade with HTTP {self.status_code}"

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}<status_code={self.status_code}>"


class ProxyError(HandshakeError):
    """The proxy refused to open a tunnel to the WebSocket server.

    Raised for an HTTP ``CONNECT`` answer other than 2xx (``status_code`` is
    then its status, for example 407 when the proxy wants credentials or
    rejects the ones given) and for a SOCKS5 refusal or authentication
    failure (``status_code`` is ``None``). A proxy that cannot be reached at
    all raises :exc:`OSError`, as a server that cannot be reached does.
    """

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message, status_code)
        self.message = message
        self.status_code = status_code

    def __str__(self) -> str:
        return self.message


class RedirectError(HandshakeError):
    """A redirect could not be followed.

    Raised when the server redirects from ``wss://`` to ``ws://`` (a
    downgrade, never followed), to a URL that is not ``ws``, ``wss``,
    ``http`` or ``https``, or once more than ``max_redirects`` redirects
    were followed (a loop). ``url`` is the rejected target and
    ``__cause__`` the :exc:`ConnectionRejected` that carried it.
    """

    def __init__(self, message: str, url: str) -> None:
        super().__init__(message, url)
        self.message = message
        self.url = url

    def __str__(self) -> str:
        return self.message
