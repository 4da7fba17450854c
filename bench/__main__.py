"""`make bench`: every benchmark, each beside its baseline measured in the same run.

1. `POST /api/user/sms` under `smsgw api`, beside a fixed reference: a bare Flask endpoint
   under plain `gunicorn -w 4` (wrk, 32 connections), with Redis and with RabbitMQ as the
   broker;
2. the worker's hand-off to the sandbox, beside its floor (one POST to the sandbox and
   nothing else) and a no-op Celery task, on the same broker and pool; on Redis and on
   RabbitMQ (alone: `python -m bench handoff [--latency-ms 0] [--pool threads] [-c 16]
   [--processes 2] [--rabbitmq]`);
3. campaigns: 202 to every message queued, paced rates, peak memory (bench.campaigns).

The figures of 1 and 2 are also drawn (bench.charts) into docs/bench/, which the README shows.

`python -m bench scheduling` is one too: 100,000 messages scheduled for one instant, a
campaign's and single sends, and how soon and how fast they go (bench.scheduling).
`python -m bench data` is a command of its own (loading takes minutes): the send rate,
the lists and the beat passes at 0, 1,000,000 and 10,000,000 messages (bench.data).
"""

from __future__ import annotations

import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import api_send, campaigns, charts, data, handoff, scheduling

CHARTS = Path(__file__).resolve().parent.parent / "docs" / "bench"


def machine() -> str:
    """Describe the machine the figures come from."""
    load = os.getloadavg()[0]
    return f"{platform.machine()}, {os.cpu_count()} cores, load {load:.1f} at start"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks and print their tables; `python -m bench handoff` runs one section."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "handoff":
        print(f"machine: {machine()}", flush=True)
        return handoff.main(argv[1:])
    if argv and argv[0] == "scheduling":
        print(f"machine: {machine()}", flush=True)
        return scheduling.main(argv[1:])
    if argv and argv[0] == "data":
        print(f"machine: {machine()}", flush=True)
        return data.main(argv[1:])
    at_start = machine()
    print(f"machine: {at_start}", flush=True)
    rows = []
    api_rows = api_send.run()
    bare, gateway, rabbit, waiting = api_rows
    per_round = []
    for label, row in (("", gateway), (", RabbitMQ", rabbit), (", 1M scheduled", waiting)):
        name = f"POST /api/user/sms{label}, req/s"
        rows.append((name, row["rate"], bare["rate"], ">= 55%"))
        rows.append(
            (
                "  p50 / p99 latency, ms",
                f"{row['p50']:.1f} / {row['p99']:.1f}",
                f"{bare['p50']:.1f} / {bare['p99']:.1f}",
                "p99 < 50",
            )
        )
        ratios = (
            f"{ours / base:.0%}" for ours, base in zip(row["rounds"], bare["rounds"], strict=True)
        )
        per_round.append(f"{row['what']}: {', '.join(ratios)}")
    rows.append(("  with 1M scheduled / without", waiting["rate"], gateway["rate"], "no slower"))
    handoff_rows = []
    for rabbitmq in (False, True):
        broker = "RabbitMQ" if rabbitmq else "Redis"
        for latency, setting in ((0, handoff.FAST), (150, handoff.SLOW)):
            noop, post, send = handoff.measure(
                count=2000, latency_ms=latency, setting=setting, rabbitmq=rabbitmq
            )
            what = f"hand-off, {broker}, {latency} ms, msg/s"
            rows.append((what, send["rate"], post["rate"], ">= 80%"))
            rows.append(("  floor, beside the no-op task", post["rate"], noop["rate"], "-"))
            handoff_rows.append(
                {
                    "what": f"{broker}, sandbox {latency} ms",
                    "noop": noop["rate"],
                    "floor": post["rate"],
                    "send": send["rate"],
                }
            )
    print(f"\n{'measure':38} | {'gateway':>13} | {'baseline':>13} | {'ratio':>6} | goal")
    for what, ours, base, goal in rows:
        if isinstance(ours, float):
            print(f"{what:38} | {ours:13.1f} | {base:13.1f} | {ours / base:6.0%} | {goal}")
        else:
            print(f"{what:38} | {ours:>13} | {base:>13} | {'':>6} | {goal}")
    print(
        f"\nPOST /api/user/sms: medians of {len(bare['rounds'])} alternating rounds;"
        f" gateway/reference in each, {'; '.join(per_round)}"
        "\nreference: bench/bare_app.py under plain `gunicorn -w 4`; the API: `smsgw api`."
        "\nfloor: the least any hand-off must do, one POST to the sandbox and nothing else"
        "\n(bench/noop_worker.py), same broker and pool; its own ratio is to a no-op task\n",
        flush=True,
    )
    day = datetime.now(UTC).date().isoformat()
    for path in charts.write_charts(
        api_rows, handoff_rows, CHARTS, machine=f"{at_start}; {day}; `make bench`"
    ):
        print(f"chart: {path}", flush=True)
    for row in (bare, gateway, rabbit, waiting):
        if row["bad"]:
            print(f"warning: {row['what']}: {row['bad']:.0f} answers were not 2xx")
        if row["socket_errors"]:
            print(f"warning: {row['what']}: wrk saw socket errors (timeouts or resets)")
    return campaigns.main([])


if __name__ == "__main__":
    raise SystemExit(main())
