"""The per-token rate limit: 429 with Retry-After past the limit, shared through Redis."""

from __future__ import annotations

import redis

from api.app import create_app
from shared.ratelimit import RateLimiter
from tests.api.conftest import auth
from tests.factories import make_user


def test_over_the_limit_is_429_with_retry_after(settings, session, redis_client):
    _, token = make_user(session, balance="0")
    _, other = make_user(session, balance="0")
    app = create_app(settings.with_overrides(rate_limit_per_minute=3))
    client = app.test_client()
    try:
        codes = [client.get("/api/user/balance", headers=auth(token)).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/api/user/balance", headers=auth(token))
        assert limited.get_json() == {"message": "Too many requests"}
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # Per token: another user's token is counted on its own.
        assert client.get("/api/user/balance", headers=auth(other)).status_code == 200
        # Unauthenticated requests are refused before they are counted.
        assert client.get("/api/user/balance").status_code == 401
    finally:
        app.extensions["smsgw"].close()


def test_windows_are_shared_and_reset(redis_client):
    one = RateLimiter(redis_client, limit=2, window=60)
    two = RateLimiter(redis_client, limit=2, window=60)  # another API process
    assert one.retry_after("k", now=120.0) is None
    assert two.retry_after("k", now=130.0) is None
    assert one.retry_after("k", now=170.5) == 10
    assert two.retry_after("k", now=180.0) is None  # a new window


def test_a_redis_outage_does_not_block_requests():
    down = RateLimiter(redis.Redis(port=1, socket_connect_timeout=0.2), limit=1)
    assert down.retry_after("k") is None and down.retry_after("k") is None


def test_many_requests_are_counted_in_order_in_one_call(redis_client):
    limiter = RateLimiter(redis_client, limit=2, window=60)
    assert limiter.retry_after("a", now=120.0) is None  # one of a's two is used
    answers = limiter.retry_after_many(["b", "a", "b", "b", "a"], now=150.0)
    assert answers == [None, None, None, 30, 30]
    # a refused request still counts: the window stays full for both keys
    assert limiter.retry_after_many(["a", "b"], now=151.0) == [29, 29]


def _counted(redis_client, key: str, window_start: int) -> int:
    return int(redis_client.get(f"smsgw:rate:{key}:{window_start}") or 0)


def test_a_lease_is_taken_in_one_round_trip_and_spent_locally(redis_client):
    limiter = RateLimiter(redis_client, limit=1000, window=60, lease=10)
    assert limiter.retry_after("k", now=120.0) is None
    assert _counted(redis_client, "k", 120) == 10  # this request and nine more, taken at once
    assert limiter.retry_after_many(["k"] * 9, now=121.0) == [None] * 9
    assert _counted(redis_client, "k", 120) == 10  # spent here, without Redis
    assert limiter.retry_after_many(["k"] * 3, now=122.0) == [None] * 3
    assert _counted(redis_client, "k", 120) == 22  # 2 short, and a lease's 9 more
    # a new window starts with nothing held: what the old one left is not carried over
    assert limiter.retry_after("k", now=180.0) is None
    assert _counted(redis_client, "k", 180) == 10


def test_processes_with_leases_never_pass_more_than_the_limit(redis_client):
    """Four processes' limiters, eight threads each, all sending on one key in one window."""
    import threading

    limit, now = 500, 600.0
    limiters = [RateLimiter(redis_client, limit=limit, window=60, lease=7) for _ in range(4)]
    allowed = []
    start = threading.Barrier(32)

    def send(limiter: RateLimiter) -> None:
        start.wait()
        for _ in range(25):
            answers = limiter.retry_after_many(["k", "k", "other"], now=now)
            allowed.append(sum(answer is None for answer in answers[:2]))

    threads = [threading.Thread(target=send, args=(lim,)) for lim in limiters for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    passed = sum(allowed)  # 1,600 asked for
    assert passed <= limit
    # early refusals are bounded: each process holds fewer than a lease unused
    held = sum(lim._held["k"] for lim in limiters)
    assert passed + held == limit
    assert held <= 4 * (7 - 1)


def test_a_process_asks_for_one_lease_of_a_key_at_a_time(redis_client):
    """Eight requests run short together: one asks for the lease, the others for what they lack."""
    import threading

    limiter = RateLimiter(redis_client, limit=100_000, window=60, lease=10)
    start = threading.Barrier(8)
    answers = []

    def send() -> None:
        start.wait()
        answers.append(limiter.retry_after("k", now=600.0))

    threads = [threading.Thread(target=send) for _ in range(8)]
    redis_client.client_pause(300, all=False)  # writes wait: the eight calls overlap in Redis
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert answers == [None] * 8
    assert _counted(redis_client, "k", 600) == 8 + 9  # one lease's nine more, not eight leases
    assert limiter._held["k"] == 9


def test_a_call_late_from_the_last_window_is_counted_there_and_keeps_the_new_lease(redis_client):
    limiter = RateLimiter(redis_client, limit=1000, window=60, lease=10)
    assert limiter.retry_after("k", now=660.0) is None  # the window of 660: a lease of 10
    assert limiter.retry_after("k", now=659.9) is None  # read the clock just before 660
    assert _counted(redis_client, "k", 600) == 1  # counted in its own window, no lease
    assert limiter._held["k"] == 9  # the new window's lease is still there
    assert limiter.retry_after("k", now=661.0) is None
    assert _counted(redis_client, "k", 660) == 10
