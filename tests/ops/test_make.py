"""The make targets an operator expects exist, are listed by `make help`, and parse."""

from __future__ import annotations

import subprocess

from tests.ops.conftest import ROOT

TARGETS = (
    "run",
    "test",
    "lint",
    "fmt",
    "migrate",
    "worker",
    "beat",
    "flower",
    "bench",
    "compose-up",
)


def make(*args: str) -> str:
    result = subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_make_help_lists_every_operator_target():
    listed = {line.split()[0] for line in make("help").splitlines() if line.strip()}
    assert set(TARGETS) <= listed


def test_each_target_runs_the_documented_command():
    expected = {
        "flower": "celery -A worker.celery_app flower",
        "worker": "-Q sms,campaign,callbacks",
        "beat": "beat",
        "migrate": "smsgw db upgrade",
        "compose-up": "docker compose",
        "api": "smsgw api",
    }
    for target, fragment in expected.items():
        assert fragment in make("-n", target), target
