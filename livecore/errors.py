"""One exception hierarchy with stable error codes.

Each error carries the protocol `code`, the HTTP status that fits it and a
message that is safe to show to a user. The gateway turns these into an
`error` frame or an error body in exactly one place.
"""

from __future__ import annotations

from typing import Any


class LiveCoreError(Exception):
    code = "internal"
    status = 500
    default_message = "internal error"

    def __init__(self, message: str | None = None, **extra: Any) -> None:
        self.message = message or self.default_message
        self.extra = extra
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.extra)
        return body


class BadRequest(LiveCoreError):
    code = "bad_request"
    status = 400
    default_message = "bad request"


class ValidationFailed(LiveCoreError):
    code = "validation_error"
    status = 422
    default_message = "invalid input"


class PayloadTooLarge(LiveCoreError):
    code = "payload_too_large"
    status = 413
    default_message = "request body too large"


class Unauthenticated(LiveCoreError):
    code = "unauthenticated"
    status = 401
    default_message = "a valid token is required"


class Forbidden(LiveCoreError):
    code = "forbidden"
    status = 403
    default_message = "not allowed for this role or show"


class NotFound(LiveCoreError):
    code = "not_found"
    status = 404
    default_message = "not found"


class Conflict(LiveCoreError):
    code = "conflict"
    status = 409
    default_message = "conflict"


class SoldOut(Conflict):
    code = "sold_out"
    default_message = "sold out"


class DealNotLive(Conflict):
    code = "deal_not_live"
    default_message = "the deal is not live"


class LimitReached(Conflict):
    code = "limit_reached"
    default_message = "per-user limit reached for this deal"


class ReservationExpired(Conflict):
    code = "reservation_expired"
    default_message = "the reservation has expired"


class ReservationNotActive(Conflict):
    code = "reservation_not_active"
    default_message = "the reservation is not active"


class InsufficientStock(Conflict):
    code = "insufficient_stock"
    default_message = "not enough product stock for this deal"


class DealAlreadyLive(Conflict):
    code = "deal_already_live"
    default_message = "another deal is already live in this show"


class ShowEnded(Conflict):
    code = "show_ended"
    default_message = "the show has ended"


class IdempotencyMismatch(LiveCoreError):
    code = "idempotency_mismatch"
    status = 422
    default_message = "Idempotency-Key reused with a different request"


class TooLong(LiveCoreError):
    code = "too_long"
    status = 422
    default_message = "text too long"


class Muted(LiveCoreError):
    code = "muted"
    status = 403
    default_message = "you are muted"


class Banned(LiveCoreError):
    code = "banned"
    status = 403
    default_message = "you are banned from this show"


class RateLimited(LiveCoreError):
    code = "rate_limited"
    status = 429
    default_message = "too many requests"


class SlowMode(RateLimited):
    code = "slow_mode"
    default_message = "slow mode is on"


class Unavailable(LiveCoreError):
    code = "unavailable"
    status = 503
    default_message = "a backing service is unavailable, retry shortly"
