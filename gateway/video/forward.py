"""Forward the host's encoded frames to viewers without decoding or re-encoding.

aiortc's `MediaRelay` shares *decoded* frames: every viewer's RTCRtpSender then
runs its own VP8/H264 encoder, which costs ~0.1 core and ~25-35 MiB per viewer
at 640x360 (see docs/decisions/video-relay.md). An SFU forwards the encoded
bitstream instead; this module does that inside aiortc:

- `tap_receiver` swaps the queue between an ingest RTCRtpReceiver's jitter
  buffer and its decoder thread for one that hands each reassembled encoded
  frame to a `Fanout` and never to the decoder. The host's media is therefore
  received, depacketised and reassembled exactly once, and never decoded.
- Every viewer gets a `ForwardTrack` whose `recv()` returns `av.Packet`s;
  aiortc's sender only re-packetises those (`Encoder.pack`), no encoding.
- Decoders need a keyframe to start and after loss: a new or recovering viewer
  waits for the next keyframe and asks the host for one (RTCP PLI), with
  requests from many viewers coalesced.

This reaches into aiortc internals (`_RTCRtpReceiver__decoder_queue`,
`RTCRtpReceiver._send_rtcp_pli`, `RTCRtpSender._send_keyframe`).
`supported()` checks them, and the service falls back to MediaRelay
transcoding when they are missing; tests pin the behaviour for the aiortc
version in use.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import queue
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError
from av import Packet

log = logging.getLogger("livecore.video")

_QUEUE_ATTR = "_RTCRtpReceiver__decoder_queue"
# Frames a viewer may fall behind before it is reset to the next keyframe:
# ~2 s of video at 30 fps, ~1 s of 20 ms audio packets.
MAX_BACKLOG = {"video": 60, "audio": 50}
# One PLI per interval at most, however many viewers ask (RFC 4585 suggests rate limiting).
PLI_INTERVAL_S = 0.5


def supported() -> bool:
    """Whether this aiortc has the hooks forwarding needs (checked again per receiver)."""
    return hasattr(RTCRtpReceiver, "_send_rtcp_pli") and hasattr(RTCRtpSender, "_send_keyframe")


def is_keyframe(codec_name: str, data: bytes) -> bool:
    """Whether an encoded frame can start a decoder."""
    name = codec_name.lower()
    if name == "vp8":
        # VP8 frame tag: bit 0 of the first byte is 0 for a key frame (RFC 6386 §9.1).
        return bool(data) and not data[0] & 0x01
    if name == "h264":
        # Depayloaded H.264 is Annex B; an IDR slice (type 5) starts a decoder.
        start = data.find(b"\x00\x00\x01")
        while start != -1 and start + 3 < len(data):
            if data[start + 3] & 0x1F == 5:
                return True
            start = data.find(b"\x00\x00\x01", start + 3)
        return False
    return True  # audio: every packet stands alone


class Fanout:
    """One ingest track's encoded frames, handed to every subscribed viewer track."""

    def __init__(self, kind: str, receiver: RTCRtpReceiver) -> None:
        self.kind = kind
        self.receiver = receiver
        self.frames = 0
        self.codec_name: str | None = None
        self.ended = False
        self.on_end: Callable[[], None] | None = None
        self._subscribers: set[ForwardTrack] = set()
        self._last_pli = 0.0
        self._pli_tasks: set[asyncio.Task[None]] = set()

    def subscribe(self) -> ForwardTrack:
        """A track for one viewer; it starts receiving on its first `recv()`.

        Attaching lazily means a viewer still doing ICE/DTLS doesn't queue
        frames, and the keyframe we request arrives when it can use it.
        """
        return ForwardTrack(self)

    def attach(self, track: ForwardTrack) -> None:
        if self.ended:
            track.end()
            return
        self._subscribers.add(track)
        self.request_keyframe()

    def unsubscribe(self, track: ForwardTrack) -> None:
        self._subscribers.discard(track)

    def push(self, codec: Any, frame: Any) -> None:
        """Called on the event loop for each encoded frame the jitter buffer completes."""
        if self.ended:
            return
        name: str = codec.name
        if self.codec_name is None:
            self.codec_name = name
        elif name.lower() != self.codec_name.lower():
            # Viewers negotiated exactly one codec; another can't be forwarded to them.
            return
        self.frames += 1
        if not self._subscribers:
            return
        packet = Packet(frame.data)
        packet.pts = frame.timestamp
        packet.time_base = fractions.Fraction(1, codec.clockRate)
        key = is_keyframe(name, frame.data)
        for track in list(self._subscribers):
            track.offer(packet, key)

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for track in list(self._subscribers):
            track.end()
        self._subscribers.clear()
        if self.on_end is not None:
            self.on_end()

    def request_keyframe(self) -> None:
        now = time.monotonic()
        if self.kind != "video" or self.ended or now - self._last_pli < PLI_INTERVAL_S:
            return
        self._last_pli = now
        for source in self.receiver.getSynchronizationSources():
            task = asyncio.ensure_future(self.receiver._send_rtcp_pli(source.source))
            self._pli_tasks.add(task)
            task.add_done_callback(self._pli_tasks.discard)

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)


class ForwardTrack(MediaStreamTrack):
    """A viewer's view of a Fanout: yields shared `av.Packet`s, starting at a keyframe."""

    def __init__(self, fanout: Fanout) -> None:
        super().__init__()
        self.kind = fanout.kind
        self._fanout: Fanout | None = fanout
        self._backlog: deque[Packet | None] = deque()
        self._limit = MAX_BACKLOG.get(fanout.kind, 60)
        self._need_keyframe = fanout.kind == "video"
        self._attached = False
        self._ready = asyncio.Event()

    def offer(self, packet: Packet, keyframe: bool) -> None:
        if self._need_keyframe:
            if not keyframe:
                self.request_keyframe()
                return
            self._need_keyframe = False
        if len(self._backlog) >= self._limit:
            # Too far behind to catch up: drop what is queued and restart from
            # a keyframe rather than let one slow viewer hold seconds of video.
            self._backlog.clear()
            if self.kind == "video":
                self._need_keyframe = True
                self.request_keyframe()
                return
        self._backlog.append(packet)
        self._ready.set()

    def end(self) -> None:
        self._backlog.append(None)
        self._ready.set()

    def request_keyframe(self) -> None:
        if self._fanout is not None:
            self._fanout.request_keyframe()

    async def recv(self) -> Packet:
        if not self._attached and self._fanout is not None:
            self._attached = True
            self._fanout.attach(self)
        while not self._backlog:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        packet = self._backlog.popleft()
        if packet is None:
            self.stop()
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        super().stop()
        if self._fanout is not None:
            self._fanout.unsubscribe(self)
            self._fanout = None
        self._ready.set()


class _TapQueue(queue.Queue[Any]):
    """Stands in for the receiver's decoder queue; see the module docstring.

    `put` is called on the event loop by RTCRtpReceiver._handle_rtp_packet; only
    the end-of-stream None reaches the decoder thread, so it stays idle and
    exits when the receiver stops.
    """

    def __init__(self, fanout: Fanout) -> None:
        super().__init__()
        self._fanout = fanout

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is None:
            super().put(None, block, timeout)
            self._fanout.end()
            return
        codec, frame = item
        self._fanout.push(codec, frame)


def tap_receiver(receiver: RTCRtpReceiver, kind: str) -> Fanout:
    """Divert `receiver`'s encoded frames to a new Fanout. Call before the receiver starts."""
    if not isinstance(getattr(receiver, _QUEUE_ATTR, None), queue.Queue):
        raise RuntimeError("this aiortc version has no receiver decoder queue to tap")
    fanout = Fanout(kind, receiver)
    setattr(receiver, _QUEUE_ATTR, _TapQueue(fanout))
    return fanout


def route_viewer_keyframe_requests(sender: RTCRtpSender, track: ForwardTrack) -> None:
    """A viewer's PLI/FIR would only flag aiortc's (unused) encoder; send it upstream instead."""
    sender._send_keyframe = track.request_keyframe  # type: ignore[method-assign]
