"""`/openapi.json`, built from the Flask routes and the pydantic models that validate them.

A route is documented by one `@document(...)` line next to it (or, for a view
defined elsewhere, one `declare(endpoint, ...)` entry): a summary, the request
model, the query model and a response model per status. Paths, methods and
path parameters come from the URL map, and schemas from `model_json_schema`,
so the spec cannot drift from what the API checks. `/docs` renders it with
Swagger UI, whose files the app serves itself (no CDN).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import swagger_ui
from flask import Blueprint, Flask, current_app, render_template_string
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from werkzeug.routing import IntegerConverter

from api import schemas

REF = "#/components/schemas/{model}"
# Routes under these prefixes must be documented (tests/api/test_openapi.py checks).
DOCUMENTED_PREFIXES = ("/api/", "/webhooks/")
ASSETS = Path(swagger_ui.__file__).parent / "static"
bp = Blueprint("openapi", __name__, static_folder=str(ASSETS), static_url_path="/docs/assets")
_DECLARED: dict[str, dict[str, Doc]] = {}


@dataclass(frozen=True)
class Doc:
    """What the spec says about one method of one route."""

    summary: str
    responses: dict[int, type[BaseModel] | str]
    body: type[BaseModel] | None = None
    form: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    tag: str = ""
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # Other media types a status may answer with, beside its JSON: {200: {"text/csv": {...}}}.
    also: dict[int, dict[str, Any]] = field(default_factory=dict)


def document(summary: str, **kwargs: Any) -> Callable:
    """Attach a `Doc` to a view; stack one per method for a multi-method view."""

    def attach(view: Callable) -> Callable:
        docs = dict(getattr(view, "__openapi__", {}))
        docs[kwargs.pop("method", "*")] = Doc(summary, **kwargs)
        view.__openapi__ = docs  # type: ignore[attr-defined]
        return view

    return attach


def declare(endpoint: str, summary: str, *, method: str = "*", **kwargs: Any) -> None:
    """Document a view from outside its module, by endpoint name."""
    _DECLARED.setdefault(endpoint, {})[method] = Doc(summary, **kwargs)


def docs_for(app: Flask, endpoint: str, method: str) -> Doc | None:
    """Return the Doc of one endpoint and method, if it has one."""
    view = app.view_functions.get(endpoint)
    docs = {**_DECLARED.get(endpoint, {}), **getattr(view, "__openapi__", {})}
    return docs.get(method) or docs.get("*")


def build_spec(app: Flask) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document of every documented route of the app."""
    paths: dict[str, dict[str, Any]] = {}
    models: set[tuple[type[BaseModel], str]] = {(schemas.ErrorOut, "serialization")}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            doc = docs_for(app, rule.endpoint, method)
            if doc is None:
                continue
            path, params = _path(rule.rule, rule.arguments, rule._converters)  # noqa: SLF001
            paths.setdefault(path, {})[method.lower()] = _operation(doc, path, params, models)
    definitions = models_json_schema(sorted(models, key=lambda m: m[0].__name__), ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "smsgw",
            "version": "1",
            "description": "Send SMS from rented numbers, paid from a prepaid balance, via Twilio.",
        },
        "paths": paths,
        "components": {
            "schemas": definitions[1].get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _path(rule: str, arguments: Any, converters: dict[str, Any]) -> tuple[str, list[dict]]:
    params = []
    for name in sorted(arguments):
        converter = converters.get(name)
        if isinstance(converter, IntegerConverter):
            schema = {"type": "integer", "minimum": 0, "maximum": converter.max or 2**63}
        else:
            schema = {"type": "string"}
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule), params


def _operation(doc: Doc, path: str, params: list[dict], models: set) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": doc.summary, "tags": [doc.tag or _tag(path)]}
    if doc.description:
        op["description"] = doc.description
    if doc.query is not None:
        for name, prop in doc.query.model_json_schema()["properties"].items():
            params.append({"name": name, "in": "query", "required": False, "schema": prop})
    if params:
        op["parameters"] = params
    if doc.body is not None or doc.form is not None:
        model = doc.body or doc.form
        models.add((model, "validation"))
        kind = "application/json" if doc.body else "application/x-www-form-urlencoded"
        op["requestBody"] = {
            "required": True,
            "content": {kind: {"schema": {"$ref": REF.format(model=model.__name__)}}},
        }
    responses = dict(doc.responses)
    if path.startswith(("/api/user/", "/api/admin/")):  # a user's token, or an admin token
        op["security"] = [{"bearer": []}]
        responses.setdefault(401, schemas.ErrorOut)
    if path.startswith("/api/user/"):
        responses.setdefault(429, schemas.ErrorOut)  # the per-token rate limit
    op["responses"] = {str(code): _response(answer, models) for code, answer in responses.items()}
    for code, content in doc.also.items():
        op["responses"][str(code)].setdefault("content", {}).update(content)
    op.update(doc.extra)
    return op


def _response(answer: type[BaseModel] | str, models: set) -> dict[str, Any]:
    if isinstance(answer, str):
        return {"description": answer}
    models.add((answer, "serialization"))
    ref = {"$ref": REF.format(model=answer.__name__)}
    return {
        "description": (answer.__doc__ or "").strip(),
        "content": {"application/json": {"schema": ref}},
    }


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if "campaigns" in parts:
        return "campaigns"
    return parts[2] if parts[:2] == ["api", "user"] and len(parts) > 2 else parts[0]


DOCS_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>smsgw API</title>
<link rel="stylesheet" href="{{ url_for('openapi.static', filename='swagger-ui.css') }}">
</head><body><div id="swagger-ui"></div>
<script src="{{ url_for('openapi.static', filename='swagger-ui-bundle.js') }}"></script>
<script>
window.ui = SwaggerUIBundle({url: "{{ url_for('openapi.openapi_json') }}", dom_id: "#swagger-ui",
  deepLinking: true, validatorUrl: null});
</script></body></html>"""


@bp.get("/openapi.json")
@document("This OpenAPI document", responses={200: "OpenAPI 3.1 JSON"}, tag="operations")
def openapi_json():
    """Answer the OpenAPI document, built once per app."""
    spec = current_app.extensions.get("smsgw_openapi")
    if spec is None:
        spec = current_app.extensions["smsgw_openapi"] = build_spec(current_app)
    return spec


@bp.get("/docs")
@document("A page rendering the OpenAPI document", responses={200: "HTML"}, tag="operations")
def docs():
    """Answer the Swagger UI page, with its files served by this app."""
    return render_template_string(DOCS_PAGE)


# Views whose modules another change is still shaping; move each next to its route later.
declare(
    "webhooks.status",
    "Twilio status callback",
    form=schemas.TwilioStatusForm,
    responses={
        204: "Applied, or a repeat, or an unknown SID",
        400: schemas.ErrorOut,
        403: schemas.ErrorOut,
    },
    tag="webhooks",
)
declare(
    "webhooks.inbound",
    "Twilio incoming message: stored once per MessageSid, forwarded, STOP / START applied",
    form=schemas.TwilioInboundForm,
    responses={200: "Empty TwiML `<Response/>`", 403: schemas.ErrorOut},
    tag="webhooks",
)
