"""Encoded-frame forwarding without sockets: keyframe gating, backlog, PLI, aiortc hooks."""

from __future__ import annotations

import asyncio
import fractions
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc import RTCRtpCodecParameters, RTCRtpReceiver, RTCRtpSender
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RTCP_PSFB_PLI, RtcpPacket, RtcpPsfbPacket, RtpPacket

from gateway.video import forward
from gateway.video.forward import Fanout, is_keyframe, route_viewer_keyframe_requests

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)
KEY = b"\x10\x02\x00\x9d\x01\x2a"  # VP8 frame tag with the P bit clear
DELTA = b"\x11\x02\x00"


class FakeReceiver:
    """Only what Fanout uses: the active SSRCs and the PLI sender."""

    def __init__(self) -> None:
        self.plis: list[int] = []

    def getSynchronizationSources(self) -> list[Any]:
        return [SimpleNamespace(source=4242)]

    async def _send_rtcp_pli(self, media_ssrc: int) -> None:
        self.plis.append(media_ssrc)


def fanout(kind: str = "video") -> tuple[Fanout, FakeReceiver]:
    receiver = FakeReceiver()
    return Fanout(kind, receiver), receiver  # type: ignore[arg-type]


def frame(data: bytes, ts: int = 0) -> JitterFrame:
    return JitterFrame(data=data, timestamp=ts)


def test_keyframe_detection() -> None:
    assert is_keyframe("VP8", KEY)
    assert not is_keyframe("VP8", DELTA)
    assert not is_keyframe("VP8", b"")
    sps_pps_idr = b"\x00\x00\x00\x01\x67\x42" + b"\x00\x00\x00\x01\x68\xce" + b"\x00\x00\x01\x65\x88"
    assert is_keyframe("H264", sps_pps_idr)
    assert not is_keyframe("H264", b"\x00\x00\x00\x01\x41\x9a\x00")
    assert not is_keyframe("h264", b"")
    assert is_keyframe("opus", b"\xfc")


async def test_viewer_starts_at_a_keyframe_and_asks_for_one() -> None:
    fan, receiver = fanout()
    track = fan.subscribe()
    fan.push(VP8, frame(DELTA))  # before the first recv: not attached, not queued
    assert fan.subscriber_count == 0

    receiving = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0)
    assert fan.subscriber_count == 1
    await _settle()
    assert receiver.plis == [4242]  # attaching asks the host for a keyframe

    fan.push(VP8, frame(DELTA, 1))
    fan.push(VP8, frame(KEY, 2))
    fan.push(VP8, frame(DELTA, 3))
    first = await receiving
    assert bytes(first) == KEY and first.pts == 2 and first.time_base == fractions.Fraction(1, 90000)
    assert bytes(await track.recv()) == DELTA
    # Requests within the interval are coalesced into the one PLI already sent.
    assert receiver.plis == [4242]
    assert fan.frames == 4


async def test_audio_needs_no_keyframe_and_no_pli() -> None:
    fan, receiver = fanout("audio")
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, payloadType=111, channels=2)
    track = fan.subscribe()
    receiving = asyncio.ensure_future(track.recv())
    await _settle()
    fan.push(opus, frame(b"\xfc\x01", 960))
    assert (await receiving).pts == 960
    assert receiver.plis == []


async def test_a_viewer_too_far_behind_restarts_from_the_next_keyframe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(forward, "PLI_INTERVAL_S", 0.0)
    fan, receiver = fanout()
    track = fan.subscribe()
    receiving = asyncio.ensure_future(track.recv())
    await _settle()
    fan.push(VP8, frame(KEY, 0))
    await receiving
    limit = forward.MAX_BACKLOG["video"]
    for i in range(limit + 5):  # the viewer stops reading
        fan.push(VP8, frame(DELTA, i + 1))
    await _settle()
    plis_after_overflow = len(receiver.plis)
    assert plis_after_overflow >= 2  # join + reset
    fan.push(VP8, frame(KEY, 999))
    fan.push(VP8, frame(DELTA, 1000))
    assert (await track.recv()).pts == 999  # stale deltas were dropped, not replayed


async def test_frames_of_another_codec_are_not_forwarded() -> None:
    fan, _ = fanout()
    fan.codec_name = "VP8"
    track = fan.subscribe()
    receiving = asyncio.ensure_future(track.recv())
    await _settle()
    fan.push(H264, frame(b"\x00\x00\x00\x01\x65", 1))
    fan.push(VP8, frame(KEY, 2))
    assert (await receiving).pts == 2
    assert fan.frames == 1


async def test_end_of_ingest_ends_viewers_and_stop_unsubscribes() -> None:
    fan, _ = fanout()
    ended: list[bool] = []
    fan.on_end = lambda: ended.append(True)
    a, b = fan.subscribe(), fan.subscribe()
    waiting = asyncio.ensure_future(a.recv())
    b_waiting = asyncio.ensure_future(b.recv())
    await _settle()
    assert fan.subscriber_count == 2
    b.stop()
    with pytest.raises(MediaStreamError):
        await b_waiting
    assert fan.subscriber_count == 1
    fan.end()
    with pytest.raises(MediaStreamError):
        await waiting
    assert ended == [True]
    late = fan.subscribe()
    with pytest.raises(MediaStreamError):
        await late.recv()


def test_tap_queue_forwards_frames_and_passes_only_the_end_to_the_decoder() -> None:
    fan, _ = fanout()
    tap = forward._TapQueue(fan)
    tap.put((VP8, frame(KEY)))
    assert tap.qsize() == 0 and fan.frames == 1
    tap.put(None)
    assert tap.get_nowait() is None
    assert fan.ended


async def test_tap_receiver_replaces_the_decoder_queue_of_a_real_receiver() -> None:
    transport = SimpleNamespace(state="new")
    receiver = RTCRtpReceiver("video", transport)  # type: ignore[arg-type]
    fan = forward.tap_receiver(receiver, "video")
    assert isinstance(getattr(receiver, forward._QUEUE_ATTR), forward._TapQueue)
    assert fan.kind == "video"
    with pytest.raises(RuntimeError):
        forward.tap_receiver(SimpleNamespace(), "video")  # type: ignore[arg-type]


async def test_viewer_pli_is_routed_upstream_by_a_real_sender() -> None:
    fan, receiver = fanout()
    track = fan.subscribe()
    transport = SimpleNamespace(state="new")
    sender = RTCRtpSender("video", transport)  # type: ignore[arg-type]
    route_viewer_keyframe_requests(sender, track)
    await sender._handle_rtcp_packet(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=sender._ssrc))
    await _settle()
    assert receiver.plis == [4242]


async def _settle() -> None:
    # Let PLI tasks and woken receivers run.
    for _ in range(3):
        await asyncio.sleep(0)


async def test_keyframe_request_reaches_the_wire_through_a_real_receiver() -> None:
    sent: list[bytes] = []

    class Transport:
        state = "new"

        async def _send_rtp(self, data: bytes) -> None:
            sent.append(data)

    receiver = RTCRtpReceiver("video", Transport())  # type: ignore[arg-type]
    receiver._set_rtcp_ssrc(1)
    # The receiver learns the host's SSRC from its packets.
    await receiver._handle_rtp_packet(RtpPacket(payload_type=96, ssrc=4242), arrival_time_ms=0)
    fan = forward.tap_receiver(receiver, "video")
    fan.request_keyframe()
    await _settle()
    packets = [p for data in sent for p in RtcpPacket.parse(data)]
    assert len(packets) == 1
    pli = packets[0]
    assert isinstance(pli, RtcpPsfbPacket)
    assert (pli.fmt, pli.media_ssrc) == (RTCP_PSFB_PLI, 4242)
