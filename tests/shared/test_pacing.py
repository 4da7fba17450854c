"""The Redis token bucket: one rate per sender number, held across processes."""

from __future__ import annotations

import multiprocessing
import time

import redis

from shared.pacing import Pacer

RATE = 20
WINDOW = 2.0


def _hammer(url: str, number: str, ready, stop, out) -> None:
    pacer = Pacer(redis.Redis.from_url(url))
    grants = []
    ready.release()
    while not stop.is_set():
        grant = pacer.take(number, rate=RATE, wanted=3)
        if grant.granted:
            grants.append((time.monotonic(), grant.granted))
        time.sleep(min(grant.wait, 0.01))
    out.put(grants)


def test_two_processes_share_one_rate(redis_url, redis_client):
    context = multiprocessing.get_context("spawn")
    out, ready, stop = context.Queue(), context.Semaphore(0), context.Event()
    workers = [
        context.Process(target=_hammer, args=(redis_url, "+15005550006", ready, stop, out))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        assert ready.acquire(timeout=30)
    start = time.monotonic() + 0.3
    time.sleep(0.3 + WINDOW + 0.1)
    stop.set()
    grants = [out.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(10)
    assert all(grants), "both processes were served"
    # Counted over a window in which both processes were asking all along.
    in_window = sum(n for g in grants for at, n in g if start <= at < start + WINDOW)
    assert RATE * WINDOW * 0.9 <= in_window <= RATE * WINDOW + 2


def test_a_new_bucket_starts_empty_and_refills_at_the_rate(redis_client):
    pacer = Pacer(redis_client)
    first = pacer.take("+15005550001", rate=10, wanted=5)
    assert first.granted == 0 and 0 < first.wait <= 0.1
    time.sleep(0.35)
    later = pacer.take("+15005550001", rate=10, wanted=10)
    assert 3 <= later.granted <= 4


def test_numbers_have_their_own_buckets_and_capacity_is_one_second(redis_client):
    pacer = Pacer(redis_client)
    pacer.take("+15005550001", rate=5, wanted=1)
    pacer.take("+15005550002", rate=5, wanted=1)
    time.sleep(1.5)
    assert pacer.take("+15005550001", rate=5, wanted=100).granted == 5
    assert pacer.take("+15005550002", rate=5, wanted=100).granted == 5
