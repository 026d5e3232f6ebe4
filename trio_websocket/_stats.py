"""What a connection has done so far: counters for monitoring."""

from __future__ import annotations

from dataclasses import dataclass


class Counters:
    """Running totals, updated on the hot path with plain integer adds."""

    __slots__ = (
        "bytes_received",
        "bytes_sent",
        "last_ping_rtt",
        "messages_received",
        "messages_sent",
        "wire_bytes_received",
        "wire_bytes_sent",
    )

    def __init__(self) -> None:
        self.messages_sent = 0
        self.messages_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.wire_bytes_sent = 0
        self.wire_bytes_received = 0
        self.last_ping_rtt: float | None = None


@dataclass(frozen=True)
class ConnectionStats:
    """A snapshot of a connection's activity (see ``connection.stats``).

    ``bytes_*`` count message payloads as the application sees them;
    ``wire_bytes_*`` count what crossed the network (frames, handshake
    excluded), so their ratio shows what compression saves.
    """

    messages_sent: int
    messages_received: int
    bytes_sent: int
    bytes_received: int
    wire_bytes_sent: int
    wire_bytes_received: int
    queue_depth: int
    queued_bytes: int
    last_ping_rtt: float | None

    @property
    def compression_ratio(self) -> float | None:
        """Payload bytes per wire byte, both ways (above 1 means savings)."""
        wire = self.wire_bytes_sent + self.wire_bytes_received
        if not wire:
            return None
        return (self.bytes_sent + self.bytes_received) / wire
