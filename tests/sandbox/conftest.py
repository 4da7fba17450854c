"""Fixtures for the sandbox tests: a sandbox on a free port, the real Twilio SDK
pointed at it, and a local receiver for status callbacks."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from sandbox import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, start_in_thread
from sandbox.server import SandboxServer

TWILIO_API = "https://api.twilio.com"


class SandboxHttpClient(TwilioHttpClient):
    """A Twilio HTTP client that sends every request to the sandbox instead of Twilio."""

    def __init__(self, base_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.base_url = base_url.rstrip("/")

    def request(self, method: str, url: str, *args: Any, **kwargs: Any):  # type: ignore[override]
        """Rewrite the https://api.twilio.com prefix and send the request."""
        if url.startswith(TWILIO_API):
            url = self.base_url + url[len(TWILIO_API) :]
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def sandbox_server() -> Iterator[SandboxServer]:
    """Start a fresh sandbox with short callback delays and a fixed seed, and check
    that shutting it down leaves none of its threads behind."""
    before = set(threading.enumerate())
    server, _ = start_in_thread(port=0, seed=1234, callback_delay_ms=10)
    yield server
    server.shutdown()
    deadline = time.monotonic() + 2
    while (left := set(threading.enumerate()) - before) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not left, f"sandbox threads left running: {left}"


@pytest.fixture
def base_url(sandbox_server: SandboxServer) -> str:
    """Return the base URL of the sandbox."""
    return sandbox_server.base_url


@pytest.fixture
def messages_url(base_url: str) -> str:
    """Return the URL of the Messages list and create route."""
    return f"{base_url}/2010-04-01/Accounts/{SANDBOX_ACCOUNT_SID}/Messages.json"


@pytest.fixture
def twilio(base_url: str) -> Iterator[Client]:
    """Return a real Twilio SDK client that talks to the sandbox."""
    http_client = SandboxHttpClient(base_url)
    yield Client(SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, http_client=http_client)
    http_client.session.close()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    """Return a plain HTTP session authenticated as the sandbox account."""
    session = requests.Session()
    session.auth = (SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN)
    yield session
    session.close()


class CallbackReceiver:
    """A tiny threaded HTTP server that records the status callbacks it is sent."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                params = dict(parse_qsl(self.rfile.read(length).decode(), keep_blank_values=True))
                with receiver._cond:
                    receiver.calls.append(
                        {
                            "path": self.path,
                            "params": params,
                            "at": time.monotonic(),
                            "headers": {k.lower(): v for k, v in self.headers.items()},
                        }
                    )
                    receiver._cond.notify_all()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/twilio/status?tenant=7"

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until at least count callbacks arrived and return all of them."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.calls) >= count, timeout)
            return list(self.calls)

    def for_message(self, sid: str) -> list[dict[str, Any]]:
        """Return the callbacks received for one message, in arrival order."""
        with self._cond:
            return [c for c in self.calls if c["params"].get("MessageSid") == sid]

    def close(self) -> None:
        """Stop the receiver and release its port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def receiver() -> Iterator[CallbackReceiver]:
    """Return a running callback receiver."""
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()
