"""Checks on users' status_callback URLs, so the gateway cannot be aimed inward."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from shared.errors import Rejected

INVALID = "Invalid status_callback URL"


def check_callback_url(url: str, *, allow_private: bool) -> str:
    """Return the URL if it is http(s) and, unless allowed, resolves only to public addresses."""
    parts = urlsplit(url.strip())
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(url) > 2000
        or any(ord(c) < 32 for c in url)
    ):
        raise Rejected(INVALID)
    if allow_private:
        return url.strip()
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
    except (OSError, ValueError):
        raise Rejected(INVALID) from None
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise Rejected(INVALID)
    return url.strip()
