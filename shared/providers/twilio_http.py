"""The HTTP client the Twilio SDK sends its requests with: one urllib3 pool manager.

The SDK's own client builds a `requests` request for every call, merges the
session's settings into it and looks up the proxy and CA-bundle variables of
the process environment: about half a millisecond of CPU per call before a
byte is sent. This client reads the environment once, as `requests` would,
and hands each request straight to urllib3 with the same timeouts (and
TWILIO_TIMEOUT as the whole call's bound too), no retries and no
redirects. Failures are urllib3's exceptions, which `shared.providers.twilio`
translates.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import urlencode

import requests
import urllib3
from twilio.http import HttpClient
from twilio.http.response import Response
from urllib3.util import make_headers

log = logging.getLogger(__name__)
TWILIO_BASE = "https://api.twilio.com"
# Kept-alive connections per process: more than a worker's threads, or the
# extra ones would be opened and closed for every call.
POOL_SIZE = 256


class PooledHttpClient(HttpClient):
    """An SDK HTTP client that sends requests for https://api.twilio.com to `api_base`."""

    def __init__(self, *, api_base: str, timeout: float, pool_size: int = POOL_SIZE) -> None:
        super().__init__(log, False, timeout)
        self.api_base = api_base.rstrip("/")
        self._manager = pool_manager(self.api_base + "/", pool_size)
        self._auth: tuple[tuple[str, str], str] | None = None

    def request(  # type: ignore[override]
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send one request and return the SDK's Response; raise urllib3's errors."""
        if timeout is None:
            timeout = self.timeout
        elif timeout <= 0:
            raise ValueError(timeout)
        if url.startswith(TWILIO_BASE):
            url = self.api_base + url[len(TWILIO_BASE) :]
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{form_encode(params)}"
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = self._basic(auth)
        body: str | None = None
        if data:
            json_body = "json" in headers.get("Content-Type", "")
            body = json.dumps(data) if json_body else form_encode(data)
        log.debug("Twilio %s %s", method, url)
        answer = self._manager.request(
            method.upper(),
            url,
            body=body,
            headers=headers,
            # `total` bounds the whole call, so a claim's lease outlasts it (shared.handoff).
            timeout=urllib3.Timeout(total=timeout, connect=timeout, read=timeout),
            retries=False,
            redirect=allow_redirects,
        )
        log.debug("Twilio answered %s", answer.status)
        return Response(answer.status, _text(answer), answer.headers)

    def _basic(self, auth: tuple[str, str]) -> str:
        """Return the Authorization header of these credentials, built once."""
        cached = self._auth
        if cached is None or cached[0] != auth:
            value = make_headers(basic_auth=f"{auth[0]}:{auth[1]}")["authorization"]
            cached = self._auth = (auth, value)
        return cached[1]


def pool_manager(url: str, pool_size: int) -> urllib3.PoolManager:
    """Return a pool manager for `url` with the proxy and CA bundle `requests` would use.

    The environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE)
    is read once, here, through `requests`' own rules.
    """
    found = requests.Session().merge_environment_settings(url, {}, None, None, None)
    proxy = requests.utils.select_proxy(url, found["proxies"])
    verify = found["verify"]
    tls: dict[str, Any] = {}
    if verify is False:
        tls["cert_reqs"] = "CERT_NONE"
    else:
        bundle = requests.utils.DEFAULT_CA_BUNDLE_PATH if verify is True else verify
        tls["cert_reqs"] = "CERT_REQUIRED"
        tls["ca_cert_dir" if os.path.isdir(bundle) else "ca_certs"] = bundle
    if not proxy:
        return urllib3.PoolManager(maxsize=pool_size, **tls)
    username, password = requests.utils.get_auth_from_url(proxy)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as requests does

        return SOCKSProxyManager(
            proxy, username=username, password=password, maxsize=pool_size, **tls
        )
    proxy_headers = make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
    return urllib3.ProxyManager(proxy, proxy_headers=proxy_headers, maxsize=pool_size, **tls)


def form_encode(values: dict[str, object]) -> str:
    """Encode parameters as `requests` does: a list repeats its key, None is left out."""
    pairs = []
    for key, value in values.items():
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if item is not None:
                pairs.append((key, item))
    return urlencode(pairs)


def _text(answer: urllib3.BaseHTTPResponse) -> str:
    """Decode an answer's body by the charset its Content-Type names, else as UTF-8."""
    charset = "utf-8"
    for part in answer.headers.get("Content-Type", "").split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            charset = value.strip("\"'")
    try:
        return answer.data.decode(charset, errors="replace")
    except LookupError:
        return answer.data.decode("utf-8", errors="replace")
