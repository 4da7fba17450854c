"""A per-key request limit in Redis: a fixed window shared by every API process."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence

import redis

KEY_PREFIX = "smsgw:rate:"


class RateLimiter:
    """Counts requests per key in windows of `window` seconds, allowing `limit` in each."""

    def __init__(self, client: redis.Redis, *, limit: int, window: int = 60) -> None:
        self._client = client
        self.limit = limit
        self.window = window

    def retry_after(self, key: str, *, now: float | None = None) -> int | None:
        """Count one request; return None if allowed, else whole seconds until the next window."""
        return self.retry_after_many([key], now=now)[0]

    def retry_after_many(
        self, keys: Sequence[str], *, now: float | None = None
    ) -> list[int | None]:
        """Count one request per key, in order and in one round trip; answer each as `retry_after`.

        When Redis cannot answer the requests are allowed: the limit protects the
        gateway, it must not take sending down with the broker.
        """
        now = time.time() if now is None else now
        window_start = int(now // self.window) * self.window
        wanted = Counter(keys)
        try:
            # Each window has its own key; its expiry only clears it away once it is over.
            with self._client.pipeline(transaction=False) as pipe:
                for key, count in wanted.items():
                    name = f"{KEY_PREFIX}{key}:{window_start}"
                    pipe.incrby(name, count)
                    pipe.expire(name, self.window + 1)
                totals = dict(zip(wanted, map(int, pipe.execute()[::2]), strict=True))
        except redis.RedisError:
            return [None] * len(keys)
        wait = max(1, int(window_start + self.window - now + 0.999))
        seen: Counter[str] = Counter()
        answers: list[int | None] = []
        for key in keys:
            seen[key] += 1
            # this request's place in the window: the total less those counted after it
            place = totals[key] - wanted[key] + seen[key]
            answers.append(None if place <= self.limit else wait)
        return answers
