"""WHIP ingest and WHEP playback end to end: real HTTP, real aiortc peers, decoded frames."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter

from gateway.video.testing import AudioStreamTrack, PatternVideoTrack

from .harness import MAX_VIEWERS, VideoServer


async def start_ingest(vs: VideoServer, show: str) -> None:
    host = vs.client(vs.token("host", show))
    response = await host.publish(show, [PatternVideoTrack(160, 120), AudioStreamTrack()])
    assert response.status_code == 201, response.text
    await host.wait_connected()


async def test_ingest_fans_out_to_two_viewers_and_delete_frees_everything(vs: VideoServer) -> None:
    show = "show-1"
    host = vs.client(vs.token("host", show))
    response = await host.publish(show, [PatternVideoTrack(160, 120), AudioStreamTrack()])
    assert response.status_code == 201, response.text
    assert response.headers["content-type"] == "application/sdp"
    assert host.location is not None
    assert host.location.startswith(f"/whip/{show}/") and len(host.location) > len(show) + 20
    # Non-trickle: every candidate is already in the answer.
    assert "a=candidate:" in response.text
    await host.wait_connected()
    await vs.eventually(lambda: (show, True) in vs.ctx.ingest_events)
    assert vs.service.is_live(show)

    anonymous = vs.client()
    signed_in = vs.client(vs.token("viewer", show, sub="v2"))
    for viewer in (anonymous, signed_in):
        response = await viewer.play(show)
        assert response.status_code == 201, response.text
        assert response.headers["location"].startswith(f"/whep/{show}/")
    assert vs.service.stats()["whep_sessions"] == 2
    assert vs.service.viewer_count(show) == 2

    for viewer in (anonymous, signed_in):
        assert await viewer.wait_frames("video", 20) >= 20
        assert await viewer.wait_frames("audio", 20) >= 20
    # The host's media is decoded once, however many viewers there are.
    assert vs.service.ingest_frames(show)["video"] > 0

    for viewer in (anonymous, signed_in):
        assert (await viewer.delete()).status_code == 204
    assert vs.service.stats()["whep_sessions"] == 0
    assert vs.service.viewer_count(show) == 0
    assert (await anonymous.delete()).status_code == 404

    assert (await host.delete()).status_code == 204
    assert vs.service.stats()["ingests"] == 0
    assert not vs.service.is_live(show)
    assert vs.ctx.ingest_events[-1] == (show, False)


async def test_late_viewer_starts_from_a_fresh_keyframe(vs: VideoServer) -> None:
    # A viewer joining mid-stream must start decoding at a keyframe: forward
    # mode holds frames back until one arrives (and asks the host for it),
    # transcode mode starts the viewer's own encoder with one.
    show = "show-12"
    await start_ingest(vs, show)
    await vs.eventually(lambda: vs.service.ingest_frames(show).get("video", 0) >= 45)
    late = vs.client()
    assert (await late.play(show)).status_code == 201
    assert await late.wait_frames("video", 15) >= 15


async def test_h264_ingest_reaches_viewers(vs: VideoServer) -> None:
    show = "show-14"
    host = vs.client(vs.token("host", show))
    response = await host.publish(show, [PatternVideoTrack(160, 120), AudioStreamTrack()], video_codec="H264")
    assert response.status_code == 201, response.text
    assert "H264/90000" in response.text and "VP8/90000" not in response.text
    viewer = vs.client()
    assert (await viewer.play(show)).status_code == 201
    assert await viewer.wait_frames("video", 15) >= 15

    vp8_only = vs.client()
    response = await vp8_only.play(show, video_codec="VP8")
    if vs.service.relay_mode == "forward":
        # Forwarded frames stay H.264; a viewer that can't decode it is told why.
        assert response.status_code == 422
        assert "H264" in response.json()["error"]["message"]
    else:
        assert response.status_code == 201
        assert await vp8_only.wait_frames("video", 10) >= 10


async def test_second_ingest_for_a_show_is_refused(vs: VideoServer) -> None:
    show = "show-2"
    await start_ingest(vs, show)
    second = vs.client(vs.token("admin", "*"))
    response = await second.publish(show, [PatternVideoTrack(160, 120)])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "ingest_active"
    # Another show is independent.
    other = vs.client(vs.token("host", "show-3"))
    assert (await other.publish("show-3", [PatternVideoTrack(160, 120)])).status_code == 201
    await other.wait_connected()


async def test_whep_without_ingest_is_409_no_ingest(vs: VideoServer) -> None:
    response = await vs.client().play("show-4")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "no_ingest"


async def test_video_only_ingest_serves_a_viewer_that_asks_for_both(vs: VideoServer) -> None:
    show = "show-5"
    host = vs.client(vs.token("host", show))
    assert (await host.publish(show, [PatternVideoTrack(160, 120)])).status_code == 201
    viewer = vs.client()
    assert (await viewer.play(show)).status_code == 201
    assert await viewer.wait_frames("video", 10) >= 10
    assert viewer.frames.get("audio", 0) == 0
    audio_only = vs.client()
    response = await audio_only.play(show, kinds=("audio",))
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "negotiation_failed"


async def test_viewer_limit_answers_503_with_retry_after(vs: VideoServer) -> None:
    show = "show-6"
    await start_ingest(vs, show)
    viewers = [vs.client() for _ in range(MAX_VIEWERS)]
    responses = await asyncio.gather(*(v.play(show) for v in viewers))
    assert [r.status_code for r in responses] == [201] * MAX_VIEWERS
    refused = await vs.client().play(show)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "unavailable"
    assert int(refused.headers["retry-after"]) >= 1
    # A freed slot is usable again.
    assert (await viewers[0].delete()).status_code == 204
    assert (await vs.client().play(show)).status_code == 201


async def test_viewer_that_hangs_up_is_cleaned_without_delete(vs: VideoServer) -> None:
    show = "show-7"
    await start_ingest(vs, show)
    viewer = vs.client()
    assert (await viewer.play(show)).status_code == 201
    await viewer.wait_connected()
    await vs.eventually(lambda: vs.service.viewer_count(show) == 1)
    await viewer.pc.close()
    await vs.eventually(lambda: vs.service.viewer_count(show) == 0)
    assert vs.service.stats()["whep_sessions"] == 0


async def test_session_that_never_connects_is_reaped(vs: VideoServer) -> None:
    show = "show-8"
    await start_ingest(vs, show)
    viewer = vs.client()
    sdp = await (_recvonly(viewer)).offer()
    await viewer.pc.close()  # take the answer and vanish before ICE
    response = await vs.http.post(
        f"{vs.base_url}/whep/{show}", content=sdp, headers={"Content-Type": "application/sdp"}
    )
    assert response.status_code == 201
    assert vs.service.viewer_count(show) == 1
    await vs.eventually(lambda: vs.service.viewer_count(show) == 0)


async def test_host_leaving_ends_the_broadcast_for_viewers(vs: VideoServer) -> None:
    show = "show-9"
    host = vs.client(vs.token("host", show))
    assert (await host.publish(show, [PatternVideoTrack(160, 120), AudioStreamTrack()])).status_code == 201
    viewer = vs.client()
    assert (await viewer.play(show)).status_code == 201
    await viewer.wait_frames("video", 5)
    await vs.eventually(lambda: (show, True) in vs.ctx.ingest_events)

    await host.pc.close()  # no DELETE: e.g. the host's browser tab closed
    await vs.eventually(lambda: vs.service.stats()["ingests"] == 0)
    await vs.eventually(lambda: vs.service.stats()["whep_sessions"] == 0)
    await viewer.wait_state({"closed", "failed"})
    await vs.eventually(lambda: vs.ctx.ingest_events[-1] == (show, False))
    # The show can go live again.
    await start_ingest(vs, show)


async def test_no_tasks_or_threads_leak_over_join_leave_cycles(vs: VideoServer) -> None:
    show = "show-10"
    await start_ingest(vs, show)

    async def cycle() -> None:
        viewers = [vs.client() for _ in range(3)]
        for v in viewers:
            assert (await v.play(show)).status_code == 201
        for v in viewers:
            await v.wait_frames("video", 3)
        for i, v in enumerate(viewers):
            # Leave both ways: an explicit DELETE and a plain hang-up.
            if i % 2 == 0:
                assert (await v.delete()).status_code == 204
                # The server itself tears the connection down on DELETE.
                assert await v.wait_state({"closed", "failed"}) == "closed"
            await v.close()
            vs.clients.remove(v)
        await vs.eventually(lambda: vs.service.viewer_count(show) == 0)

    def media_threads() -> int:
        # The default executor's "asyncio_N" threads are a bounded pool that
        # grows lazily to its cap; decoder threads are per peer connection.
        return sum(1 for t in threading.enumerate() if not t.name.startswith("asyncio_"))

    def task_counts() -> Counter[str]:
        return Counter(getattr(t.get_coro(), "__qualname__", "?") for t in asyncio.all_tasks())

    await cycle()  # warm-up
    tasks_before, threads_before = task_counts(), media_threads()
    for _ in range(8):
        await cycle()
    # "No more than before": tasks that were winding down at the baseline may finish too.
    with contextlib.suppress(TimeoutError):
        await vs.eventually(
            lambda: not task_counts() - tasks_before and media_threads() <= threads_before,
            within_s=10,
        )
    assert not task_counts() - tasks_before, f"tasks left behind: {task_counts() - tasks_before}"
    assert media_threads() <= threads_before, [t.name for t in threading.enumerate()]
    assert vs.service.stats()["background_tasks"] == 0


def _recvonly(client):  # type: ignore[no-untyped-def]
    client.pc.addTransceiver("video", direction="recvonly")
    client.pc.addTransceiver("audio", direction="recvonly")
    return client


async def test_an_ended_show_stops_its_broadcast(vs: VideoServer) -> None:
    """`show.end` may be handled by another node: the node holding the ingest
    notices the ended show by itself, closes the ingest and its players."""
    show = "show-7"
    vs.service.ended_poll_s = 0.1
    await start_ingest(vs, show)
    viewer = vs.client()
    assert (await viewer.play(show)).status_code == 201
    assert vs.service.viewer_count(show) == 1
    vs.ctx.shows.shows[show]["status"] = "ended"
    try:
        await vs.eventually(lambda: vs.service.stats()["ingests"] == 0)
        assert vs.service.stats()["whep_sessions"] == 0
        await vs.eventually(lambda: vs.ctx.ingest_events[-1] == (show, False))
        # nothing keeps polling once no ingest is left
        await vs.eventually(lambda: vs.service._ended_watch is None or vs.service._ended_watch.done())
        # and the show can't go on air again
        again = await vs.client(vs.token("host", show)).publish(show, [PatternVideoTrack(160, 120)])
        assert again.status_code == 409 and again.json()["error"]["code"] == "show_ended"
    finally:
        vs.ctx.shows.shows[show]["status"] = "live"


async def test_end_show_closes_the_local_ingest_at_once(vs: VideoServer) -> None:
    show = "show-8"
    await start_ingest(vs, show)
    await vs.service.end_show(show)
    assert vs.service.stats()["ingests"] == 0 and not vs.service.is_live(show)
    await vs.service.end_show("show-9")  # no ingest there: nothing to do
