"""A token bucket per sender number, held in Redis and shared by every worker process.

One Lua script reads the bucket, refills it for the time elapsed (on Redis'
own clock, so workers' clocks do not matter), grants what it can and says how
long until the next token: one atomic step, whatever the number of callers.
A new or idle-expired bucket starts empty, so a campaign never opens with a burst
above its rate; an active one holds at most one second's worth of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

KEY_PREFIX = "smsgw:pace:"

# KEYS[1] bucket; ARGV rate (tokens/s), capacity, wanted. Returns {granted, wait_ms}.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local wanted = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = 0
  at = now
end
if now > at then
  tokens = math.min(capacity, tokens + (now - at) * rate / 1000000)
end
local granted = math.min(math.floor(tokens), wanted)
if granted < 0 then granted = 0 end
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 2000)
local wait_ms = 0
if tokens < 1 then
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
return {granted, wait_ms}
"""


@dataclass(frozen=True, slots=True)
class Grant:
    """Tokens granted now, and seconds until the bucket holds its next token."""

    granted: int
    wait: float


class Pacer:
    """Takes sending slots from the per-number buckets in one Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)

    def take(self, number: str, *, rate: float, wanted: int) -> Grant:
        """Take up to `wanted` tokens from `number`'s bucket refilled at `rate` per second."""
        if rate <= 0:
            raise ValueError("rate must be positive")
        capacity = max(1.0, float(rate))
        granted, wait_ms = self._take(
            keys=[KEY_PREFIX + number], args=[repr(float(rate)), repr(capacity), int(wanted)]
        )
        return Grant(int(granted), int(wait_ms) / 1000)
