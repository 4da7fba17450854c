"""Serving the sandbox over HTTP, in the foreground or on a background thread."""

from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.serving import WSGIRequestHandler, make_server

from sandbox.app import create_sandbox_app
from sandbox.config import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN, SandboxConfig
from sandbox.gunicorn_server import run_gunicorn
from sandbox.state import SandboxState

POLL_INTERVAL_S = 0.05
"""How often the serving loop checks for shutdown, which bounds how long shutdown() takes."""


class _QuietHandler(WSGIRequestHandler):
    """A request handler that does not log each request."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        """Skip the per-request access log line."""


class SandboxServer:
    """A sandbox app behind a threaded WSGI server; shutdown() stops everything."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        account_sid: str,
        auth_token: str,
        seed: int | None,
        log_requests: bool,
        callback_workers: int,
        config: dict[str, Any],
    ) -> None:
        self.app = create_sandbox_app(
            account_sid=account_sid,
            auth_token=auth_token,
            config=SandboxConfig().updated(config),
            seed=seed,
            callback_workers=callback_workers,
        )
        handler = WSGIRequestHandler if log_requests else _QuietHandler
        self._server = make_server(host, port, self.app, threaded=True, request_handler=handler)
        self._thread: threading.Thread | None = None
        self._closed = False
        self.account_sid = account_sid
        self.auth_token = auth_token

    @property
    def state(self) -> SandboxState:
        """Return the shared state of the served app."""
        return self.app.extensions["sandbox"]

    @property
    def port(self) -> int:
        """Return the bound port, which is real even when port 0 was asked for."""
        return self._server.port

    @property
    def base_url(self) -> str:
        """Return the URL that replaces https://api.twilio.com for clients."""
        return f"http://{self._server.host}:{self.port}"

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change switches at runtime, as POST /_sandbox/config does."""
        self.state.configure(changes)
        return self.state.describe()

    def serve_forever(self) -> None:
        """Serve requests on the calling thread until shutdown() is called."""
        self._server.serve_forever(poll_interval=POLL_INTERVAL_S)

    def start(self) -> SandboxServer:
        """Serve requests on a background thread and return self."""
        self._thread = threading.Thread(target=self.serve_forever, name="sandbox-http", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, close the socket and stop the callback threads; safe to repeat."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        self.state.close()

    def __enter__(self) -> SandboxServer:
        """Return the server itself for use in a with statement."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Shut the server down when the with statement ends."""
        self.shutdown()


def start_in_thread(
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    account_sid: str = SANDBOX_ACCOUNT_SID,
    auth_token: str = SANDBOX_AUTH_TOKEN,
    seed: int | None = None,
    log_requests: bool = False,
    callback_workers: int = 32,
    **config: Any,
) -> tuple[SandboxServer, str]:
    """Start a sandbox on a background thread and return it with its base URL.

    The keyword switches are those of SandboxConfig; port 0 picks a free port.
    """
    server = SandboxServer(
        host=host,
        port=port,
        account_sid=account_sid,
        auth_token=auth_token,
        seed=seed,
        log_requests=log_requests,
        callback_workers=callback_workers,
        config=config,
    ).start()
    return server, server.base_url


def serve(
    *,
    host: str = "127.0.0.1",
    port: int = 8025,
    account_sid: str = SANDBOX_ACCOUNT_SID,
    auth_token: str = SANDBOX_AUTH_TOKEN,
    seed: int | None = None,
    log_requests: bool = True,
    callback_workers: int = 32,
    server: str = "gunicorn",
    threads: int = 200,
    **config: Any,
) -> None:
    """Serve the sandbox in the foreground until interrupted.

    The keyword switches are those of SandboxConfig, for example latency_ms=150.
    The server is "gunicorn" (one worker with the given number of threads) or
    "werkzeug" (a thread per connection).
    """
    if server not in ("gunicorn", "werkzeug"):
        raise ValueError(f"unknown server {server!r}; use 'gunicorn' or 'werkzeug'")
    initial = SandboxConfig().updated(config)
    print(f"Twilio sandbox on http://{host}:{port} (account {account_sid})", flush=True)
    if server == "gunicorn":

        def factory() -> Flask:
            return create_sandbox_app(
                account_sid=account_sid,
                auth_token=auth_token,
                config=initial,
                seed=seed,
                callback_workers=callback_workers,
            )

        run_gunicorn(factory, host=host, port=port, threads=threads, log_requests=log_requests)
        return
    running = SandboxServer(
        host=host,
        port=port,
        account_sid=account_sid,
        auth_token=auth_token,
        seed=seed,
        log_requests=log_requests,
        callback_workers=callback_workers,
        config=config,
    )
    try:
        running.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        running.shutdown()
