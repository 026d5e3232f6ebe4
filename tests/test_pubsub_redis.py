"""The Redis backend of PubSub, against a redis-server this test starts."""

from __future__ import annotations

import itertools
import signal
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
import trustme
from pubsub_helpers import (
    TIMEOUT,
    Joiner,
    RedisServer,
    clients,
    free_port,
    needs_coredis,
    needs_redis_server,
    redis_server,
    start_server,
)

from trio_websocket import Gap, PubSub, _redis_subscriber
from trio_websocket._pubsub import ChannelMessage, Subscription
from trio_websocket._pubsub_redis import (
    RedisError,
    RedisPubSub,
    open_redis_pubsub,
    parse_redis_url,
)

pytestmark = [needs_coredis, needs_redis_server]
__all__ = ["redis_server"]  # a fixture, imported for pytest to find


async def take(subscription: Subscription, count: int) -> list[ChannelMessage | Gap]:
    with trio.fail_after(TIMEOUT):
        return [await subscription.receive() for _ in range(count)]


async def test_messages_cross_between_hubs_in_order(redis_server: RedisServer) -> None:
    await redis_server.ready()
    sent: list[ChannelMessage] = [
        f"m{n}" if n % 2 else bytes([n, 0]) for n in range(50)
    ]
    async with (
        open_redis_pubsub(port=redis_server.port) as publisher,
        open_redis_pubsub(port=redis_server.port) as subscriber,
        subscriber.subscribe("room") as first,
        subscriber.subscribe("room") as second,
        publisher.subscribe("room") as local,
    ):
        for message in sent:
            assert await publisher.publish("room", message) == 2  # two hubs
        assert await take(first, 50) == sent
        assert await take(second, 50) == sent
        assert await take(local, 50) == sent
    assert subscriber.channels == []


async def test_unsubscribing_stops_delivery(redis_server: RedisServer) -> None:
    await redis_server.ready()
    async with open_redis_pubsub(port=redis_server.port) as hub:
        async with hub.subscribe("a"):
            assert await hub.publish("a", "x") == 1
        with trio.fail_after(TIMEOUT):
            while True:  # UNSUBSCRIBE is sent soon
                if await hub.publish("a", "y") == 0:
                    break
                await trio.sleep(0.01)


async def test_a_restart_is_a_gap_and_subscriptions_resume(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.1) as hub,
        hub.subscribe("room") as subscription,
    ):
        assert await hub.publish("room", "before") == 1
        assert await take(subscription, 1) == ["before"]
        redis_server.stop()
        assert await take(subscription, 1) == [Gap(disconnected=True)]
        assert not hub.connected
        assert await hub.publish("room", "lost") == 0
        redis_server.start()
        with trio.fail_after(TIMEOUT):
            await hub.wait_connected()  # and subscribed again
        assert hub.connected
        assert await hub.publish("room", "after") == 1
        assert await take(subscription, 1) == ["after"]
        assert hub.disconnects == 1
        assert subscription.gaps == 1


async def test_an_unreachable_server_fails_to_open() -> None:
    with pytest.raises((OSError, trio.TooSlowError)):
        async with open_redis_pubsub(port=free_port(), connect_timeout=2):
            pass  # pragma: no cover


async def test_a_cancelled_publish_leaves_no_stale_answer(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port) as hub,
        hub.subscribe("room") as subscription,
    ):
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # no answer for now
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hub.publish, "room", "maybe")
                await trio.testing.wait_all_tasks_blocked()  # awaiting the answer
                nursery.cancel_scope.cancel()
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert await hub.publish("other", "x") == 0  # not the answer above
        assert await hub.publish("room", "sure") == 1
        got = [await subscription.receive()]
        if got == ["maybe"]:  # it did reach Redis: at most once, then
            got.append(await subscription.receive())
        assert got[-1] == "sure"


def test_redis_hub_is_a_pubsub() -> None:
    assert issubclass(RedisPubSub, PubSub)


async def test_fan_out_over_redis_tells_clients_to_resync(
    nursery: trio.Nursery, redis_server: RedisServer
) -> None:
    await redis_server.ready()
    joiner = Joiner()
    server = await start_server(nursery, joiner)
    async with (
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.1) as hub,
        hub.fan_out("room", on_gap="resync") as group,
    ):
        joiner.group = group
        async with clients(server, 3) as connected:
            await trio.testing.wait_all_tasks_blocked()
            assert await hub.publish("room", "one") == 1
            redis_server.stop()
            with trio.fail_after(TIMEOUT):
                for client in connected:
                    assert await client.get_message() == "one"
                    assert await client.get_message() == "resync"


# -- The decision test: restarts while messages flow ---------------------------


async def publish_numbers(hub: RedisPubSub, stop: trio.Event) -> None:
    """Publish 0, 1, 2, ... every few milliseconds until ``stop`` is set."""
    number = 0
    while not stop.is_set() and number < 100_000:
        await hub.publish("stream", str(number))
        number += 1
        await trio.sleep(0.002)


async def wait_for_numbers(subscription: Subscription, seen: list[int | Gap]) -> None:
    """Receive until a number arrives, recording numbers and gaps."""
    with trio.fail_after(TIMEOUT):  # resuming takes seconds at most
        while True:
            item = await subscription.receive()
            seen.append(item if isinstance(item, Gap) else int(item))
            if not isinstance(item, Gap):
                return


async def test_subscriptions_resume_by_themselves_after_each_restart(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    seen: list[int | Gap] = []
    stop = trio.Event()
    async with (
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.2) as publisher,
        open_redis_pubsub(port=redis_server.port, max_reconnect_delay=0.2) as hub,
        hub.subscribe("stream", max_buffer=100_000) as subscription,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(publish_numbers, publisher, stop)
        for _ in range(3):
            await wait_for_numbers(subscription, seen)
            redis_server.stop()
            redis_server.start()
            await wait_for_numbers(subscription, seen)  # resumed, unprompted
        stop.set()
    gaps = [index for index, item in enumerate(seen) if isinstance(item, Gap)]
    assert len(gaps) == 3 and hub.disconnects == 3
    numbers = [item for item in seen if not isinstance(item, Gap)]
    assert numbers == sorted(set(numbers))  # in order, never twice
    for index, (before, after) in enumerate(itertools.pairwise(seen)):
        if isinstance(before, int) and isinstance(after, int) and after != before + 1:
            assert index + 1 in gaps, f"{before} -> {after} lost with no Gap"


# -- Addresses, passwords, TLS -------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://example.com", ("example.com", 6379, None, None, False)),
        ("rediss://h:7000/0", ("h", 7000, None, None, True)),
        ("redis://:s%40cret@h", ("h", 6379, None, "s@cret", False)),
        ("redis://ann:pw@[::1]:6380", ("::1", 6380, "ann", "pw", False)),
    ],
)
def test_redis_urls_are_split(url: str, expected: tuple[object, ...]) -> None:
    assert parse_redis_url(url) == expected


@pytest.mark.parametrize("url", ["http://h", "redis://", "h:6379"])
def test_what_is_not_a_redis_url_is_refused(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        parse_redis_url(url)


async def test_a_password_in_the_url_is_used() -> None:
    server = RedisServer("--requirepass", "s@cret")
    server.start()
    try:
        await server.ready()
        url = f"redis://:s%40cret@127.0.0.1:{server.port}"
        async with open_redis_pubsub(url) as hub, hub.subscribe("room") as room:
            assert await hub.publish("room", "hello") == 1
            assert await take(room, 1) == ["hello"]
        with pytest.raises(RedisError):
            async with open_redis_pubsub(port=server.port, password="wrong"):
                pass  # pragma: no cover
    finally:
        server.stop()


async def test_rediss_speaks_tls(tmp_path: Path) -> None:
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    certificate.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = RedisServer(
        *("--tls-cert-file", str(tmp_path / "cert.pem")),
        *("--tls-key-file", str(tmp_path / "key.pem")),
        *("--tls-ca-cert-file", str(tmp_path / "ca.pem")),
        *("--tls-auth-clients", "no"),
        tls=True,
    )
    server.start()
    try:
        await server.ready()
        context = ssl.create_default_context()
        authority.configure_trust(context)
        url = f"rediss://127.0.0.1:{server.port}"
        async with (
            open_redis_pubsub(url, ssl_context=context) as hub,
            hub.subscribe("room") as room,
        ):
            assert await hub.publish("room", b"\x00secret") == 1
            assert await take(room, 1) == [b"\x00secret"]
        with pytest.raises(ConnectionError):  # TLS expected, not plain TCP
            async with open_redis_pubsub(port=server.port, connect_timeout=2):
                pass  # pragma: no cover
    finally:
        server.stop()


async def test_concurrent_publishes_share_round_trips_and_keep_order(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port) as hub,
        hub.subscribe("room", max_buffer=10_000) as room,
    ):

        async def publish_series(task: int) -> None:
            for number in range(50):
                assert await hub.publish("room", f"{task}:{number}") == 1

        async with trio.open_nursery() as nursery:
            for task in range(40):
                nursery.start_soon(publish_series, task)
        received = [str(message) for message in await take(room, 2000)]
        for task in range(40):  # each publisher's messages in its order
            mine = [m for m in received if m.startswith(f"{task}:")]
            assert mine == [f"{task}:{number}" for number in range(50)]
        async with open_redis_pubsub(port=redis_server.port) as probe:
            clients = await probe._client.client_list()
        # the hub's subscriber and publisher, and the probe's own two: 2000
        # publishes from 40 tasks did not open a connection each
        assert len(clients) <= 6


async def test_a_hub_cancelled_from_outside_ends_quietly(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    for _ in range(5):  # coredis's clean-up races the cancellation
        with trio.move_on_after(TIMEOUT) as scope:
            async with (
                open_redis_pubsub(port=redis_server.port) as hub,
                hub.subscribe("room") as room,
            ):
                assert await hub.publish("room", "x") == 1
                assert await take(room, 1) == ["x"]
                scope.cancel()  # as Ctrl-C or a nursery's end would
                await trio.sleep_forever()
        assert scope.cancelled_caught


async def test_publish_nowait_keeps_order_and_bounds_the_outbox(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port, max_outbox=3) as hub,
        hub.subscribe("room", max_buffer=100) as room,
    ):
        hub.publish_nowait("room", "a")
        hub.publish_nowait("room", b"b")
        hub.publish_nowait("room", "c")
        with pytest.raises(trio.WouldBlock):  # no checkpoint: nothing went out
            hub.publish_nowait("room", "dropped")
        assert await hub.publish("room", "d") == 1  # after the three, in order
        for number in range(20):  # faster than a round trip each
            while True:
                try:
                    hub.publish_nowait("room", f"n{number}")
                    break
                except trio.WouldBlock:
                    await trio.sleep(0.001)
        expected = ["a", b"b", "c", "d", *(f"n{number}" for number in range(20))]
        assert await take(room, 24) == expected


async def test_an_outbox_must_hold_a_message() -> None:
    with pytest.raises(ValueError, match="max_outbox"):
        async with open_redis_pubsub(max_outbox=0):
            pass  # pragma: no cover


async def test_leaving_the_hub_sends_what_was_queued_first(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    queued = [f"q{number}" for number in range(1000)]
    async with (
        open_redis_pubsub(port=redis_server.port) as listener,
        listener.subscribe("room", max_buffer=2000) as room,
    ):
        async with open_redis_pubsub(port=redis_server.port) as hub:
            for message in queued:  # more than one pipeline, none sent yet
                hub.publish_nowait("room", message)
        assert await take(room, len(queued)) == queued


async def test_an_error_with_a_full_outbox_leaves_as_itself(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    with pytest.raises(KeyError, match="the application's"):
        async with open_redis_pubsub(port=redis_server.port, max_outbox=5000) as hub:
            for number in range(5000):
                hub.publish_nowait("room", f"m{number}")
            raise KeyError("the application's")


@asynccontextmanager
async def pinging_hub(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, interval: float
) -> AsyncIterator[tuple[RedisPubSub, Subscription]]:
    """A hub subscribed to "room" that PINGs Redis every ``interval`` seconds."""
    monkeypatch.setattr(_redis_subscriber, "KEEPALIVE_INTERVAL", interval)
    await redis_server.ready()
    async with (
        open_redis_pubsub(port=redis_server.port, connect_timeout=0.5) as hub,
        hub.subscribe("room") as room,
    ):
        yield hub, room


async def test_a_redis_that_answers_keeps_its_connection(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pinging_hub(redis_server, monkeypatch, 0.05) as (hub, room):
        await trio.sleep(1)  # about 20 PINGs, each answered
        assert await hub.publish("room", "still") == 1
        assert await take(room, 1) == ["still"]
        assert (hub.disconnects, room.gaps) == (0, 0)


async def test_a_silent_redis_is_dropped_by_the_keepalive(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with pinging_hub(redis_server, monkeypatch, 0.2) as (hub, room):
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # the TCP stays open
        try:
            assert await take(room, 1) == [Gap(disconnected=True)]
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        with trio.fail_after(TIMEOUT):
            await hub.wait_connected()
        assert await hub.publish("room", "after") == 1
        assert await take(room, 1) == ["after"]


async def test_coredis_still_has_the_push_buffer_the_hub_drains(
    redis_server: RedisServer,
) -> None:
    # If this fails, a coredis release changed what waiting_pushes reads:
    # delivery still works, one message per scheduler pass (slower).
    import anyio
    import coredis

    await redis_server.ready()
    client: coredis.Redis[bytes] = coredis.Redis(port=redis_server.port)
    async with client, client.connection_pool.acquire() as connection:
        take_waiting = _redis_subscriber.waiting_pushes(connection)
        assert take_waiting is not None
        with pytest.raises(anyio.WouldBlock):
            take_waiting()


async def test_a_burst_from_redis_loses_nothing_for_a_reader_that_keeps_up(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    sent = [f"m{number}" for number in range(300)]
    async with (
        open_redis_pubsub(port=redis_server.port) as publisher,
        open_redis_pubsub(port=redis_server.port) as subscriber,
        subscriber.subscribe("room", max_buffer=10) as room,
    ):
        for message in sent:  # one pipeline: Redis pushes them in few reads
            publisher.publish_nowait("room", message)
        with trio.fail_after(TIMEOUT):
            got = [await room.receive() for _ in sent]
        assert got == sent  # at most half a buffer per pass: no Gap


async def test_leaving_while_redis_is_frozen_gives_up_after_the_timeout(
    redis_server: RedisServer,
) -> None:
    await redis_server.ready()
    assert redis_server.process is not None
    try:
        with trio.fail_after(TIMEOUT):  # about twice connect_timeout
            async with open_redis_pubsub(
                port=redis_server.port, connect_timeout=0.5
            ) as hub:
                redis_server.process.send_signal(signal.SIGSTOP)  # no answers
                for number in range(100):
                    hub.publish_nowait("room", f"m{number}")
                await trio.sleep(0.1)  # the first pipeline waits for its answer
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
