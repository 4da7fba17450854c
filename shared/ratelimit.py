"""A per-key request limit in Redis: a fixed window shared by every API process.

Each process counts in Redis ahead of its needs: a key that runs out takes
`lease` more of the window's requests at once, and the process hands them out
itself until they are spent. Redis then sees one round trip per lease, not
per request, and never counts more than `limit` requests through a window;
a key may be refused up to `lease - 1` requests early per API process, for
requests another process took and has not used. The lease is a hundredth of
the limit (at most 100), so a limit below 200 is counted exactly.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence

import redis

KEY_PREFIX = "smsgw:rate:"
MAX_LEASE = 100


class RateLimiter:
    """Counts requests per key in windows of `window` seconds, allowing `limit` in each."""

    def __init__(
        self, client: redis.Redis, *, limit: int, window: int = 60, lease: int | None = None
    ) -> None:
        self._client = client
        self.limit = limit
        self.window = window
        self.lease = lease or max(1, min(MAX_LEASE, limit // 100))
        self._lock = threading.Lock()
        self._window_start = 0
        self._held: Counter[str] = Counter()  # requests of this window taken and not yet used

    def retry_after(self, key: str, *, now: float | None = None) -> int | None:
        """Count one request; return None if allowed, else whole seconds until the next window."""
        return self.retry_after_many([key], now=now)[0]

    def retry_after_many(
        self, keys: Sequence[str], *, now: float | None = None
    ) -> list[int | None]:
        """Count one request per key, in order, in one round trip at most; answer as `retry_after`.

        When Redis cannot answer the requests are allowed: the limit protects the
        gateway, it must not take sending down with the broker.
        """
        now = time.time() if now is None else now
        window_start = int(now // self.window) * self.window
        wanted = Counter(keys)
        allowed: Counter[str] = Counter()
        with self._lock:
            if window_start != self._window_start:
                self._window_start, self._held = window_start, Counter()
            for key, count in wanted.items():
                allowed[key] = min(count, self._held[key])
                self._held[key] -= allowed[key]
        short = {key: count - allowed[key] for key, count in wanted.items() if count > allowed[key]}
        if short:
            for key, taken in self._take(short, window_start).items():
                allowed[key] += min(taken, short[key])
                with self._lock:
                    if window_start == self._window_start:
                        self._held[key] += max(0, taken - short[key])
        wait = max(1, int(window_start + self.window - now + 0.999))
        seen: Counter[str] = Counter()
        answers: list[int | None] = []
        for key in keys:
            seen[key] += 1
            answers.append(None if seen[key] <= allowed[key] else wait)
        return answers

    def _take(self, short: dict[str, int], window_start: int) -> dict[str, int]:
        """Take each key's shortfall plus a lease from the window in Redis; return what fit.

        A request the window has no room for still counts: a refused client
        keeps its window full.
        """
        asked = {key: count + self.lease - 1 for key, count in short.items()}
        try:
            # Each window has its own key; its expiry only clears it away once it is over.
            with self._client.pipeline(transaction=False) as pipe:
                for key, count in asked.items():
                    name = f"{KEY_PREFIX}{key}:{window_start}"
                    pipe.incrby(name, count)
                    pipe.expire(name, self.window + 1)
                totals = pipe.execute()[::2]
        except redis.RedisError:
            return short
        taken = {}
        for (key, count), total in zip(asked.items(), map(int, totals), strict=True):
            # the requests this process asked for that are within the limit
            taken[key] = max(0, min(count, self.limit - (total - count)))
        return taken
