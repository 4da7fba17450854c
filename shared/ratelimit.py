"""A per-key request limit in Redis: a fixed window shared by every API process."""

from __future__ import annotations

import time

import redis

KEY_PREFIX = "smsgw:rate:"
# Count and, on the window's first request, set the expiry: one atomic round trip.
_COUNT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return count
"""


class RateLimiter:
    """Counts requests per key in windows of `window` seconds, allowing `limit` in each."""

    def __init__(self, client: redis.Redis, *, limit: int, window: int = 60) -> None:
        self._count = client.register_script(_COUNT)
        self.limit = limit
        self.window = window

    def retry_after(self, key: str, *, now: float | None = None) -> int | None:
        """Count one request; return None if allowed, else whole seconds until the next window.

        When Redis cannot answer the request is allowed: the limit protects the
        gateway, it must not take sending down with the broker.
        """
        now = time.time() if now is None else now
        window_start = int(now // self.window) * self.window
        name = f"{KEY_PREFIX}{key}:{window_start}"
        try:
            count = int(self._count(keys=[name], args=[self.window + 1]))
        except redis.RedisError:
            return None
        if count <= self.limit:
            return None
        return max(1, int(window_start + self.window - now + 0.999))
