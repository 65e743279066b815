"""Validated request bodies. Strict types: "12" is not an integer here."""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
)

from livecore.auth import ROLES
from livecore.currencies import is_currency
from livecore.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)
MAX_INT = 2**53 - 1  # exact in JavaScript, comfortably inside bigint


class Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


Money = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]


def _currency(value: str) -> str:
    if not is_currency(value):
        raise ValueError("must be an ISO 4217 currency code")
    return value


class ProductIn(Body):
    sku: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    price_cents: Money
    currency: StrictStr
    image_url: Annotated[StrictStr, Field(max_length=2048)] | None = None
    stock: Annotated[StrictInt, Field(ge=0, le=10_000_000)]

    _cur = field_validator("currency")(_currency)

    @field_validator("image_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and value and not value.startswith(("https://", "http://", "/")):
            raise ValueError("must be an http(s) URL or a path")
        return value


class ShowIn(Body):
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    scheduled_at: Annotated[StrictInt, Field(ge=0, le=MAX_INT)] | None = None


class TokenIn(Body):
    sub: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    role: StrictStr
    show: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    ttl_s: Annotated[StrictInt, Field(ge=1, le=30 * 86_400)] = 3600

    @field_validator("role")
    @classmethod
    def _role(cls, value: str) -> str:
        if value not in ROLES:
            raise ValueError(f"must be one of {', '.join(ROLES)}")
        return value


class DealIn(Body):
    product_id: Annotated[StrictStr, Field(min_length=1, max_length=64)]
    price_cents: Money
    quantity: Annotated[StrictInt, Field(ge=1, le=1_000_000)]
    duration_s: Annotated[StrictInt, Field(ge=1, le=86_400)]
    per_user_limit: Annotated[StrictInt, Field(ge=1, le=1000)] = 1
    hold_ttl_s: Annotated[StrictInt, Field(ge=1, le=3600)] | None = None


class ClaimIn(Body):
    qty: Annotated[StrictInt, Field(ge=1, le=1000)] = 1


class ConfirmIn(Body):
    payment_ref: Annotated[StrictStr, Field(min_length=1, max_length=200)]


class FaqIn(Body):
    patterns: Annotated[list[Annotated[StrictStr, Field(min_length=1, max_length=100)]],
                        Field(min_length=1, max_length=20)]
    answer: Annotated[StrictStr, Field(min_length=1, max_length=500)]


def parse(model: type[M], data: Any) -> M:
    """Validate `data`, turning pydantic's report into one ValidationFailed naming the fields."""
    if not isinstance(data, dict):
        raise ValidationFailed("body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        fields = []
        for err in exc.errors(include_url=False, include_input=False):
            loc = ".".join(str(p) for p in err["loc"]) or "body"
            fields.append({"field": loc, "error": err["msg"]})
        first = fields[0]
        raise ValidationFailed(f"{first['field']}: {first['error']}", fields=fields) from None
