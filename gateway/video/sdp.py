"""Pure checks on WHIP/WHEP requests: content type, SDP offers, ICE server URLs.

No sockets and no peer connections here. aiortc's SDP parser is lenient in
some places (it accepts an offer without DTLS setup and then fails deep inside
`setRemoteDescription` with an AttributeError) and strict in others (bare
`assert`s), so every offer is vetted here first and turned into a clear 400
instead of an accidental 500.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from aiortc import RTCIceServer
from aiortc.sdp import SessionDescription

from gateway.video.errors import BadSdp, UnsupportedMediaType

SDP_MEDIA_TYPE = "application/sdp"
# Real offers are 2-10 KiB; the cap only exists so a client can't make us parse megabytes.
MAX_SDP_BYTES = 64 * 1024
# One audio and one video section is what WHIP/WHEP clients (OBS, browsers) send.
MAX_SECTIONS_PER_KIND = 1

Role = Literal["whip", "whep"]
_SENDING = frozenset({"sendonly", "sendrecv"})
_RECEIVING = frozenset({"recvonly", "sendrecv"})


@dataclass(frozen=True, slots=True)
class MediaSection:
    kind: str
    direction: str
    codecs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class OfferSummary:
    sections: tuple[MediaSection, ...]

    def kinds(self, directions: frozenset[str]) -> set[str]:
        return {s.kind for s in self.sections if s.direction in directions}

    @property
    def sending_kinds(self) -> set[str]:
        """Kinds the offerer wants to send (what a WHIP ingest provides)."""
        return self.kinds(_SENDING)

    @property
    def receiving_kinds(self) -> set[str]:
        """Kinds the offerer wants to receive (what a WHEP viewer asks for)."""
        return self.kinds(_RECEIVING)


def check_content_type(header: str | None) -> None:
    """Accept `application/sdp` with or without parameters, in any letter case."""
    media_type = (header or "").split(";", 1)[0].strip().lower()
    if media_type != SDP_MEDIA_TYPE:
        shown = media_type or "none"
        raise UnsupportedMediaType(f"Content-Type must be application/sdp, got {shown}")


def decode_offer(body: bytes) -> str:
    if not body.strip():
        raise BadSdp("the request body is empty; send an SDP offer")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadSdp("the SDP offer is not valid UTF-8") from exc


def check_offer(text: str, role: Role) -> OfferSummary:
    """Validate an SDP offer for `role` and summarise its media sections.

    Raises BadSdp with a message that says what is wrong, so that a developer
    pointing a new WHIP client at us can fix it without reading our logs.
    """
    if not text.lstrip().startswith("v=0"):
        raise BadSdp("an SDP offer must start with v=0")
    try:
        parsed = SessionDescription.parse(text)
    # The parser signals malformed lines with ValueError, KeyError, IndexError
    # or bare asserts; all of them mean the same thing to the client.
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise BadSdp(f"malformed SDP ({detail})") from exc

    if not parsed.media:
        raise BadSdp("the offer has no media sections")

    sections: list[MediaSection] = []
    per_kind: dict[str, int] = {}
    for index, media in enumerate(parsed.media):
        where = f"m-line {index} ({media.kind})"
        if media.kind not in ("audio", "video"):
            raise BadSdp(f"{where}: only audio and video sections are supported")
        per_kind[media.kind] = per_kind.get(media.kind, 0) + 1
        if per_kind[media.kind] > MAX_SECTIONS_PER_KIND:
            raise BadSdp(f"{where}: at most one {media.kind} section is supported")
        if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
            raise BadSdp(f"{where}: a=ice-ufrag and a=ice-pwd are required")
        if media.dtls is None or not media.dtls.fingerprints:
            raise BadSdp(f"{where}: a=fingerprint and a=setup are required (DTLS-SRTP)")
        if not media.rtcp_mux:
            raise BadSdp(f"{where}: a=rtcp-mux is required")
        if media.direction is None:
            raise BadSdp(f"{where}: a direction attribute (a=sendonly, a=recvonly, ...) is required")
        if not media.rtp.codecs:
            raise BadSdp(f"{where}: no a=rtpmap codecs")
        codecs = tuple(dict.fromkeys(c.mimeType.split("/", 1)[-1] for c in media.rtp.codecs))
        sections.append(MediaSection(kind=media.kind, direction=media.direction, codecs=codecs))

    summary = OfferSummary(sections=tuple(sections))
    if role == "whip" and not summary.sending_kinds:
        raise BadSdp("a WHIP offer must send media (a=sendonly or a=sendrecv)")
    if role == "whep" and not summary.receiving_kinds:
        raise BadSdp("a WHEP offer must receive media (a=recvonly or a=sendrecv)")
    return summary


def parse_ice_server(url: str) -> RTCIceServer:
    """Turn one configured URL into an RTCIceServer.

    Settings hold plain strings (`LIVECORE_ICE_SERVERS='["stun:..."]'`), so TURN
    credentials ride in the URL: `turn:user:secret@turn.example.com:3478?transport=udp`.
    Percent-encoding in the user or secret is decoded.
    """
    url = url.strip()
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("stun", "stuns", "turn", "turns") or not rest:
        raise ValueError(f"not a STUN/TURN URL: {url!r}")
    if rest.startswith("//"):
        rest = rest[2:]
    creds, at, hostpart = rest.rpartition("@")
    if not at:
        return RTCIceServer(urls=f"{scheme}:{rest}")
    if scheme.startswith("stun"):
        raise ValueError(f"STUN URLs take no credentials: {url!r}")
    username, colon, credential = creds.partition(":")
    if not colon or not username:
        raise ValueError(f"TURN credentials must be user:secret@host: {url!r}")
    return RTCIceServer(
        urls=f"{scheme}:{hostpart}", username=unquote(username), credential=unquote(credential)
    )


def parse_ice_servers(urls: list[str]) -> list[RTCIceServer]:
    return [parse_ice_server(u) for u in urls if u.strip()]


def ice_link_headers(servers: list[RTCIceServer]) -> list[str]:
    """`Link: <stun:...>; rel="ice-server"` values for the WHIP/WHEP 201 answer.

    Only STUN is advertised: TURN credentials from our settings are long-lived
    secrets, and WHEP answers go to anonymous viewers.
    """
    links: list[str] = []
    for server in servers:
        urls = [server.urls] if isinstance(server.urls, str) else server.urls
        links.extend(f'<{u}>; rel="ice-server"' for u in urls if u.startswith("stun"))
    return links
