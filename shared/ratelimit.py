"""A per-key request limit in Redis: a fixed window shared by every API process.

Each process counts in Redis ahead of its needs: a key that runs out takes
`lease` more of the window's requests at once, and the process hands them out
itself until they are spent. Redis then sees one round trip per lease, not
per request, and never counts more than `limit` requests through a window.
One lease per key is asked for at a time in a process (a request that finds
one under way asks for just what it lacks), so a process holds at most
`lease - 1` unused requests of a key: the key may be refused that many early
for each other API process. The lease is a hundredth of the limit (at least
1, at most 100), so a limit below 200 is counted exactly.
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
        self._leasing: set[str] = set()  # keys a lease is being asked for

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
        asked: dict[str, int] = {}
        with self._lock:
            if window_start > self._window_start:
                self._window_start, self._held, self._leasing = window_start, Counter(), set()
            current = window_start == self._window_start  # a call late from the last window
            for key, count in wanted.items():
                if current:
                    allowed[key] = min(count, self._held[key])
                    self._held[key] -= allowed[key]
                short = count - allowed[key]
                if not short:
                    continue
                asked[key] = short
                if current and self.lease > 1 and key not in self._leasing:
                    self._leasing.add(key)
                    asked[key] += self.lease - 1
        if asked:
            taken = self._take(asked, window_start)
            with self._lock:
                current = window_start == self._window_start
                for key, count in asked.items():
                    short = wanted[key] - allowed[key]
                    got = short if taken is None else min(taken[key], short)
                    allowed[key] += got
                    if count > short and current:  # this call asked for the key's lease
                        self._leasing.discard(key)
                        if taken is not None:
                            self._held[key] += taken[key] - got
        wait = max(1, int(window_start + self.window - now + 0.999))
        seen: Counter[str] = Counter()
        answers: list[int | None] = []
        for key in keys:
            seen[key] += 1
            answers.append(None if seen[key] <= allowed[key] else wait)
        return answers

    def _take(self, asked: dict[str, int], window_start: int) -> dict[str, int] | None:
        """Add what each key asks for to its window in Redis; return what fit, None if Redis failed.

        A request the window has no room for still counts: a refused client
        keeps its window full.
        """
        try:
            # Each window has its own key; its expiry only clears it away once it is over.
            with self._client.pipeline(transaction=False) as pipe:
                for key, count in asked.items():
                    name = f"{KEY_PREFIX}{key}:{window_start}"
                    pipe.incrby(name, count)
                    pipe.expire(name, self.window + 1)
                totals = pipe.execute()[::2]
        except redis.RedisError:
            return None
        return {
            # the requests asked for that are within the limit
            key: max(0, min(count, self.limit - (int(total) - count)))
            for (key, count), total in zip(asked.items(), totals, strict=True)
        }
