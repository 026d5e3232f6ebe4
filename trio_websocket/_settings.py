"""Per-connection settings, their defaults, and the compression extension.

The established API's parameters (queue size, message size, receive buffer,
timeouts) are spelled out in every entry point's signature. The options this
library adds are accepted by every entry point as keyword arguments and
described once, here, by :class:`ConnectionOptions`. Each entry point turns
all of them into one configuration object with :func:`configure`.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal, TypedDict, TypeVar

from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from ._engine import ClientDeflateFactory

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Default of ``connect_timeout`` and ``disconnect_timeout``, in seconds.
CONN_TIMEOUT = 60
#: Default of ``message_queue_size``.
MESSAGE_QUEUE_SIZE = 1
#: Default of ``max_message_size``, in bytes.
MAX_MESSAGE_SIZE = 2**20
#: Default of ``receive_buffer_size``, in bytes.
RECEIVE_BYTES = 4 * 2**10
#: Default of ``message_queue_bytes``: how far a connection reads ahead of a
#: slow consumer once its queue is full (0: not at all, as before).
MESSAGE_QUEUE_BYTES = 0

# permessage-deflate tuned for memory: a 4 KiB window (12 bits) each way and
# zlib memLevel 5 cost about 49 KiB of zlib state per connection instead of
# about 300 KiB with zlib's defaults, for a ratio within a few percent on
# typical JSON messages (measurements in docs/compression.rst).
_WINDOW_BITS = 12
_COMPRESS_SETTINGS = {"memLevel": 5}
# The factories only hold these settings: every connection shares them.
_CLIENT_EXTENSIONS = (ClientDeflateFactory(_WINDOW_BITS, _COMPRESS_SETTINGS),)
_SERVER_EXTENSIONS = (
    ServerPerMessageDeflateFactory(
        server_max_window_bits=_WINDOW_BITS,
        client_max_window_bits=_WINDOW_BITS,
        compress_settings=_COMPRESS_SETTINGS,
    ),
)

# The largest payload of a control frame (RFC 6455, section 5.5).
_MAX_CONTROL_FRAME = 125

Compression = Literal["deflate"] | None


class ConnectionOptions(TypedDict, total=False):
    """Keyword options every client and server entry point accepts.

    ``compression``
        ``"deflate"`` (the default) offers or accepts permessage-deflate
        (RFC 7692); ``None`` turns it off. ``max_message_size`` bounds the
        *decompressed* size, so a small compressed bomb is refused.
    ``message_queue_bytes``
        While the message queue is full by count, the connection still
        reads on until queued messages total this many bytes, so it keeps
        answering pings and noticing a close while the application is busy
        (a slow consumer is not a dead peer). The default, 0, keeps the
        established behaviour: reading stops as soon as the queue is full.
        ``message_queue_size=0`` with this option gives a queue limited in
        bytes only.
    ``max_fragment_size``
        Largest frame accepted, in bytes (default: no limit beyond
        ``max_message_size``). With ``max_message_size=math.inf``, this
        bounds memory when messages are consumed with ``get_fragments()``.
        Control frames (pings, closes) are always allowed their 125 bytes.
    ``max_message_fragments``
        Most frames one message may arrive in; one more closes the
        connection with 1009 (default: no limit). Memory does not depend on
        it (a message costs about its size however it is split), but each
        frame costs CPU time, and a message of empty frames never ends.
    ``ping_interval``, ``ping_timeout``
        Keepalive: every ``ping_interval`` seconds, send a ping; if its pong
        does not come within ``ping_timeout`` seconds (default: the
        interval), close the connection with code 1011. Off by default.
    """

    compression: Compression
    message_queue_bytes: int
    max_fragment_size: int | None
    max_message_fragments: int | None
    ping_interval: float | None
    ping_timeout: float | None


_OPTION_NAMES = frozenset(ConnectionOptions.__annotations__)

_Config = TypeVar("_Config")


def configure(
    build: Callable[..., _Config], caller: str, arguments: Mapping[str, Any]
) -> _Config:
    """The configuration of one call to the entry point named ``caller``.

    An entry point keeps its parameters explicit, as the spec writes them,
    and passes its ``locals()`` here before assigning any variable: its
    parameters by name and, under ``options``, the keywords it took beyond
    them, which must be :class:`ConnectionOptions`. ``build(caller, ...)``
    gets those of the parameters it has a keyword for, and the options.
    """
    options = arguments["options"]
    _check_options(caller, options)
    keywords = _keywords_of(build)
    given = {name: value for name, value in arguments.items() if name in keywords}
    return build(caller, **given, **options)


@cache
def _keywords_of(build: Callable[..., object]) -> frozenset[str]:
    parameters = inspect.signature(build).parameters.values()
    return frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)


def _check_options(caller: str, options: Mapping[str, object]) -> None:
    """Refuse keywords that are not :class:`ConnectionOptions`.

    The error names ``caller``, the function the user called, as Python's
    own error for an unexpected keyword would.
    """
    for name in options:
        if name not in _OPTION_NAMES:
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")


@dataclass(frozen=True)
class Settings:
    """Everything a connection is configured with, validated."""

    message_queue_size: float = MESSAGE_QUEUE_SIZE
    max_message_size: float = MAX_MESSAGE_SIZE
    receive_buffer_size: int | None = RECEIVE_BYTES
    disconnect_timeout: float = CONN_TIMEOUT
    compression: Compression = "deflate"
    message_queue_bytes: int = MESSAGE_QUEUE_BYTES
    max_fragment_size: int | None = None
    max_message_fragments: int | None = None
    ping_interval: float | None = None
    ping_timeout: float | None = None

    @classmethod
    def build(
        cls,
        caller: str,
        /,
        *,
        message_queue_size: float = MESSAGE_QUEUE_SIZE,
        max_message_size: float = MAX_MESSAGE_SIZE,
        receive_buffer_size: int | None = RECEIVE_BYTES,
        disconnect_timeout: float = CONN_TIMEOUT,
        **options: Unpack[ConnectionOptions],
    ) -> Settings:
        """The settings of one call to the entry point named ``caller``.

        A keyword that is not a :class:`ConnectionOptions` is a
        :exc:`TypeError` naming ``caller``; a bad value is a
        :exc:`ValueError`.
        """
        _check_options(caller, options)
        return cls(
            message_queue_size,
            max_message_size,
            receive_buffer_size,
            disconnect_timeout,
            **options,
        )

    def __post_init__(self) -> None:
        if self.compression not in ("deflate", None):
            raise ValueError(
                f"compression must be 'deflate' or None, not {self.compression!r}"
            )
        if self.message_queue_size < 0 or self.message_queue_bytes < 0:
            raise ValueError("message queue limits cannot be negative")
        if self.ping_interval is not None and self.ping_interval <= 0:
            raise ValueError("ping_interval must be positive")

    @property
    def engine_max_size(self) -> tuple[int | None, int | None]:
        """The message and fragment limits in the engine's terms.

        Our own checks (in the assembler) are exact and happen after
        decompression. The engine's are on the wire, where deflate adds to
        incompressible data 5 bytes per block, and a peer's compressor with a
        small memLevel makes small blocks (128 bytes at memLevel 1), so it
        gets zlib's conservative deflateBound() as slack. The engine also
        applies its limits to control frames, counting a ping in the middle
        of a message against what is left of the message: so both limits
        leave room for a control frame's 125 bytes.
        """
        fragment = self.max_fragment_size
        if fragment is not None:
            fragment = max(fragment, _MAX_CONTROL_FRAME)
        if self.max_message_size == math.inf:
            return None, fragment
        limit = int(self.max_message_size)
        if self.compression is not None:
            limit += limit // 8 + limit // 64 + 64
        return limit + _MAX_CONTROL_FRAME, fragment

    def client_extensions(self) -> Sequence[ClientDeflateFactory] | None:
        """The extensions a client offers."""
        return None if self.compression is None else _CLIENT_EXTENSIONS

    def server_extensions(self) -> Sequence[ServerPerMessageDeflateFactory] | None:
        """The extensions a server accepts."""
        return None if self.compression is None else _SERVER_EXTENSIONS
