"""The wheel: one top-level package, its assets inside, and it runs where pip puts it.

The install test makes a fresh virtual environment, installs the wheel with its hard
dependencies only (from the index pip is configured with here), then adds the demo extra, and
runs what a user runs: the middleware, ``certwidget demo`` and ``certwidget sandbox``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "-w", str(dist), str(ROOT)],
        check=True,
    )  # fmt: skip
    (built,) = dist.glob("certwidget-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_installs_one_top_level_package(wheel: Path) -> None:
    names = _names(wheel)
    top_level = {name.split("/")[0] for name in names if not name.startswith("certwidget-")}
    assert top_level == {"certwidget"}
    # The example shop rides inside the package, with its templates, assets and data.
    assert "certwidget/_example_shop/__init__.py" in names
    shop = {name.split("/")[2] for name in names if name.startswith("certwidget/_example_shop/")}
    assert {"templates", "static", "data", "app.py"} <= shop
    assert not any("__pycache__" in name for name in names)


def test_an_installed_wheel_finds_its_templates_and_static_files(
    wheel: Path, tmp_path: Path
) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert "certwidget/static/certwidget.js" in names
    assert any(name.startswith("certwidget/templates/") for name in names)
    assert "certwidget/py.typed" in names

    # Run from an unrelated directory with only the unpacked wheel on the path, so the
    # source checkout's top-level templates/ and static/ cannot be what is found.
    probe = (
        "import certwidget.resources as r; "
        "print(r.templates_dir()); print(r.static_dir()); "
        "assert (r.static_dir() / 'certwidget.js').is_file()"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'site')!r}); {probe}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    templates, static = result.stdout.split()
    assert Path(templates).is_relative_to(tmp_path / "site")
    assert Path(static).is_relative_to(tmp_path / "site")


class _Venv:
    """A fresh virtual environment, filled by this interpreter's pip (no pip of its own)."""

    def __init__(self, path: Path) -> None:
        venv.create(path, with_pip=False)
        self.path = path
        self.bin = path / "bin"
        # Nothing from the source checkout or this test run may leak in.
        self.env = {
            key: value
            for key, value in os.environ.items()
            if key not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
        }

    def install(self, requirement: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.bin / "python"), "install",
             "--quiet", requirement],
            check=True,
            timeout=600,
        )  # fmt: skip

    def run(self, *command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            command, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=120
        )

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run(str(self.bin / "python"), "-c", code, cwd=cwd)


_BUILD_MIDDLEWARE = """
import importlib.util
from certwidget import CertWidgetMiddleware
middleware = CertWidgetMiddleware(
    lambda scope, receive, send: None, secret_key="k" * 32, database="data/outbox.sqlite3"
)
assert middleware.runtime is not None
extras = ("uvicorn", "fastapi", "yaml", "psycopg")
print(" ".join(name for name in extras if importlib.util.find_spec(name) is None))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serves_the_demo(env: _Venv, cwd: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [str(env.bin / "certwidget"), "demo", "--port", str(port), "--data-dir", "demo"],
        cwd=cwd,
        env=env.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/checkout", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, "certwidget demo exited before serving"
                assert time.monotonic() < deadline, "certwidget demo never served"
                time.sleep(0.1)
        assert page.status_code == 200
        assert "/certwidget/static/certwidget" in page.text  # the widget was injected
        assert httpx.get(f"http://127.0.0.1:{port}/assets/shop.css").status_code == 200
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_wheel_runs_on_its_hard_dependencies_and_the_demo_on_its_extra(
    wheel: Path, tmp_path: Path
) -> None:
    env = _Venv(tmp_path / "venv")
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)

    # The hard dependencies are enough for the middleware and its default sandbox.
    env.install(str(wheel))
    built = env.python(_BUILD_MIDDLEWARE, cwd=work)
    assert built.returncode == 0, built.stderr
    assert built.stdout.split() == ["uvicorn", "fastapi", "yaml", "psycopg"]
    # The commands that need an extra say which one, without a traceback.
    demo = env.run(str(env.bin / "certwidget"), "demo", cwd=work)
    assert demo.returncode == 1
    assert "pip install 'certwidget[demo]'" in demo.stderr
    assert "Traceback" not in demo.stderr
    sandbox = env.run(str(env.bin / "certwidget"), "sandbox", "--db", "s.sqlite3", cwd=work)
    assert sandbox.returncode == 1
    assert "pip install 'certwidget[sandbox]'" in sandbox.stderr
    assert "Traceback" not in sandbox.stderr

    env.install(f"{wheel}[demo]")
    help_text = env.run(str(env.bin / "certwidget"), "demo", "--help", cwd=work)
    assert help_text.returncode == 0, help_text.stderr
    assert "--provider" in help_text.stdout
    shop = env.python("import certwidget._example_shop as shop; print(shop.__file__)", cwd=work)
    assert shop.returncode == 0, shop.stderr
    assert Path(shop.stdout.strip()).is_relative_to(env.path)
    assert env.python("import example_shop", cwd=work).returncode == 1
    _serves_the_demo(env, work)
