"""The hub's per-connection send path (gateway/hub.py Conn) and the frame bytes
it ends up as (gateway/wire.py): pure, no sockets.

The socket tests (test_ws_fanout) show the policy end to end; these pin down the
edge cases, which a real socket rarely hits on cue."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from websockets.frames import Frame, Opcode

from gateway.hub import Conn
from gateway.wire import socket_route, text_frame, text_frames


class Sink:
    """A socket whose transport pauses, as a slow client's does, once `room` frames are written."""

    def __init__(self, room: int = 1_000_000) -> None:
        self.sent: list[str] = []
        self.writes = 0
        self.closed: list[tuple[int, str]] = []
        self.room = room
        self.conn: Conn | None = None
        self.raw: list[bytes] | None = None  # a transport that takes frame bytes as they are

    def write_text(self, data: str) -> None:
        self.writes += 1
        self.sent.append(data)
        self.room -= 1
        if self.room <= 0 and self.conn is not None:
            self.conn.pause()  # what the transport does inside write() past its high-water mark

    def write_texts(self, datas: list[str]) -> None:
        self.writes += 1
        self.sent.extend(datas)
        self.room -= len(datas)
        if self.room <= 0 and self.conn is not None:
            self.conn.pause()

    def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def raw_writer(self) -> Callable[[bytes], None] | None:
        return self.raw.append if self.raw is not None else None

    def drain(self, room: int) -> None:
        self.room = room
        assert self.conn is not None
        self.conn.resume()


def conn(sink: Sink, max_queue: int = 4) -> Conn:
    c = Conn("s", "viewer", None, sink, max_queue)
    sink.conn = c
    return c


def test_nothing_is_written_before_start_then_the_welcome_goes_first() -> None:
    sink = Sink()
    c = conn(sink)
    c.push("event")  # an ack or event racing the welcome waits
    assert sink.sent == []
    c.queue.insert(0, "welcome")
    c.start()
    assert sink.sent == ["welcome", "event"]
    c.push("a")
    assert sink.sent == ["welcome", "event", "a"] and c.queue == []


def test_a_paused_transport_queues_in_order_and_resume_writes_through_again() -> None:
    sink = Sink(room=2)
    c = conn(sink, max_queue=10)
    c.start()
    for i in range(5):
        c.push(str(i))
    assert sink.sent == ["0", "1"] and c.queue == ["2", "3", "4"]
    sink.drain(room=2)  # room for two: the third write pauses it again
    assert sink.sent == ["0", "1", "2", "3"] and c.queue == ["4"] and c.paused
    sink.drain(room=100)
    assert sink.sent == ["0", "1", "2", "3", "4"] and c.ready
    c.push("5")
    assert sink.sent[-1] == "5"


def test_start_while_paused_waits_for_resume() -> None:
    sink = Sink()
    c = conn(sink)
    c.pause()
    c.queue.append("welcome")
    c.start()
    assert sink.sent == [] and not c.ready
    c.resume()
    assert sink.sent == ["welcome"] and c.ready


def test_overflow_closes_1013_and_droppable_frames_are_skipped_first() -> None:
    sink = Sink(room=1)
    c = conn(sink, max_queue=2)
    c.start()
    c.push("written")  # fills the transport: paused
    c.push("q1")
    c.push("q2")
    c.push("tick", droppable=True)  # queue full: skipped, connection kept
    assert not c.closing and c.queue == ["q1", "q2"]
    c.push("q3")  # queue full, not droppable: the client is too slow
    assert c.closing and sink.closed == [(1013, "too slow: send queue overflowed")]
    assert c.queue == []  # dropped on close
    sink.drain(room=100)
    c.push("late")
    assert sink.sent == ["written"]


def test_push_many_is_one_write_when_ready_and_queues_each_frame_when_not() -> None:
    sink = Sink(room=3)
    c = conn(sink, max_queue=10)
    c.start()
    c.push_many(["a", "b", "c"])  # one write; the transport is full after it
    assert sink.sent == ["a", "b", "c"] and sink.writes == 1 and c.paused
    c.push_many(["d", "e"])
    assert c.queue == ["d", "e"]
    sink.drain(room=100)
    assert sink.sent == ["a", "b", "c", "d", "e"]


def test_text_frames_are_the_frames_back_to_back() -> None:
    texts = ["one", "x" * 200, "é"]
    assert text_frames(texts) == b"".join(
        Frame(Opcode.TEXT, t.encode()).serialize(mask=False, extensions=[]) for t in texts)
    assert text_frames(texts) is text_frames(texts)


def test_direct_write_is_offered_only_while_the_transport_takes_writes() -> None:
    sink = Sink()
    sink.raw = []
    c = conn(sink)
    assert c.direct is None  # before the welcome
    c.queue.append("welcome")
    c.start()
    assert c.direct is not None and sink.sent == ["welcome"]
    c.direct(b"frame")
    assert sink.raw == [b"frame"]
    c.pause()
    assert c.direct is None
    c.resume()
    assert c.direct is not None
    c.gone()
    assert c.direct is None and c.closing
    sink.raw = None  # a connection whose frames must be compressed one by one
    c2 = conn(sink)
    c2.start()
    assert c2.ready and c2.direct is None


def test_close_before_start_reaches_the_socket_once() -> None:
    sink = Sink()
    c = conn(sink)
    c.close(4403, "wrong show")
    c.close(1000, "again")
    c.start()
    assert sink.closed == [(4403, "wrong show")] and sink.sent == []


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frame_matches_the_websockets_serializer(size: int) -> None:
    text = ("é" if size % 2 else "a") * (size // (2 if size % 2 else 1))
    expected = Frame(Opcode.TEXT, text.encode()).serialize(mask=False, extensions=[])
    assert text_frame(text) == expected


def test_text_frame_is_built_once_per_string_object() -> None:
    a = "x" * 300
    first = text_frame(a)
    assert text_frame(a) is first  # the same object: no second encode
    b = "".join(["x"] * 300)  # equal, but another object: built again, same bytes
    assert b is not a and text_frame(b) == first and text_frame(b) is not first


@pytest.mark.parametrize(("target", "route"), [
    ("/ws/viewer/abc", ("viewer", "abc")),
    ("/ws/host/abc?x=1", ("host", "abc")),
    ("/ws/viewer/a%20b", ("viewer", "a b")),
    ("/ws/nope/abc", ("nope", "abc")),  # the session answers 4404
    ("/ws/viewer/", None),
    ("/ws/viewer/abc/extra", None),
    ("/api/v1/shows", None),
])
def test_socket_route(target: str, route: tuple[str, str] | None) -> None:
    assert socket_route(target) == route
