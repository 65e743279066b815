"""Every refusal is a 4xx with the `{"error": {"code", "message"}}` body, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiortc import RTCPeerConnection

from gateway.video.testing import PatternVideoTrack

from .harness import VideoServer, running_server


@pytest.fixture(scope="module")
async def video_server() -> AsyncIterator[VideoServer]:
    """Refusals happen before any media flows, so one relay mode is enough here."""
    async with running_server("forward") as server:
        yield server


async def make_offer(direction: str) -> str:
    pc = RTCPeerConnection()
    try:
        if direction == "sendonly":
            pc.addTransceiver(PatternVideoTrack(64, 48), direction="sendonly")
        else:
            pc.addTransceiver("video", direction=direction)
            pc.addTransceiver("audio", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        return pc.localDescription.sdp
    finally:
        await pc.close()


@pytest.fixture(scope="module")
async def offers() -> dict[str, str]:
    return {"whip": await make_offer("sendonly"), "whep": await make_offer("recvonly")}


async def post(
    vs: VideoServer, path: str, body: str, token: str | None = None,
    content_type: str = "application/sdp",
) -> tuple[int, str, dict[str, str]]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    response = await vs.http.post(vs.base_url + path, content=body, headers=headers)
    assert response.headers["content-type"].startswith("application/json"), response.text
    error = response.json()["error"]
    assert set(error) >= {"code", "message"} and error["message"]
    return response.status_code, error["code"], dict(response.headers)


@pytest.mark.parametrize(
    ("who", "show", "status", "code"),
    [
        (None, "show-11", 401, "unauthenticated"),
        ("garbage", "show-11", 401, "unauthenticated"),
        ("viewer:show-11", "show-11", 403, "forbidden"),
        ("moderator:show-11", "show-11", 403, "forbidden"),
        ("host:show-12", "show-11", 403, "forbidden"),
        ("admin:*", "no-such-show", 404, "not_found"),
        ("host:ended", "ended", 409, "show_ended"),
    ],
)
async def test_whip_auth_and_show(
    vs: VideoServer, offers: dict[str, str], who: str | None, show: str, status: int, code: str
) -> None:
    token = None
    if who == "garbage":
        token = "not.a.jwt"
    elif who is not None:
        role, token_show = who.split(":")
        token = vs.token(role, token_show)
    assert (await post(vs, f"/whip/{show}", offers["whip"], token))[:2] == (status, code)


async def test_expired_and_forged_tokens_are_401(vs: VideoServer, offers: dict[str, str]) -> None:
    expired = vs.ctx.tokens.mint(sub="h", name="h", role="host", show="show-11", ttl_s=-60)[0]
    assert (await post(vs, "/whip/show-11", offers["whip"], expired))[:2] == (401, "unauthenticated")
    forged = vs.token("host", "show-11")[:-4] + "AAAA"
    assert (await post(vs, "/whip/show-11", offers["whip"], forged))[:2] == (401, "unauthenticated")


@pytest.mark.parametrize(
    ("who", "show", "status", "code"),
    [
        ("garbage", "show-11", 401, "unauthenticated"),
        ("viewer:show-12", "show-11", 403, "forbidden"),
        (None, "no-such-show", 404, "not_found"),
        ("viewer:no-such-show", "no-such-show", 404, "not_found"),
        (None, "ended", 409, "show_ended"),
        (None, "show-11", 409, "no_ingest"),
        ("viewer:show-11", "show-11", 409, "no_ingest"),
    ],
)
async def test_whep_auth_and_show(
    vs: VideoServer, offers: dict[str, str], who: str | None, show: str, status: int, code: str
) -> None:
    token = None
    if who == "garbage":
        token = "not.a.jwt"
    elif who is not None:
        role, token_show = who.split(":")
        token = vs.token(role, token_show)
    assert (await post(vs, f"/whep/{show}", offers["whep"], token))[:2] == (status, code)


@pytest.mark.parametrize("path", ["/whip/show-11", "/whep/show-11"])
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", ""])
async def test_wrong_content_type_is_415(
    vs: VideoServer, offers: dict[str, str], path: str, content_type: str
) -> None:
    body = offers["whip" if "whip" in path else "whep"]
    token = vs.token("host", "show-11")
    result = await post(vs, path, body, token, content_type=content_type)
    assert result[:2] == (415, "unsupported_media_type")


async def test_content_type_parameters_and_case_are_accepted(vs: VideoServer) -> None:
    host = vs.client(vs.token("host", "show-13"))
    host.pc.addTransceiver(PatternVideoTrack(64, 48), direction="sendonly")
    sdp = await host.offer()
    response = await vs.http.post(
        f"{vs.base_url}/whip/show-13", content=sdp,
        headers={"Content-Type": "Application/SDP; charset=utf-8", "Authorization": f"Bearer {host.token}"},
    )
    assert response.status_code == 201
    assert (await vs.http.delete(vs.base_url + response.headers["location"])).status_code == 204


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("", "empty"),
        ("hello world", "v=0"),
        ("v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", "no media"),
        ("v=0\r\nm=video notaport RTP/AVP 96\r\n", "malformed"),
        ("\xff\xfe", "UTF-8"),
    ],
)
async def test_bad_sdp_is_400(vs: VideoServer, body: str, detail: str) -> None:
    token = vs.token("host", "show-11")
    raw = body.encode("latin-1") if detail == "UTF-8" else body.encode()
    response = await vs.http.post(
        f"{vs.base_url}/whip/show-11", content=raw,
        headers={"Content-Type": "application/sdp", "Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "bad_sdp"
    assert detail.lower() in error["message"].lower()
    # A failed attempt must not leave the show reserved.
    assert vs.service.stats()["ingests_negotiating"] == 0


async def test_offer_in_the_wrong_direction_is_400(vs: VideoServer, offers: dict[str, str]) -> None:
    token = vs.token("host", "show-11")
    status, code, _ = await post(vs, "/whip/show-11", offers["whep"], token)
    assert (status, code) == (400, "bad_sdp")


async def test_offer_without_dtls_is_400_not_500(vs: VideoServer, offers: dict[str, str]) -> None:
    stripped = "\r\n".join(
        line for line in offers["whip"].split("\r\n")
        if not line.startswith(("a=fingerprint", "a=setup"))
    )
    status, code, _ = await post(vs, "/whip/show-11", stripped, vs.token("host", "show-11"))
    assert (status, code) == (400, "bad_sdp")


async def test_offer_without_common_codec_is_422(vs: VideoServer, offers: dict[str, str]) -> None:
    # Rename every codec to one we can't handle.
    lines = []
    for line in offers["whip"].split("\r\n"):
        if line.startswith("a=rtpmap:"):
            pt = line.split(":", 1)[1].split(" ", 1)[0]
            line = f"a=rtpmap:{pt} AV9000/90000"
        lines.append(line)
    status, code, _ = await post(vs, "/whip/show-11", "\r\n".join(lines), vs.token("host", "show-11"))
    assert (status, code) == (422, "negotiation_failed")
    assert vs.service.stats()["ingests"] == 0


async def test_oversized_offer_is_413(vs: VideoServer) -> None:
    body = "v=0\r\n" + "a=x-padding:" + "x" * 70_000 + "\r\n"
    status, code, _ = await post(vs, "/whip/show-11", body, vs.token("host", "show-11"))
    assert (status, code) == (413, "payload_too_large")


async def test_patch_is_405_and_unknown_sessions_404(vs: VideoServer) -> None:
    for kind in ("whip", "whep"):
        response = await vs.http.patch(
            f"{vs.base_url}/{kind}/show-11/abc", content="a=candidate:1",
            headers={"Content-Type": "application/trickle-ice-sdpfrag"},
        )
        assert response.status_code == 405
        assert response.json()["error"]["code"] == "method_not_allowed"
        assert response.headers["allow"] == "DELETE"
        response = await vs.http.delete(f"{vs.base_url}/{kind}/show-11/abc")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("action", "path", "who", "status"),
    [
        ("publish", "show-11", "host:show-11", 204),
        ("publish", "live/show-11/whip", "admin:*", 204),
        ("publish", "show-11", None, 401),
        ("publish", "show-11", "viewer:show-11", 403),
        ("publish", "show-11", "host:show-12", 403),
        ("publish", "no-such-show", "admin:*", 404),
        ("read", "show-11", None, 204),
        ("read", "show-11", "viewer:show-11", 204),
        ("read", "show-11", "viewer:show-12", 403),
        ("read", "show-11", "garbage", 401),
        ("read", "no-such-show", None, 404),
        ("api", "show-11", "admin:*", 403),
        ("playback", "show-11", "host:show-11", 403),
    ],
)
async def test_sfu_auth_callback_applies_the_same_rules(
    vs: VideoServer, action: str, path: str, who: str | None, status: int
) -> None:
    token = None
    if who == "garbage":
        token = "not.a.jwt"
    elif who is not None:
        role, token_show = who.split(":")
        token = vs.token(role, token_show)
    # MediaMTX's authMethod: http body; the bearer token arrives in "token".
    body = {"user": "", "password": "", "token": token or "", "ip": "203.0.113.7",
            "action": action, "path": path, "protocol": "webrtc", "id": "x", "query": ""}
    response = await vs.http.post(f"{vs.base_url}/video/sfu-auth", json=body)
    assert response.status_code == status, response.text


async def test_sfu_auth_takes_the_token_from_the_query_and_refuses_junk(vs: VideoServer) -> None:
    token = vs.token("host", "show-11")
    body = {"action": "publish", "path": "show-11", "query": f"token={token}"}
    assert (await vs.http.post(f"{vs.base_url}/video/sfu-auth", json=body)).status_code == 204
    for junk in (b"not json", b"[]", b'{"path": "show-11"}', b'{"action": "read", "path": "/"}'):
        response = await vs.http.post(f"{vs.base_url}/video/sfu-auth", content=junk)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "bad_request"
