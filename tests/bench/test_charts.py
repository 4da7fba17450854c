"""The benchmark's charts: two PNG files, wide enough to read and small enough to commit."""

from __future__ import annotations

import pytest

from bench.charts import write_charts

API_ROWS = [
    {
        "what": "reference: bare Flask, gunicorn -w 4",
        "rate": 3055.6,
        "p50": 8.9,
        "p99": 58.1,
        "rounds": [3098.8, 2964.1, 3162.4],
    },
    {
        "what": "POST /api/user/sms (Redis)",
        "rate": 1203.0,
        "p50": 26.8,
        "p99": 58.0,
        "rounds": [1180.2, 1203.0, 1250.7],
    },
    {
        "what": "POST /api/user/sms (RabbitMQ)",
        "rate": 1111.5,
        "p50": 28.9,
        "p99": 64.3,
        "rounds": [1090.0, 1111.5, 1160.3],
    },
    {
        "what": "POST /api/user/sms (1M scheduled)",
        "rate": 1150.2,
        "p50": 27.5,
        "p99": 61.0,
        "rounds": [1101.9, 1150.2, 1199.4],
    },
]
HANDOFF_ROWS = [
    {"what": "Redis, sandbox 0 ms", "noop": 1056.4, "floor": 468.3, "send": 278.6},
    {"what": "Redis, sandbox 150 ms", "noop": 1020.7, "floor": 420.1, "send": 341.9},
    {"what": "RabbitMQ, sandbox 0 ms", "noop": 890.2, "floor": 440.8, "send": 301.5},
    {"what": "RabbitMQ, sandbox 150 ms", "noop": 870.0, "floor": 401.3, "send": 330.2},
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_writes_two_readable_small_pngs(tmp_path):
    folder = tmp_path / "charts"

    paths = write_charts(API_ROWS, HANDOFF_ROWS, folder, machine="x86_64, 2 cores, load 0.6")

    assert [path.name for path in paths] == ["api.png", "handoff.png"]
    for path in paths:
        content = path.read_bytes()
        assert content.startswith(PNG_SIGNATURE)
        assert int.from_bytes(content[16:20], "big") >= 600  # IHDR width, in pixels
        assert len(content) < 150_000


def test_a_row_without_a_figure_raises(tmp_path):
    rows = [{key: value for key, value in row.items() if key != "floor"} for row in HANDOFF_ROWS]

    with pytest.raises(KeyError, match="floor"):
        write_charts(API_ROWS, rows, tmp_path, machine="x86_64")
