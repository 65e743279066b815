"""CPU and memory of one video process: 1 WHIP ingest, N WHEP viewers.

    python -m bench.video                      # 0 (baseline), 10, 50, 100 viewers
    python -m bench.video --viewers 5,20 --size 1280x720 --measure-s 15

The server runs in its own process (`--serve`, the same VideoService the app
mounts, under uvicorn with uvloop when installed) and is measured with psutil
from outside. This process is the load: one aiortc publisher sending synthetic
30 fps video + audio over WHIP, and N aiortc WHEP viewers.

The viewers don't decode: each receiver counts frames from RTP marker bits
after SRTP decryption (see `count_instead_of_decoding`). Full aiortc receivers
for 100 viewers would cost this process more CPU than the server under test
and, on a small machine, starve it. tests/video checks that the frames decode.

Read "viewers/core" only where the delivered fps is close to the source fps:
past that point the server is saturated and skips frames (each viewer's
relay proxy keeps only the newest frame) instead of queueing them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import psutil

SECRET = "bench-video-secret-0123456789abcdef"
SHOW = "bench"
SOURCE_FPS = 30
RECEIVED = {"bytes": 0}  # RTP payload bytes received by all viewers of this process


# ---------------------------------------------------------------- server side


def serve(port: int, max_viewers: int, mode: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from gateway.video import VideoService
    from livecore.auth import TokenService
    from livecore.settings import Settings

    class Shows:
        async def get(self, show_id: str) -> dict[str, Any] | None:
            return {"id": show_id, "status": "live"} if show_id == SHOW else None

    @dataclass
    class Ctx:
        settings: Settings
        tokens: TokenService
        shows: Shows

    settings = Settings.model_validate({"max_whep_sessions": max_viewers, "ice_servers": []})
    service = VideoService(Ctx(settings, TokenService(SECRET), Shows()), relay_mode=mode)  # type: ignore[arg-type]

    async def stats(_: Request) -> JSONResponse:
        return JSONResponse({**service.stats(), "frames": service.ingest_frames(SHOW)})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await service.aclose()

    app = Starlette(routes=[*service.routes, Route("/_stats", stats)], lifespan=lifespan)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ---------------------------------------------------------------- load side


def count_instead_of_decoding() -> None:
    """Make this process's receivers count frames instead of reassembling and decoding them.

    A frame is counted at its last RTP packet (marker bit) for video and at
    every packet for audio, after SRTP decryption and RTP parsing. Skipped:
    jitter buffer, NACK/REMB feedback and decoding, which would otherwise cost
    the load generator more CPU than the server under test.
    """
    import aiortc.rtcrtpreceiver as receiver_module

    async def count_packet(self: Any, packet: Any, arrival_time_ms: int) -> None:
        RECEIVED["bytes"] += len(packet.payload)
        track = self._track
        if track is not None and (packet.marker or track.kind == "audio"):
            track._queue.put_nowait(packet)

    receiver_module.RTCRtpReceiver._handle_rtp_packet = count_packet  # type: ignore[method-assign]


def pin_publisher_bitrate(bps: int) -> None:
    """Hold the host's encoder at one bitrate so runs and modes are comparable.

    aiortc's encoders follow the receiver's REMB estimate between fixed bounds;
    on loopback that estimate wanders, and forwarding cost follows the bitrate
    (it is per packet). Transcode-mode viewers get aiortc's own per-viewer
    encoder default (500 kbit/s) whatever the host sends.
    """
    from aiortc.codecs import h264, vpx

    for module in (vpx, h264):
        module.DEFAULT_BITRATE = module.MIN_BITRATE = module.MAX_BITRATE = bps  # type: ignore[attr-defined]


@dataclass
class Row:
    viewers: int
    connected: int
    server_cores: float
    server_rss_mb: float
    client_cores: float
    video_fps_median: float
    video_fps_min: float
    audio_fps_median: float
    ingest_fps: float
    egress_mbps: float

    @property
    def viewers_per_core(self) -> float | None:
        if self.viewers == 0 or self.server_cores <= 0:
            return None
        return self.viewers / self.server_cores


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_ready(http: httpx.AsyncClient, base: str) -> None:
    for _ in range(200):
        with contextlib.suppress(httpx.HTTPError):
            if (await http.get(base + "/_stats")).status_code == 200:
                return
        await asyncio.sleep(0.05)
    raise RuntimeError("server did not start")


async def gather_limited(n: int, limit: int, make: Callable[[], Awaitable[Any]]) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one() -> Any:
        async with gate:
            return await make()

    return await asyncio.gather(*(one() for _ in range(n)))


def start_server(mode: str, max_viewers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.video", "--serve", "--port", str(port),
         "--max-viewers", str(max_viewers), "--mode", mode],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    return server, f"http://127.0.0.1:{port}"


def viewer_steps(spec: str) -> list[int]:
    return sorted({0, *(int(v) for v in spec.split(","))})


async def run(args: argparse.Namespace, server: subprocess.Popen[bytes], base: str) -> list[Row]:
    from gateway.video.testing import AudioStreamTrack, PatternVideoTrack, WebRtcClient
    from livecore.auth import TokenService

    width, height = (int(x) for x in args.size.split("x"))
    steps = viewer_steps(args.viewers)
    proc = psutil.Process(server.pid)
    me = psutil.Process()
    rows: list[Row] = []
    viewers: list[WebRtcClient] = []
    async with httpx.AsyncClient(timeout=60.0) as http:
        await wait_ready(http, base)
        token = TokenService(SECRET).mint(sub="h", name="h", role="host", show=SHOW, ttl_s=3600)[0]
        host = WebRtcClient(base, http, token)
        tracks: list[Any] = [PatternVideoTrack(width, height)]
        if not args.no_audio:
            tracks.append(AudioStreamTrack())
        response = await host.publish(SHOW, tracks, video_codec=args.codec)
        response.raise_for_status()
        await host.wait_connected()

        async def join() -> WebRtcClient:
            viewer = WebRtcClient(base, http)
            kinds = ("video",) if args.no_audio else ("video", "audio")
            (await viewer.play(SHOW, kinds)).raise_for_status()
            return viewer

        for n in steps:
            viewers += await gather_limited(n - len(viewers), 8, join)
            results = await asyncio.gather(
                *(v.wait_connected(30.0) for v in viewers), return_exceptions=True
            )
            connected = sum(1 for r in results if r is None)
            await asyncio.sleep(args.warmup_s)
            rows.append(await measure(http, base, proc, me, viewers, n, connected, args.measure_s))
            print_row(rows[-1], header=len(rows) == 1)

        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)
        await host.close()
    return rows


async def measure(
    http: httpx.AsyncClient, base: str, proc: psutil.Process, me: psutil.Process,
    viewers: list[Any], n: int, connected: int, seconds: float,
) -> Row:
    def frames(kind: str) -> list[int]:
        return [v.frames.get(kind, 0) for v in viewers]

    stats0 = (await http.get(base + "/_stats")).json()
    v0, a0 = frames("video"), frames("audio")
    s0, c0, t0, b0 = proc.cpu_times(), me.cpu_times(), time.monotonic(), RECEIVED["bytes"]
    await asyncio.sleep(seconds)
    s1, c1, t1, b1 = proc.cpu_times(), me.cpu_times(), time.monotonic(), RECEIVED["bytes"]
    v1, a1 = frames("video"), frames("audio")
    stats1 = (await http.get(base + "/_stats")).json()
    wall = t1 - t0
    video = [(b - a) / wall for a, b in zip(v0, v1, strict=True)] or [0.0]
    audio = [(b - a) / wall for a, b in zip(a0, a1, strict=True)] or [0.0]
    ingest = (stats1["frames"].get("video", 0) - stats0["frames"].get("video", 0)) / wall
    return Row(
        viewers=n,
        connected=connected,
        server_cores=(s1.user + s1.system - s0.user - s0.system) / wall,
        server_rss_mb=proc.memory_info().rss / 2**20,
        client_cores=(c1.user + c1.system - c0.user - c0.system) / wall,
        video_fps_median=statistics.median(video),
        video_fps_min=min(video),
        audio_fps_median=statistics.median(audio),
        ingest_fps=ingest,
        egress_mbps=(b1 - b0) * 8 / wall / 1e6,
    )


COLUMNS = (
    "viewers", "connected", "server CPU (cores)", "server RSS (MiB)", "viewers/core",
    "video fps/viewer (median, min)", "audio packets/s/viewer", "ingest fps", "media out (Mbit/s)",
    "load-gen CPU (cores)",
)


def print_row(row: Row, header: bool) -> None:
    if header:
        print("| " + " | ".join(COLUMNS) + " |")
        print("|" + "|".join("---:" for _ in COLUMNS) + "|")
    per_core = "—" if row.viewers_per_core is None else f"{row.viewers_per_core:.1f}"
    cells = (
        str(row.viewers), str(row.connected), f"{row.server_cores:.2f}", f"{row.server_rss_mb:.0f}",
        per_core, f"{row.video_fps_median:.1f}, {row.video_fps_min:.1f}",
        f"{row.audio_fps_median:.1f}", f"{row.ingest_fps:.1f}", f"{row.egress_mbps:.1f}",
        f"{row.client_cores:.2f}",
    )
    print("| " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--viewers", default="10,50,100", help="comma-separated viewer counts")
    parser.add_argument("--size", default="640x360", help="ingest resolution WxH (30 fps)")
    parser.add_argument("--measure-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=4.0)
    parser.add_argument("--codec", default="VP8", choices=["VP8", "H264"], help="host video codec")
    parser.add_argument("--bitrate-kbps", type=int, default=1000, help="host video bitrate")
    parser.add_argument("--no-audio", action="store_true")
    parser.add_argument("--mode", default="both", choices=["forward", "transcode", "both"],
                        help="relay mode of the server (both: one table each, same run)")
    parser.add_argument("--json", action="store_true", help="also print rows as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--max-viewers", type=int, default=1000, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.port, args.max_viewers, args.mode)
        return
    print(f"# bench.video: {psutil.cpu_count()} CPUs, ingest {args.codec} {args.size}@{SOURCE_FPS} fps"
          f" {args.bitrate_kbps} kbit/s{'' if args.no_audio else ' + Opus audio'},"
          f" window {args.measure_s:.0f} s")
    modes = ["forward", "transcode"] if args.mode == "both" else [args.mode]
    count_instead_of_decoding()
    pin_publisher_bitrate(args.bitrate_kbps * 1000)
    for mode in modes:
        print(f"\n## relay mode: {mode}\n")
        server, base = start_server(mode, max(viewer_steps(args.viewers)) + 10)
        try:
            rows = asyncio.run(run(args, server, base))
        finally:
            server.terminate()
            server.wait(10)
        if args.json:
            print(json.dumps([{"mode": mode, **row.__dict__} for row in rows]))


if __name__ == "__main__":
    main()
