"""A per-key request limit in Redis: a fixed window shared by every API process."""

from __future__ import annotations

import time

import redis

KEY_PREFIX = "smsgw:rate:"


class RateLimiter:
    """Counts requests per key in windows of `window` seconds, allowing `limit` in each."""

    def __init__(self, client: redis.Redis, *, limit: int, window: int = 60) -> None:
        self._client = client
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
            pipe = self._client.pipeline(transaction=True)
            pipe.set(name, 0, ex=self.window + 1, nx=True)
            pipe.incr(name)
            _, count = pipe.execute()
        except redis.RedisError:
            return None
        if count <= self.limit:
            return None
        return max(1, int(window_start + self.window - now + 0.999))
