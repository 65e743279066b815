"""Pure checks: content types, offer vetting and ICE server URLs (no sockets)."""

from __future__ import annotations

import pytest

from gateway.video.errors import BadSdp, UnsupportedMediaType
from gateway.video.sdp import (
    check_content_type,
    check_offer,
    decode_offer,
    ice_link_headers,
    parse_ice_server,
    parse_ice_servers,
)

# Shaped like what OBS 30 (libdatachannel) sends for WHIP: H264 + Opus, sendonly.
OBS_OFFER = "\r\n".join([
    "v=0",
    "o=rtc 2840915223 0 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=group:LS 0 1",
    "a=msid-semantic:WMS *",
    "a=setup:actpass",
    "a=ice-ufrag:Zt4L",
    "a=ice-pwd:6P0gZ0bYJ0jv5cCqYqJx2w",
    "a=ice-options:ice2,trickle",
    "a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=mid:0",
    "a=sendonly",
    "a=ssrc:2291137036 cname:ZxJLTmVc1qX7G9bA",
    "a=ssrc:2291137036 msid:obs-audio obs-audio",
    "a=msid:obs-audio obs-audio",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;maxaveragebitrate=96000;stereo=1;sprop-stereo=1;useinbandfec=1",
    "m=video 9 UDP/TLS/RTP/SAVPF 96",
    "c=IN IP4 0.0.0.0",
    "a=mid:1",
    "a=sendonly",
    "a=ssrc:2291137037 cname:ZxJLTmVc1qX7G9bA",
    "a=ssrc:2291137037 msid:obs-video obs-video",
    "a=msid:obs-video obs-video",
    "a=rtcp-mux",
    "a=rtpmap:96 H264/90000",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:96 goog-remb",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;level-asymmetry-allowed=1",
    "",
])

# Shaped like a browser WHEP offer: recvonly, VP8/H264/rtx, an mDNS host candidate.
BROWSER_WHEP_OFFER = "\r\n".join([
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0 1",
    "a=extmap-allow-mixed",
    "a=msid-semantic: WMS",
    "m=video 9 UDP/TLS/RTP/SAVPF 96 97 102",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=candidate:1467250027 1 udp 2122260223 3a1f3c1e-7b2a-4e0c-9a2e-0d8d2c7f1a11.local 54400 typ host generation 0",
    "a=ice-ufrag:9uB6",
    "a=ice-pwd:Bc5kK0fHn6wl2n3O8k0vF1pX",
    "a=ice-options:trickle",
    "a=fingerprint:sha-256 3A:91:26:55:1F:5E:3A:0D:B2:29:12:3D:41:0A:8B:07:EE:4B:0E:CA:60:2A:8F:11:77:60:27:C1:8A:4A:2F:4D",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:toffset",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=rtpmap:96 VP8/90000",
    "a=rtcp-fb:96 goog-remb",
    "a=rtcp-fb:96 nack",
    "a=rtcp-fb:96 nack pli",
    "a=rtpmap:97 rtx/90000",
    "a=fmtp:97 apt=96",
    "a=rtpmap:102 H264/90000",
    "a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0",
    "c=IN IP4 0.0.0.0",
    "a=ice-ufrag:9uB6",
    "a=ice-pwd:Bc5kK0fHn6wl2n3O8k0vF1pX",
    "a=fingerprint:sha-256 3A:91:26:55:1F:5E:3A:0D:B2:29:12:3D:41:0A:8B:07:EE:4B:0E:CA:60:2A:8F:11:77:60:27:C1:8A:4A:2F:4D",
    "a=setup:actpass",
    "a=mid:1",
    "a=recvonly",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "",
])


@pytest.mark.parametrize(
    "header", ["application/sdp", "APPLICATION/SDP", "application/sdp; charset=utf-8", " application/sdp "]
)
def test_sdp_content_types_accepted(header: str) -> None:
    check_content_type(header)


@pytest.mark.parametrize("header", [None, "", "text/plain", "application/json", "application/sdpx"])
def test_other_content_types_refused(header: str | None) -> None:
    with pytest.raises(UnsupportedMediaType):
        check_content_type(header)


def test_decode_offer() -> None:
    assert decode_offer(b"v=0\r\n") == "v=0\r\n"
    for body in (b"", b"  \r\n", b"\xff\xfe"):
        with pytest.raises(BadSdp):
            decode_offer(body)


def test_obs_offer_is_a_valid_whip_offer() -> None:
    summary = check_offer(OBS_OFFER, "whip")
    assert summary.sending_kinds == {"audio", "video"}
    assert [s.codecs for s in summary.sections] == [("opus",), ("H264",)]
    with pytest.raises(BadSdp, match="WHEP offer must receive"):
        check_offer(OBS_OFFER, "whep")


def test_browser_offer_is_a_valid_whep_offer() -> None:
    summary = check_offer(BROWSER_WHEP_OFFER, "whep")
    assert summary.receiving_kinds == {"audio", "video"}
    assert summary.sections[0].codecs == ("VP8", "rtx", "H264")
    with pytest.raises(BadSdp, match="WHIP offer must send"):
        check_offer(BROWSER_WHEP_OFFER, "whip")


def _without(sdp: str, prefix: str) -> str:
    return "\r\n".join(line for line in sdp.split("\r\n") if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: _without(s, "a=ice-ufrag"), "ice-ufrag"),
        (lambda s: _without(s, "a=fingerprint"), "fingerprint"),
        (lambda s: _without(s, "a=setup"), "fingerprint"),
        (lambda s: _without(s, "a=rtcp-mux"), "rtcp-mux"),
        (lambda s: _without(s, "a=sendonly"), "direction"),
        (lambda s: _without(_without(_without(s, "a=rtpmap"), "a=fmtp"), "a=rtcp-fb"), "codecs"),
        (lambda s: _without(s, "a=rtpmap"), "malformed"),
        (lambda s: _without(s, "m="), "no media"),
        (lambda s: s.replace("m=audio 9", "m=application 9"), "only audio and video"),
        (lambda s: s.replace("m=audio 9", "m=video 9"), "at most one video"),
        (lambda s: s.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video x"), "malformed"),
        (lambda s: s.replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=video 9 UDP/TLS/RTP/SAVPF 300"), "malformed"),
        (lambda s: s.replace("v=0", "v=1"), "v=0"),
    ],
)
def test_broken_offers_say_what_is_wrong(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(BadSdp, match=message):
        check_offer(mutate(OBS_OFFER), "whip")


def test_ice_server_urls() -> None:
    stun = parse_ice_server("stun:stun.example.com:3478")
    assert (stun.urls, stun.username, stun.credential) == ("stun:stun.example.com:3478", None, None)
    turn = parse_ice_server("turn:alice:p%40ss@turn.example.com:3478?transport=udp")
    assert turn.urls == "turn:turn.example.com:3478?transport=udp"
    assert (turn.username, turn.credential) == ("alice", "p@ss")
    assert parse_ice_server("turns://bob:x@turn.example.com:5349").urls == "turns:turn.example.com:5349"
    assert parse_ice_servers(["", " stun:a.example:3478 "])[0].urls == "stun:a.example:3478"
    for bad in ("http://example.com", "stun:", "stun:u:p@host", "turn:nopass@host", "example.com"):
        with pytest.raises(ValueError):
            parse_ice_server(bad)


def test_only_stun_is_advertised_to_clients() -> None:
    servers = parse_ice_servers(["stun:stun.example.com:3478", "turn:u:secret@turn.example.com"])
    assert ice_link_headers(servers) == ['<stun:stun.example.com:3478>; rel="ice-server"']
