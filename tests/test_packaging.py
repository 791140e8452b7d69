"""The wheel ships templates/ and static/, and an installed wheel finds them."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_an_installed_wheel_finds_its_templates_and_static_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--quiet",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        check=True,
    )
    (wheel,) = (tmp_path / "dist").glob("certwidget-*.whl")
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
