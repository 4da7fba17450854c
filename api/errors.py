"""JSON errors: every failure answers `{"message": ...}`, never an HTML page."""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, jsonify, request
from sqlalchemy.exc import InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answer with the contract's message and optional per-field errors."""

    def __init__(
        self, status: int, message: str, errors: dict | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors
        self.headers = headers or {}


MESSAGES = {
    400: "Bad request",
    401: "Unauthenticated",
    404: "Not found",
    405: "Method not allowed",
    413: "Request body too large",
    415: "Unsupported media type",
    429: "Too many requests",
}


def register(app: Flask) -> None:
    """Install the handlers that turn every error into JSON."""

    @app.before_request
    def _no_nul_in_query() -> None:
        # PostgreSQL text cannot hold NUL: refuse it here rather than fail in a query.
        for name, values in request.args.lists():
            if "\x00" in name or any("\x00" in value for value in values):
                raise ApiError(
                    400, f"The {name.strip(chr(0))} field must not contain NUL characters"
                )

    @app.errorhandler(ApiError)
    def _api_error(error: ApiError):
        body: dict = {"message": error.message}
        if error.errors:
            body["errors"] = error.errors
        return jsonify(body), error.status, error.headers

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException):
        status = error.code or 500
        return jsonify({"message": MESSAGES.get(status, error.name)}), status

    @app.errorhandler(OperationalError)
    @app.errorhandler(InterfaceError)
    @app.errorhandler(psycopg.OperationalError)  # the committer's statement runs on psycopg
    @app.errorhandler(psycopg.InterfaceError)
    def _database_unavailable(error: Exception):
        # Down, restarting or unreachable: retry later (with an Idempotency-Key, safely).
        log.error("database unavailable: %s", type(error.__cause__ or error).__name__)
        body = {"message": "Service unavailable", "error": "Database unavailable"}
        return jsonify(body), 503, {"Retry-After": "1"}

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        log.exception("unhandled error")
        return jsonify({"message": "Server error", "error": type(error).__name__}), 500
