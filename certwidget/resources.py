"""Where the package's templates and static files live.

An installed wheel carries them inside the package (``certwidget/templates`` and
``certwidget/static``); a source checkout or an editable install keeps them at the top
level. Both are found.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"certwidget's {name}/ directory is missing; reinstall the package "
        f"(looked in {_PACKAGE_DIR / name} and {_PACKAGE_DIR.parent / name})"
    )


def templates_dir() -> Path:
    """The directory of the Jinja2 templates the package renders."""
    return _find("templates")


def static_dir() -> Path:
    """The directory of the widget's JavaScript and CSS."""
    return _find("static")


def data_dir() -> Path:
    """The package's data files (catalog of zones and reasons, each with its source)."""
    return _PACKAGE_DIR / "data"
