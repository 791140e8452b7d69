"""The ``certwidget`` command, run as a user runs it: a real process on a real port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from certwidget.cli import build_parser
from certwidget.demo import _example_shop


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _certwidget_command() -> list[str]:
    """The installed console script next to this Python, as a user would run it."""
    script = Path(sys.executable).with_name("certwidget")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from certwidget.cli import main; sys.exit(main())"]


def _read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """stdout up to and including the line containing ``marker``."""
    assert process.stdout is not None
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"{marker!r} never printed; got:\n{''.join(seen)}")


def _wait_until_serving(url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_certwidget_sandbox_serves_the_api_and_prints_how_to_reach_it(tmp_path: Path) -> None:
    port = _free_port()
    db = tmp_path / "data" / "sandbox.sqlite3"
    db.parent.mkdir()
    command = [
        *_certwidget_command(),
        "sandbox", "--port", str(port), "--db", str(db),
        "--username", "shop", "--password", "s3cret",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        printed = _read_until(process, "data:", timeout=30)
        base = f"http://127.0.0.1:{port}/v2"
        assert base in printed
        assert "shop" in printed
        assert "s3cret" in printed
        _wait_until_serving(f"{base}/openapi.yml")

        with httpx.Client(base_url=base, auth=("shop", "s3cret")) as client:
            created = client.post("/customers", json={"customerCode": "C-1"})
            assert created.status_code == 201
            assert client.get("/customers").json()["totalCount"] == 1
        assert httpx.get(f"{base}/customers", auth=("sandbox", "sandbox")).status_code == 401
        assert db.exists()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_an_unusable_database_path_is_reported_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [*_certwidget_command(), "sandbox", "--db", str(tmp_path / "missing" / "x.sqlite3")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "cannot use the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_sandbox_defaults_match_the_documented_ones() -> None:
    args = build_parser().parse_args(["sandbox"])
    assert (args.host, args.port, args.db) == ("127.0.0.1", 8765, "./certwidget-sandbox.sqlite3")
    assert (args.username, args.password) == ("sandbox", "sandbox")


def test_a_command_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([])
    assert exit_info.value.code == 2
    assert "sandbox" in capsys.readouterr().err


def test_demo_defaults_match_the_documented_ones() -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.host, args.port, args.provider) == ("127.0.0.1", 8000, "sandbox")
    assert args.data_dir == ".certwidget-demo"


def test_demo_runs_the_example_shop_of_a_source_checkout() -> None:
    # An installed wheel carries it as certwidget._example_shop (tests/test_packaging.py).
    shop = _example_shop()
    assert shop.__name__ == "example_shop"
    assert callable(shop.create_app)
