"""Request schemas: they validate bodies and, later, describe them in OpenAPI."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from api.errors import ApiError
from shared.messaging import MAX_BODY_CHARS

TYPE_NAMES = {
    "int_type": "an integer",
    "string_type": "a string",
    "bool_type": "a boolean",
    "dict_type": "an object",
    "list_type": "an array",
}

Model = TypeVar("Model", bound=BaseModel)


class SendSms(BaseModel):
    """The body of `POST /api/user/sms`."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    from_: StrictInt = Field(alias="from", description="Id of one of your phone numbers")
    to: StrictStr = Field(description="Recipient in international format, e.g. +14155550123")
    body: StrictStr = Field(description=f"Text, at most {MAX_BODY_CHARS} characters")
    status_callback: StrictStr | None = Field(
        default=None, description="http(s) URL told of every status change"
    )


def json_body() -> dict[str, Any]:
    """Return the request's JSON object, or answer 400 `Invalid JSON body`."""
    data = request.get_json(silent=True, force=True)
    if not isinstance(data, dict):
        raise ApiError(400, "Invalid JSON body")
    return data


def parse(model: type[Model], data: dict[str, Any]) -> Model:
    """Validate `data`, turning the first problem into the contract's field message."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "body"
            errors.setdefault(field, []).append(_field_message(field, error["type"]))
        first = next(iter(errors.values()))[0]
        raise ApiError(400, first, errors) from None


def _field_message(field: str, kind: str) -> str:
    if kind == "missing":
        return f"The {field} field is required"
    return f"The {field} field must be {TYPE_NAMES.get(kind, 'valid')}"


def check_body(body: str) -> None:
    """Apply the body rules: not empty, at most 300 characters (code points)."""
    if not body.strip():
        raise ApiError(400, "The body field is required", {"body": ["The body field is required"]})
    if len(body) > MAX_BODY_CHARS:
        text = f"The body field must not be greater than {MAX_BODY_CHARS} characters"
        raise ApiError(400, text, {"body": [text]})
