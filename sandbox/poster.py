"""A light form poster that keeps one connection per thread and host alive."""

from __future__ import annotations

import http.client
import logging
import threading
from urllib.parse import urlencode, urlsplit

log = logging.getLogger(__name__)
POST_TIMEOUT_S = 5.0


class FormPoster:
    """Posts form-encoded requests; far cheaper per call than a requests.Session.

    Failures are logged at debug level and otherwise ignored, as a callback
    that cannot be delivered is the receiver's problem, not the sandbox's.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []

    def post(self, url: str, params: dict[str, str], headers: dict[str, str]) -> int | None:
        """Post params to url and return the status code, or None when it failed."""
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        body = urlencode(params)
        headers = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
        for attempt in range(2):
            conn, reused = self._connection(parts.scheme, parts.netloc)
            try:
                conn.request("POST", path, body, headers)
                response = conn.getresponse()
                response.read()
                return response.status
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if not reused or attempt:
                    log.debug("status callback to %s failed: %s", url, exc)
                    return None
        return None

    def _connection(self, scheme: str, netloc: str) -> tuple[http.client.HTTPConnection, bool]:
        """Return this thread's connection to the host and whether it was used before."""
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get((scheme, netloc))
        if conn is not None and conn.sock is not None:
            return conn, True
        if conn is None:
            kind = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = kind(netloc, timeout=POST_TIMEOUT_S)
            conns[(scheme, netloc)] = conn
            with self._lock:
                self._all.append(conn)
        return conn, False

    def close(self) -> None:
        """Close every connection that any thread opened."""
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
