"""Error codes specific to WHIP/WHEP.

They extend `livecore.errors` so the gateway's single error path renders them;
they live here rather than in `livecore` because only the video edge raises them.
"""

from __future__ import annotations

from livecore.errors import BadRequest, Conflict, LiveCoreError, ValidationFailed


class BadSdp(BadRequest):
    code = "bad_sdp"
    default_message = "the body is not a usable SDP offer"


class UnsupportedMediaType(LiveCoreError):
    code = "unsupported_media_type"
    status = 415
    default_message = "Content-Type must be application/sdp"


class NegotiationFailed(ValidationFailed):
    code = "negotiation_failed"
    default_message = "the offer could not be negotiated"


class IngestActive(Conflict):
    code = "ingest_active"
    default_message = "this show already has an active ingest"


class NoIngest(Conflict):
    code = "no_ingest"
    default_message = "this show is not being broadcast right now"


class MethodNotAllowed(LiveCoreError):
    code = "method_not_allowed"
    status = 405
    default_message = "method not allowed"
