"""The SDK's HTTP client: the environment's proxy and CA bundle, encoding, broken connections."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import urllib3
from requests.models import RequestEncodingMixin

from shared.providers import UnknownOutcome
from shared.providers.twilio import TwilioProvider
from shared.providers.twilio_http import form_encode, pool_manager

TO, FROM = "+14155550123", "+15005550006"
CALLBACK = "http://gateway.test/webhooks/twilio/status?message_id=1"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture
def sandbox_url(sandbox):
    _server, base_url = sandbox
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)
    requests.post(f"{base_url}/_sandbox/config", json={"callbacks": False}, timeout=5)
    yield base_url
    requests.post(f"{base_url}/_sandbox/reset", timeout=5)


@pytest.fixture
def no_proxy_environment(monkeypatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


class _Proxy(BaseHTTPRequestHandler):
    """A plain HTTP proxy that remembers what it forwarded."""

    seen: list[tuple[str, str | None]] = []

    def do_POST(self) -> None:  # noqa: N802  (http.server's naming)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers.get("Proxy-Authorization")))
        headers = {k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-")}
        answer = urllib3.request("POST", self.path, body=body, headers=headers, retries=False)
        self.send_response(answer.status)
        self.send_header("Content-Type", answer.headers["Content-Type"])
        self.send_header("Content-Length", str(len(answer.data)))
        self.end_headers()
        self.wfile.write(answer.data)

    def log_message(self, *args: object) -> None:
        """Stay quiet."""


@pytest.fixture
def proxy() -> Iterator[tuple[str, list]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Proxy)
    _Proxy.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_port}", _Proxy.seen
    server.shutdown()
    server.server_close()


def send(provider: TwilioProvider):
    return provider.send(to=TO, from_=FROM, body="Hello", status_callback=CALLBACK)


def test_a_proxy_in_the_environment_carries_the_request(
    settings, sandbox_url, proxy, no_proxy_environment, monkeypatch
):
    address, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://ops:s3cret@{address}")
    sent = send(TwilioProvider(settings.with_overrides(twilio_api_base=sandbox_url)))
    [(path, authorization)] = seen
    assert path.startswith(f"{sandbox_url}/2010-04-01/Accounts/") and sent.sid.startswith("SM")
    assert (
        authorization
        == urllib3.util.make_headers(proxy_basic_auth="ops:s3cret")["proxy-authorization"]
    )


def test_no_proxy_sends_the_request_directly(
    settings, sandbox_url, proxy, no_proxy_environment, monkeypatch
):
    address, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", f"http://{address}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert send(TwilioProvider(settings.with_overrides(twilio_api_base=sandbox_url))).sid
    assert seen == []


def test_the_ca_bundle_is_requests_own_unless_the_environment_names_one(
    no_proxy_environment, monkeypatch, tmp_path
):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    default = pool_manager("https://api.twilio.com/", 4).connection_pool_kw
    assert default["ca_certs"] == requests.utils.DEFAULT_CA_BUNDLE_PATH
    assert default["cert_reqs"] == "CERT_REQUIRED"
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    assert pool_manager("https://api.twilio.com/", 4).connection_pool_kw["ca_certs"] == str(bundle)


def test_parameters_are_encoded_as_requests_encodes_them():
    values = {
        "To": "+14155550123",
        "Body": "Hi & bye = 100% ✓",
        "MediaUrl": ["https://a.test/1?x=1", None, "https://a.test/2"],
        "ValidityPeriod": 60,
        "Skipped": None,
    }
    assert form_encode(values) == RequestEncodingMixin._encode_params(values)


def test_a_connection_closed_after_the_request_is_an_unknown_outcome(settings):
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_nothing() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = threading.Thread(target=answer_nothing, daemon=True)
    thread.start()
    port = listener.getsockname()[1]
    provider = TwilioProvider(settings.with_overrides(twilio_api_base=f"http://127.0.0.1:{port}"))
    with pytest.raises(UnknownOutcome, match="connection error"):
        send(provider)
    thread.join(5)
    listener.close()
