"""A minimal WHIP/WHEP client and synthetic media, for tests, the bench and smoke checks.

It speaks plain HTTP to the public endpoints (no shortcut into the service),
so what passes here is what OBS or a browser would see.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Iterable, Sequence

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, VideoStreamTrack
from av import VideoFrame

__all__ = ["AudioStreamTrack", "PatternVideoTrack", "WebRtcClient"]


class PatternVideoTrack(VideoStreamTrack):
    """30 fps frames with a moving bar and per-frame noise-free gradients.

    Motion matters: a static frame compresses to almost nothing after the
    first keyframe, which would flatter every encoder in a benchmark.
    """

    def __init__(self, width: int = 320, height: int = 240, period: int = 60) -> None:
        super().__init__()
        self.width, self.height = width - width % 2, height - height % 2
        self._planes = [self._render(i, period) for i in range(period)]
        self._index = 0

    def _render(self, step: int, period: int) -> tuple[bytes, bytes, bytes]:
        w, h = self.width, self.height
        bar_x = (step * w // period) % w
        bar_w = max(2, w // 10)
        row = bytes(
            235 if bar_x <= x < bar_x + bar_w else (16 + (x * 200 // w + step * 3) % 200)
            for x in range(w)
        )
        luma = b"".join(row[y % 7 :] + row[: y % 7] for y in range(h))
        cw, ch = w // 2, h // 2
        u = bytes((64 + step * 2 + y) % 256 for y in range(ch) for _ in range(cw))
        v = bytes((192 - step * 2 + y) % 256 for y in range(ch) for _ in range(cw))
        return luma, u, v

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        widths = (self.width, self.width // 2, self.width // 2)
        for plane, data, width in zip(frame.planes, self._planes[self._index], widths, strict=True):
            _copy_plane(plane, data, width)
        self._index = (self._index + 1) % len(self._planes)
        frame.pts = pts
        frame.time_base = fractions.Fraction(time_base.numerator, time_base.denominator)
        return frame


def _copy_plane(plane: object, data: bytes, width: int) -> None:
    line_size: int = plane.line_size  # type: ignore[attr-defined]
    if line_size == width:
        plane.update(data)  # type: ignore[attr-defined]
        return
    # Planes are padded to an alignment; copy row by row into the padded layout.
    rows = len(data) // width
    padded = b"".join(
        data[r * width : (r + 1) * width] + bytes(line_size - width) for r in range(rows)
    )
    plane.update(padded)  # type: ignore[attr-defined]


def _only(transceiver: RTCRtpTransceiver, codec: str) -> None:
    capabilities = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences(
        [c for c in capabilities if c.mimeType.split("/", 1)[1].lower() in (codec.lower(), "rtx")]
    )


class WebRtcClient:
    """One peer connection driven through WHIP (publish) or WHEP (play)."""

    def __init__(self, base_url: str, http: httpx.AsyncClient, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        self.token = token
        self.pc = RTCPeerConnection()
        self.location: str | None = None
        self.frames: dict[str, int] = {}
        self._consumers: list[asyncio.Task[None]] = []
        self._progress = asyncio.Event()

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self.frames.setdefault(track.kind, 0)
            self._consumers.append(asyncio.create_task(self._consume(track)))

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/sdp"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def publish(
        self, show: str, tracks: Iterable[MediaStreamTrack], video_codec: str | None = None
    ) -> httpx.Response:
        """WHIP-publish `tracks`; `video_codec` ("VP8", "H264") limits what is offered."""
        for track in tracks:
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            if video_codec and track.kind == "video":
                _only(transceiver, video_codec)
        return await self._negotiate(f"/whip/{show}")

    async def play(
        self, show: str, kinds: Sequence[str] = ("video", "audio"), video_codec: str | None = None
    ) -> httpx.Response:
        for kind in kinds:
            transceiver = self.pc.addTransceiver(kind, direction="recvonly")
            if video_codec and kind == "video":
                _only(transceiver, video_codec)
        return await self._negotiate(f"/whep/{show}")

    async def _negotiate(self, path: str) -> httpx.Response:
        sdp = await self.offer()
        response = await self.http.post(self.base_url + path, content=sdp, headers=self._headers())
        if response.status_code == 201:
            self.location = response.headers["location"]
            await self.pc.setRemoteDescription(
                RTCSessionDescription(sdp=response.text, type="answer")
            )
        return response

    async def wait_connected(self, within_s: float = 15.0) -> None:
        state = await self.wait_state({"connected", "failed", "closed"}, within_s)
        if state != "connected":
            raise ConnectionError(f"peer connection {state}")

    async def wait_state(self, states: set[str], within_s: float = 15.0) -> str:
        """Wait until connectionState is one of `states`; returns it."""
        if self.pc.connectionState in states:
            return self.pc.connectionState
        reached: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_state() -> None:
            if self.pc.connectionState in states and not reached.done():
                reached.set_result(self.pc.connectionState)

        self.pc.on("connectionstatechange", on_state)
        try:
            async with asyncio.timeout(within_s):
                return await reached
        finally:
            self.pc.remove_listener("connectionstatechange", on_state)

    async def wait_frames(self, kind: str, count: int, within_s: float = 20.0) -> int:
        async with asyncio.timeout(within_s):
            while self.frames.get(kind, 0) < count:
                self._progress.clear()
                await self._progress.wait()
        return self.frames[kind]

    async def delete(self) -> httpx.Response:
        assert self.location is not None, "not negotiated"
        return await self.http.delete(self.base_url + self.location, headers=self._headers())

    async def close(self) -> None:
        await self.pc.close()
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)

    async def _consume(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                await track.recv()
                self.frames[track.kind] += 1
                self._progress.set()
        except MediaStreamError:
            return
