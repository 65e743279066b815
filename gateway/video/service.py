"""WHIP ingest and WHEP playback over aiortc, as Starlette routes.

Endpoints (RFC 9725 WHIP and the WHEP draft, without trickle ICE):

    POST   /whip/{show}            host/admin bearer, application/sdp -> 201 answer
    DELETE /whip/{show}/{session}  ends the ingest (and every viewer of it)
    POST   /whep/{show}            optional bearer, application/sdp   -> 201 answer
    DELETE /whep/{show}/{session}  ends one viewer
    POST   /video/sfu-auth         the same rules, asked by an external SFU (sfu.py)

The session URL is the capability for DELETE: it holds 128 random bits and is
only ever sent to the client that created the session, which is how WHIP and
WHEP clients expect it to work (not all of them resend the token on DELETE).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol
from urllib.parse import quote

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.errors import error_response
from gateway.http_auth import optional_claims, require_claims
from gateway.video import forward, sfu
from gateway.video.errors import IngestActive, MethodNotAllowed, NegotiationFailed, NoIngest
from gateway.video.sdp import (
    MAX_SDP_BYTES,
    SDP_MEDIA_TYPE,
    OfferSummary,
    check_content_type,
    check_offer,
    decode_offer,
    ice_link_headers,
    parse_ice_servers,
)
from gateway.video.sessions import (
    Ingest,
    RelayMode,
    Session,
    Viewer,
    apply_offer,
    create_answer,
    make_peer_connection,
    pick_codecs,
    prefer_codec,
)
from livecore.auth import TokenService
from livecore.errors import (
    BadRequest,
    LiveCoreError,
    NotFound,
    PayloadTooLarge,
    ShowEnded,
    Unavailable,
)
from livecore.settings import Settings

log = logging.getLogger("livecore.video")

IngestHook = Callable[[str, bool], Awaitable[None]]
# Retry-After on 503: long enough for some sessions to end, short enough that a
# player retrying behind a spinner doesn't look broken.
RETRY_AFTER_MS = 5000


class ShowDirectory(Protocol):
    # Positional-only so any `get(self, <name>)` implementation matches.
    async def get(self, show_id: str, /) -> Mapping[str, Any] | None: ...


class VideoContext(Protocol):
    """The part of the application context video needs (AppContext satisfies it)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def tokens(self) -> TokenService: ...

    @property
    def shows(self) -> ShowDirectory: ...


class VideoService:
    """Owns every WHIP/WHEP peer connection of this process.

    State changes happen without an `await` between the check and the update
    (e.g. "is an ingest active?" then "reserve the show"), so two concurrent
    POSTs on the single event loop can't both win.
    """

    def __init__(
        self,
        ctx: VideoContext,
        *,
        connect_timeout_s: float = 30.0,
        negotiate_timeout_s: float = 15.0,
        close_timeout_s: float = 5.0,
        max_ingests: int = 32,
        relay_mode: RelayMode | None = None,
    ) -> None:
        self.ctx = ctx
        if relay_mode is None:
            relay_mode = getattr(ctx.settings, "video_relay", None) or "forward"
        if relay_mode not in ("forward", "transcode"):
            raise ValueError(f"unknown video relay mode {relay_mode!r}")
        if relay_mode == "forward" and not forward.supported():
            log.warning("video: this aiortc can't forward encoded frames; transcoding instead")
            relay_mode = "transcode"
        self.relay_mode: RelayMode = relay_mode
        self.connect_timeout_s = connect_timeout_s
        self.negotiate_timeout_s = negotiate_timeout_s
        self.close_timeout_s = close_timeout_s
        self.max_ingests = max_ingests
        self.max_viewers = ctx.settings.max_whep_sessions
        self._ice_servers = parse_ice_servers(ctx.settings.ice_servers)
        self._links = ice_link_headers(self._ice_servers)

        self._ingests: dict[str, Ingest] = {}  # show -> live or connecting ingest
        self._ingests_reserved: set[str] = set()  # shows whose ingest is negotiating
        self._viewers: dict[str, Viewer] = {}  # session id -> viewer
        self._viewers_reserved = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._ended_watch: asyncio.Task[Any] | None = None
        self.ended_poll_s = 2.0

        self.routes: list[BaseRoute] = [
            Route("/whip/{show}", self._post_whip, methods=["POST"]),
            Route("/whip/{show}/{session}", self._whip_session, methods=["DELETE", "PATCH"]),
            Route("/whep/{show}", self._post_whep, methods=["POST"]),
            Route("/whep/{show}/{session}", self._whep_session, methods=["DELETE", "PATCH"]),
            Route("/video/sfu-auth", self._sfu_auth, methods=["POST"]),
        ]

    # ---- introspection (tests, metrics, the host page) ----

    def stats(self) -> dict[str, Any]:
        return {
            "relay_mode": self.relay_mode,
            "ingests": len(self._ingests),
            "ingests_negotiating": len(self._ingests_reserved),
            "whep_sessions": len(self._viewers),
            "whep_negotiating": self._viewers_reserved,
            "background_tasks": len(self._tasks),
        }

    def is_live(self, show: str) -> bool:
        ingest = self._ingests.get(show)
        return ingest is not None and ingest.connected and not ingest.closed

    def viewer_count(self, show: str) -> int:
        ingest = self._ingests.get(show)
        return 0 if ingest is None else len(ingest.viewers)

    def ingest_frames(self, show: str) -> dict[str, int]:
        ingest = self._ingests.get(show)
        return {} if ingest is None else dict(ingest.frames)

    # ---- HTTP handlers ----

    async def _post_whip(self, request: Request) -> Response:
        return await self._guard(self._do_post_whip(request))

    async def _post_whep(self, request: Request) -> Response:
        return await self._guard(self._do_post_whep(request))

    async def _whip_session(self, request: Request) -> Response:
        return await self._guard(self._do_session(request, "whip"))

    async def _whep_session(self, request: Request) -> Response:
        return await self._guard(self._do_session(request, "whep"))

    async def _sfu_auth(self, request: Request) -> Response:
        return await self._guard(self._do_sfu_auth(request))

    async def _guard(self, handler: Coroutine[Any, Any, Response]) -> Response:
        """The one place errors become responses for these routes.

        Domain errors carry their status. Anything else is our bug: it is
        logged with its stack and answered with the generic JSON error body,
        never a traceback.
        """
        try:
            return await handler
        except LiveCoreError as exc:
            response = error_response(exc)
            if isinstance(exc, MethodNotAllowed):
                response.headers["Allow"] = "DELETE"
            return response
        except Exception:
            log.exception("video: unexpected error")
            return error_response(LiveCoreError())

    async def _do_post_whip(self, request: Request) -> Response:
        show = request.path_params["show"]
        claims = require_claims(request, self.ctx.tokens)
        claims.require(show, *sfu.PUBLISH_ROLES)
        check_content_type(request.headers.get("content-type"))
        await self._require_show(show)
        self._require_open()
        if show in self._ingests or show in self._ingests_reserved:
            raise IngestActive()
        if len(self._ingests) + len(self._ingests_reserved) >= self.max_ingests:
            raise Unavailable("this node has no room for another ingest", retry_after_ms=RETRY_AFTER_MS)
        self._ingests_reserved.add(show)
        try:
            offer = decode_offer(await _read_body(request))
            summary = check_offer(offer, "whip")
            ingest, answer = await self._negotiate_ingest(show, offer, summary)
        finally:
            self._ingests_reserved.discard(show)
        log.info("video: ingest %s opened for show %s (%s, %s) by %s", ingest.id, show,
                 ",".join(f"{k}={c}" for k, c in sorted(ingest.codecs.items())), ingest.mode, claims.sub)
        return self._created(request, ingest, answer)

    async def _do_post_whep(self, request: Request) -> Response:
        show = request.path_params["show"]
        claims = optional_claims(request, self.ctx.tokens)
        if claims is not None:
            claims.require(show, *sfu.WATCH_ROLES)
        check_content_type(request.headers.get("content-type"))
        await self._require_show(show)
        self._require_open()
        ingest = self._ingests.get(show)
        if ingest is None or ingest.closed or not ingest.kinds:
            raise NoIngest()
        if len(self._viewers) + self._viewers_reserved >= self.max_viewers:
            raise Unavailable("this node is at its viewer limit", retry_after_ms=RETRY_AFTER_MS)
        self._viewers_reserved += 1
        try:
            offer = decode_offer(await _read_body(request))
            summary = check_offer(offer, "whep")
            if not summary.receiving_kinds & ingest.kinds:
                raise NegotiationFailed(
                    f"the offer asks for {'/'.join(sorted(summary.receiving_kinds))}; "
                    f"this broadcast has {'/'.join(sorted(ingest.kinds))}"
                )
            viewer, answer = await self._negotiate_viewer(ingest, offer, summary)
        finally:
            self._viewers_reserved -= 1
        return self._created(request, viewer, answer)

    async def _do_session(self, request: Request, kind: str) -> Response:
        if request.method == "PATCH":
            raise MethodNotAllowed(
                "trickle ICE and ICE restarts are not supported: the answer already holds "
                "every candidate; DELETE this session and POST a new offer instead"
            )
        show, session_id = request.path_params["show"], request.path_params["session"]
        session: Session | None
        if kind == "whip":
            session = self._ingests.get(show)
            if session is not None and session.id != session_id:
                session = None
        else:
            session = self._viewers.get(session_id)
            if session is not None and session.show != show:
                session = None
        if session is None or session.closed:
            raise NotFound("no such session (it may have ended already)")
        await self._close(session, "deleted by client")
        return Response(status_code=204)

    async def _do_sfu_auth(self, request: Request) -> Response:
        try:
            body = json.loads(await _read_body(request))
        except ValueError as exc:
            raise BadRequest("a JSON object is expected") from exc
        if not isinstance(body, dict):
            raise BadRequest("a JSON object is expected")
        show, _ = sfu.authorize(body, self.ctx.tokens)
        await self._require_show(show)
        return Response(status_code=204)

    # ---- negotiation ----

    async def _negotiate_ingest(
        self, show: str, offer: str, summary: OfferSummary
    ) -> tuple[Ingest, str]:
        codecs = pick_codecs(summary)
        if not codecs:
            raise NegotiationFailed("no supported codec: send video VP8/H264 or audio Opus/PCMU/PCMA")
        pc = make_peer_connection(self._ice_servers)
        ingest = Ingest(secrets.token_urlsafe(16), show, pc, self.relay_mode)
        ingest.codecs = codecs
        for kind, codec in codecs.items():
            # Created before the offer is applied so aiortc adopts them, with
            # our single-codec preference, for the offer's sections.
            prefer_codec(pc.addTransceiver(kind, direction="recvonly"), codec)

        @pc.on("track")
        def on_track(track: Any) -> None:
            ingest.tracks.setdefault(track.kind, track)

        try:
            async with asyncio.timeout(self.negotiate_timeout_s):
                await apply_offer(pc, offer)
                for transceiver in pc.getTransceivers():
                    # Nothing flows back to the host; also keeps a sendrecv
                    # offer from making us start a sender.
                    transceiver.direction = "recvonly"
                if ingest.mode == "forward":
                    self._tap(ingest)
                answer = await create_answer(pc)
        except BaseException as exc:
            await self._discard(pc)
            if isinstance(exc, TimeoutError):
                raise Unavailable("ICE gathering timed out", retry_after_ms=RETRY_AFTER_MS) from exc
            raise
        if not ingest.kinds:
            await self._discard(pc)
            raise NegotiationFailed("the offer carries no audio or video track")
        if self._closing:
            await self._discard(pc)
            raise Unavailable("shutting down", retry_after_ms=RETRY_AFTER_MS)

        self._ingests[show] = ingest
        if self._ended_watch is None or self._ended_watch.done():
            # Not in _tasks (per-session work): one poller per node while ingests exist.
            self._ended_watch = asyncio.create_task(self._watch_ended_shows())
        self._watch(ingest)
        ingest.start(lambda: self._spawn(self._close(ingest, "host tracks ended")))
        return ingest, answer

    def _tap(self, ingest: Ingest) -> None:
        taps: dict[str, forward.Fanout] = {}
        try:
            for transceiver in ingest.pc.getTransceivers():
                track = transceiver.receiver.track
                if track is not None and ingest.tracks.get(track.kind) is track:
                    taps[track.kind] = forward.tap_receiver(transceiver.receiver, track.kind)
        except RuntimeError:
            # Untapped receivers still decode normally, so transcoding works.
            log.warning("video: cannot tap aiortc receivers; ingest %s transcodes", ingest.id)
            ingest.mode = "transcode"
            return
        for kind, fanout in taps.items():
            fanout.codec_name = ingest.codecs.get(kind)
        ingest.fanouts = taps

    async def _negotiate_viewer(
        self, ingest: Ingest, offer: str, summary: OfferSummary
    ) -> tuple[Viewer, str]:
        pc = make_peer_connection(self._ice_servers)
        viewer = Viewer(secrets.token_urlsafe(16), ingest.show, pc, ingest)
        ours = []
        for kind in sorted(summary.receiving_kinds & ingest.kinds):
            # sendonly even for a sendrecv offer: media from a viewer would be
            # received (and, transcoding, decoded) for nothing.
            transceiver = pc.addTransceiver(kind, direction="sendonly")
            track = ingest.subscribe(kind, transceiver.sender)
            if track is None:
                continue
            transceiver.sender.replaceTrack(track)
            viewer.tracks.append(track)
            if ingest.mode == "forward":
                # Forwarded frames are in the host's codec; the viewer must take exactly that.
                prefer_codec(transceiver, ingest.codecs[kind])
            ours.append(transceiver)
        try:
            async with asyncio.timeout(self.negotiate_timeout_s):
                try:
                    await apply_offer(pc, offer)
                except NegotiationFailed as exc:
                    if ingest.mode == "forward":
                        have = ", ".join(f"{k} {c}" for k, c in sorted(ingest.codecs.items()))
                        raise NegotiationFailed(
                            f"this broadcast is {have}; the offer must accept those codecs"
                        ) from exc
                    raise
                for transceiver in pc.getTransceivers():
                    if transceiver not in ours:
                        transceiver.direction = "inactive"
                answer = await create_answer(pc)
        except BaseException as exc:
            viewer.stop_tracks()
            await self._discard(pc)
            if isinstance(exc, TimeoutError):
                raise Unavailable("ICE gathering timed out", retry_after_ms=RETRY_AFTER_MS) from exc
            raise
        if ingest.closed or self._closing:
            # The host left (or we are shutting down) while we negotiated.
            viewer.stop_tracks()
            await self._discard(pc)
            raise NoIngest()

        self._viewers[viewer.id] = viewer
        ingest.viewers.add(viewer.id)
        self._watch(viewer)
        return viewer, answer

    def _created(self, request: Request, session: Session, answer: str) -> Response:
        root = request.scope.get("root_path", "")
        location = f"{root}/{session.kind}/{quote(session.show, safe='')}/{session.id}"
        headers = {"Location": location, "Cache-Control": "no-store"}
        response = Response(answer, status_code=201, media_type=SDP_MEDIA_TYPE, headers=headers)
        for link in self._links:
            response.headers.append("Link", link)
        return response

    # ---- lifecycle ----

    def _watch(self, session: Session) -> None:
        pc = session.pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            state = pc.connectionState
            if state == "connected" and not session.connected:
                session.connected = True
                if session.connect_timer is not None:
                    session.connect_timer.cancel()
                    session.connect_timer = None
                log.info("video: %s %s connected", session.kind, session.id)
                if isinstance(session, Ingest):
                    session.announce = self._spawn(self._announce(session.show, True))
            elif state in ("failed", "closed"):
                self._spawn(self._close(session, f"connection {state}"))

        # A client that takes the answer and never connects would otherwise
        # hold a slot (and a viewer's place under the limit) forever.
        session.connect_timer = asyncio.get_running_loop().call_later(
            self.connect_timeout_s, self._on_connect_timeout, session
        )

    def _on_connect_timeout(self, session: Session) -> None:
        session.connect_timer = None
        if not session.connected:
            self._spawn(self._close(session, "did not connect in time"))

    async def _close(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        if session.connect_timer is not None:
            session.connect_timer.cancel()
            session.connect_timer = None
        log.info("video: %s %s of show %s closed: %s", session.kind, session.id, session.show, reason)

        if isinstance(session, Viewer):
            self._viewers.pop(session.id, None)
            session.ingest.viewers.discard(session.id)
            # A sender that never started won't stop its track itself.
            session.stop_tracks()
            await self._discard(session.pc)
            return

        assert isinstance(session, Ingest)
        if self._ingests.get(session.show) is session:
            del self._ingests[session.show]
        if not self._ingests and self._ended_watch is not None and self._ended_watch is not asyncio.current_task():
            self._ended_watch.cancel()  # nothing left to watch; no idle task lingers
        # Viewers are closed rather than left connected and silent: a player
        # sees its connection end and can POST again when the host is back.
        viewers = [self._viewers[v] for v in list(session.viewers) if v in self._viewers]
        await asyncio.gather(*(self._close(v, "broadcast ended") for v in viewers))
        await session.stop_consuming()
        await self._discard(session.pc)
        if session.announce is not None:
            # Keep the hook's calls in order: "started" must land before "stopped".
            await asyncio.gather(session.announce, return_exceptions=True)
            await self._announce(session.show, False)

    async def _discard(self, pc: Any) -> None:
        try:
            await asyncio.wait_for(pc.close(), self.close_timeout_s)
        except Exception:
            log.warning("video: peer connection did not close cleanly", exc_info=True)

    async def _announce(self, show: str, live: bool) -> None:
        hook: IngestHook | None = getattr(self.ctx, "on_ingest_change", None)
        if hook is None:
            return
        try:
            await asyncio.wait_for(hook(show, live), self.close_timeout_s)
        except Exception:
            log.warning("video: on_ingest_change(%s, %s) failed", show, live, exc_info=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # Strong references: the loop only keeps weak ones to running tasks.
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _require_show(self, show: str) -> None:
        try:
            record = await self.ctx.shows.get(show)
        except LiveCoreError:
            raise
        except Exception as exc:
            log.warning("video: show lookup failed", exc_info=True)
            raise Unavailable("show directory unavailable", retry_after_ms=RETRY_AFTER_MS) from exc
        if record is None:
            raise NotFound("unknown show")
        if record.get("status") == "ended":
            raise ShowEnded()

    async def end_show(self, show: str) -> None:
        """The show ended: stop its broadcast on this node (and with it its players)."""
        ingest = self._ingests.get(show)
        if ingest is not None:
            await self._close(ingest, "show ended")

    async def _watch_ended_shows(self) -> None:
        """`show.end` may reach another node than the one holding the ingest: every
        node ends its own ingests of ended shows (a few ingests per node, one
        lookup each per poll, and only while any ingest is open)."""
        while self._ingests and not self._closing:
            await asyncio.sleep(self.ended_poll_s)
            for show in list(self._ingests):
                try:
                    record = await self.ctx.shows.get(show)
                except Exception:
                    log.warning("video: show lookup failed; will retry", exc_info=True)
                    continue
                if record is not None and record.get("status") == "ended":
                    # shielded: a cancel (last ingest closed elsewhere) must not cut a close short
                    await asyncio.shield(self.end_show(show))

    def _require_open(self) -> None:
        if self._closing:
            raise Unavailable("shutting down", retry_after_ms=RETRY_AFTER_MS)

    async def aclose(self) -> None:
        """Close every session (viewers first via their ingest) and wait for cleanup."""
        self._closing = True
        if self._ended_watch is not None:
            self._ended_watch.cancel()
        sessions: list[Session] = [*self._ingests.values(), *self._viewers.values()]
        await asyncio.gather(*(self._close(s, "server shutting down") for s in sessions))
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_SDP_BYTES:
        raise PayloadTooLarge(f"an SDP offer may be at most {MAX_SDP_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_SDP_BYTES:
                raise PayloadTooLarge(f"an SDP offer may be at most {MAX_SDP_BYTES} bytes")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        raise BadRequest("the client went away while sending the offer") from exc
    return b"".join(chunks)


def create_video_service(ctx: VideoContext) -> VideoService:
    return VideoService(ctx)
