"""The peer connections behind WHIP and WHEP, and how they are negotiated.

One `Ingest` per live show receives the host's tracks once. Each `Viewer`
subscribes to them in one of two relay modes (docs/decisions/video-relay.md):

- "forward" (default): the host's encoded frames go to every viewer as they
  are (`gateway.video.forward`); nothing is decoded or re-encoded.
- "transcode": aiortc's `MediaRelay` shares the decoded frames
  (`buffered=False`: a viewer whose encoder falls behind skips to the newest
  frame instead of queueing old ones) and each viewer's sender re-encodes.
  Works with any codec aiortc can decode; costs an encoder per viewer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Literal

from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay
from aiortc.mediastreams import MediaStreamError

from gateway.video import forward
from gateway.video.errors import BadSdp, NegotiationFailed
from gateway.video.sdp import OfferSummary

log = logging.getLogger("livecore.video")

Kind = Literal["whip", "whep"]
RelayMode = Literal["forward", "transcode"]
# What aiortc can receive, in our order of preference when an offer has several.
SUPPORTED_CODECS = {"video": ("VP8", "H264"), "audio": ("opus", "PCMU", "PCMA")}


class Session:
    """State shared by both directions: one peer connection and its lifecycle flags."""

    kind: Kind

    def __init__(self, session_id: str, show: str, pc: RTCPeerConnection) -> None:
        self.id = session_id
        self.show = show
        self.pc = pc
        self.created_at = time.monotonic()
        self.connected = False
        self.closed = False
        self.connect_timer: asyncio.TimerHandle | None = None


class Ingest(Session):
    kind: Kind = "whip"

    def __init__(self, session_id: str, show: str, pc: RTCPeerConnection, mode: RelayMode) -> None:
        super().__init__(session_id, show, pc)
        self.mode: RelayMode = mode
        self.codecs: dict[str, str] = {}  # kind -> the one codec negotiated per kind
        self.tracks: dict[str, MediaStreamTrack] = {}
        self.viewers: set[str] = set()
        self.announce: asyncio.Task[None] | None = None
        # forward mode
        self.fanouts: dict[str, forward.Fanout] = {}
        # transcode mode
        self.relay = MediaRelay()
        self.drains: list[asyncio.Task[None]] = []
        self._drained: dict[str, int] = {}

    @property
    def kinds(self) -> set[str]:
        return set(self.fanouts) if self.mode == "forward" else set(self.tracks)

    @property
    def frames(self) -> dict[str, int]:
        """Frames received from the host per kind (each counted once, however many viewers)."""
        if self.mode == "forward":
            return {kind: f.frames for kind, f in self.fanouts.items()}
        return dict(self._drained)

    def start(self, on_all_ended: Callable[[], object]) -> None:
        """Begin consuming the host's media; `on_all_ended` fires when every track ends."""
        remaining = len(self.kinds)

        def one_ended() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and not self.closed:
                on_all_ended()

        if self.mode == "forward":
            for fanout in self.fanouts.values():
                fanout.on_end = one_ended
            return
        # aiortc decodes every received frame into the track's unbounded queue;
        # without a reader that queue grows for as long as the host streams.
        # Reading through the relay also starts the relay's single reader,
        # which the viewers then share.
        for kind, track in self.tracks.items():
            self._drained[kind] = 0
            proxy = self.relay.subscribe(track, buffered=False)
            task = asyncio.create_task(self._drain(kind, proxy), name=f"video-drain-{self.id}-{kind}")
            task.add_done_callback(lambda _: one_ended())
            self.drains.append(task)

    async def _drain(self, kind: str, proxy: MediaStreamTrack) -> None:
        try:
            while True:
                await proxy.recv()
                self._drained[kind] += 1
        except MediaStreamError:
            return
        finally:
            proxy.stop()

    def subscribe(self, kind: str, sender: RTCRtpSender) -> MediaStreamTrack | None:
        """A new viewer's track for `kind`, wired to `sender`; None if the host doesn't send it."""
        if self.mode == "forward":
            fanout = self.fanouts.get(kind)
            if fanout is None:
                return None
            track = fanout.subscribe()
            forward.route_viewer_keyframe_requests(sender, track)
            return track
        source = self.tracks.get(kind)
        return None if source is None else self.relay.subscribe(source, buffered=False)

    async def stop_consuming(self) -> None:
        for task in self.drains:
            task.cancel()
        await asyncio.gather(*self.drains, return_exceptions=True)


class Viewer(Session):
    kind: Kind = "whep"

    def __init__(self, session_id: str, show: str, pc: RTCPeerConnection, ingest: Ingest) -> None:
        super().__init__(session_id, show, pc)
        self.ingest = ingest
        self.tracks: list[MediaStreamTrack] = []

    def stop_tracks(self) -> None:
        for track in self.tracks:
            track.stop()


def make_peer_connection(ice_servers: list[RTCIceServer]) -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=list(ice_servers)))


def pick_codecs(summary: OfferSummary) -> dict[str, str]:
    """The one codec per sending kind we will accept from this offer.

    Answering with a single codec per kind means the host can't switch codecs
    mid-stream, which matters when frames are forwarded: viewers negotiated
    exactly one.
    """
    chosen: dict[str, str] = {}
    for section in summary.sections:
        if section.direction not in ("sendonly", "sendrecv"):
            continue
        offered = {c.lower() for c in section.codecs}
        for name in SUPPORTED_CODECS[section.kind]:
            if name.lower() in offered:
                chosen[section.kind] = name
                break
    return chosen


def prefer_codec(transceiver: RTCRtpTransceiver, codec: str) -> None:
    """Restrict `transceiver` to `codec` (every profile of it) plus RTX."""
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    wanted = [
        c for c in capabilities
        if c.mimeType.split("/", 1)[1].lower() in (codec.lower(), "rtx")
    ]
    transceiver.setCodecPreferences(wanted)


async def apply_offer(pc: RTCPeerConnection, offer: str) -> None:
    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
    except (ValueError, KeyError, IndexError, AssertionError, AttributeError) as exc:
        raise BadSdp(f"the offer was rejected: {exc or type(exc).__name__}") from exc
    # aiortc raises OperationError when a section shares no codec with us; the
    # other aiortc errors at this point also mean "this offer can't work here".
    except Exception as exc:
        raise NegotiationFailed(
            f"no common codec or unsupported offer ({exc or type(exc).__name__}); "
            "supported: video VP8/H264, audio Opus/PCMU/PCMA"
        ) from exc


async def create_answer(pc: RTCPeerConnection) -> str:
    """Answer with every ICE candidate already in the SDP.

    We don't do trickle ICE (WHIP/WHEP PATCH): aiortc's setLocalDescription
    gathers all candidates before returning, and the wait below keeps that
    promise even if a future aiortc starts gathering in the background.
    """
    try:
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
    except (ValueError, AssertionError) as exc:
        raise NegotiationFailed(f"could not build an answer: {exc or type(exc).__name__}") from exc
    await wait_gathering_complete(pc)
    description = pc.localDescription
    return description.sdp


async def wait_gathering_complete(pc: RTCPeerConnection) -> None:
    if pc.iceGatheringState == "complete":
        return
    done = asyncio.get_running_loop().create_future()

    def check() -> None:
        if pc.iceGatheringState == "complete" and not done.done():
            done.set_result(None)

    pc.on("icegatheringstatechange", check)
    try:
        await done
    finally:
        pc.remove_listener("icegatheringstatechange", check)
