"""The hub's per-connection send path (gateway/hub.py Conn): pure asyncio, no sockets.

The socket tests (test_ws_fanout) show the policy end to end; these pin down the
fast path's edge cases, which a real socket rarely hits on cue."""

from __future__ import annotations

import asyncio

from gateway.hub import Conn


class Sink:
    """A `send` whose transport can be 'paused' like a slow client's."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.open = asyncio.Event()
        self.open.set()
        self.fail_on: str | None = None
        self.closed: list[tuple[int, str]] = []

    async def send(self, data: str) -> None:
        if not self.open.is_set():
            await self.open.wait()
        if data == self.fail_on:
            raise ConnectionResetError("gone")
        self.sent.append(data)

    async def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))


def conn(sink: Sink, max_queue: int = 4) -> Conn:
    c = Conn("s", "viewer", None, sink.send, sink.close, max_queue)
    return c


async def test_idle_push_is_sent_inline_without_a_task() -> None:
    sink = Sink()
    c = conn(sink)
    c.queue.append("welcome")
    c.start()
    assert sink.sent == ["welcome"] and c.writer is None
    c.push("a")
    c.push("b")
    assert sink.sent == ["welcome", "a", "b"] and c.writer is None  # no await needed


async def test_a_paused_send_queues_in_order_then_goes_idle_again() -> None:
    sink = Sink()
    c = conn(sink, max_queue=10)
    c.start()
    sink.open.clear()  # the client stops reading
    for i in range(5):
        c.push(str(i))
    assert sink.sent == [] and c.writer is not None
    sink.open.set()
    await asyncio.wait_for(c.writer, 5)
    assert sink.sent == ["0", "1", "2", "3", "4"]
    assert c.writer is None and c.idle
    c.push("5")
    assert sink.sent[-1] == "5"


async def test_overflow_closes_1013_and_droppable_frames_are_skipped_first() -> None:
    sink = Sink()
    c = conn(sink, max_queue=2)
    c.start()
    sink.open.clear()
    c.push("in-flight")  # suspends: handed to the writer
    c.push("q1")
    c.push("q2")
    c.push("tick", droppable=True)  # queue full: skipped, connection kept
    assert not c.closing and c.queue == ["q1", "q2"]
    c.push("q3")  # queue full, not droppable: the client is too slow
    assert c.closing and c.close_code == 1013
    sink.open.set()
    assert c.writer is not None
    await asyncio.wait_for(c.writer, 5)
    assert sink.closed == [(1013, "too slow: send queue overflowed")]
    assert "q1" not in sink.sent  # the queue was dropped on close
    c.push("late")
    assert "late" not in sink.sent


async def test_a_failing_inline_send_marks_the_connection_closing() -> None:
    sink = Sink()
    c = conn(sink)
    c.start()
    sink.fail_on = "boom"
    c.push("ok")
    c.push("boom")
    assert c.closing
    c.push("after")
    assert sink.sent == ["ok"]


async def test_a_failing_send_in_the_writer_stops_it() -> None:
    sink = Sink()
    c = conn(sink, max_queue=10)
    c.start()
    sink.open.clear()
    c.push("a")
    c.push("boom")
    c.push("c")
    sink.fail_on = "boom"
    sink.open.set()
    assert c.writer is not None
    await asyncio.wait_for(c.writer, 5)
    assert sink.sent == ["a"] and c.closing


async def test_cancelling_the_writer_cancels_the_suspended_send() -> None:
    sink = Sink()
    c = conn(sink)
    c.start()
    sink.open.clear()
    c.push("stuck")
    writer = c.writer
    assert writer is not None
    await asyncio.sleep(0)
    writer.cancel()
    try:
        await writer
    except asyncio.CancelledError:
        pass
    assert writer.cancelled() and sink.sent == []


async def test_close_before_start_still_delivers_the_close_code() -> None:
    sink = Sink()
    c = conn(sink)
    c.close(4403, "wrong show")
    assert c.writer is not None
    await asyncio.wait_for(c.writer, 5)
    assert sink.closed == [(4403, "wrong show")] and sink.sent == []
