"""``import certwidget`` is cheap: heavy libraries load when the code that needs them runs.

Each check runs in a fresh interpreter, since this test process has long imported everything.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import certwidget
import certwidget.providers

ROOT = Path(__file__).resolve().parent.parent

# Provider clients, PDF, YAML, image and server libraries, and the web stack itself.
HEAVY = ("httpx", "PIL", "fpdf", "pypdf", "yaml", "uvicorn", "fastapi", "psycopg", "jinja2")

# What the example shop may import from certwidget: the documented public modules.
PUBLIC_MODULES = {"certwidget", "certwidget.providers", "certwidget.testing"}

# A provider with nothing behind it: building the middleware must not need a client.
_FAKE_PROVIDER = """
class Provider:
    name = "fake"
    can_mint_tokens = False
    async def mint_token(self, customer_code): raise NotImplementedError
    async def ensure_customer(self, profile): return profile.code
    async def create_certificate(self, draft): raise NotImplementedError
    async def attach_document(self, certificate_id, content, *, media_type, filename): pass
    async def certificates_for(self, customer_code): return []
    async def aclose(self): pass
"""


def _loaded_after(code: str, tmp_path: Path) -> set[str]:
    """The top-level modules of HEAVY that a fresh interpreter holds after running ``code``."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted(n for n in {HEAVY!r} if n in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout.splitlines()[-1]))


def test_import_certwidget_loads_none_of_the_heavy_libraries(tmp_path: Path) -> None:
    assert _loaded_after("import certwidget", tmp_path) == set()


def test_the_providers_package_loads_no_client_until_one_is_named(tmp_path: Path) -> None:
    assert _loaded_after("import certwidget.providers, certwidget.testing", tmp_path) == set()
    loaded = _loaded_after("from certwidget.providers import CertCaptureProvider", tmp_path)
    assert "httpx" in loaded
    assert loaded.isdisjoint({"PIL", "fpdf", "pypdf", "yaml", "uvicorn", "fastapi"})


def test_building_the_middleware_loads_no_client_pdf_image_or_server_library(
    tmp_path: Path,
) -> None:
    code = f"""{_FAKE_PROVIDER}
from certwidget import CertWidgetMiddleware
middleware = CertWidgetMiddleware(
    lambda scope, receive, send: None,
    secret_key="k" * 32,
    provider=Provider(),
    database={str(tmp_path / "outbox.sqlite3")!r},
)
assert middleware.runtime is not None
"""
    loaded = _loaded_after(code, tmp_path)
    assert loaded.isdisjoint({"httpx", "PIL", "fpdf", "pypdf", "yaml", "uvicorn", "fastapi"})


def test_the_default_sandbox_runs_without_a_server_or_pdf_library(tmp_path: Path) -> None:
    code = f"""
from certwidget import CertWidgetMiddleware
middleware = CertWidgetMiddleware(
    lambda scope, receive, send: None,
    secret_key="k" * 32,
    database={str(tmp_path / "outbox.sqlite3")!r},
)
assert middleware.runtime is not None
"""
    loaded = _loaded_after(code, tmp_path)
    assert "httpx" in loaded  # the sandbox is reached through the ordinary client
    assert loaded.isdisjoint({"PIL", "fpdf", "pypdf", "yaml", "uvicorn", "fastapi"})


@pytest.mark.parametrize("module", [certwidget, certwidget.providers])
def test_every_public_name_resolves_and_is_listed(module: object) -> None:
    names = module.__all__  # type: ignore[attr-defined]
    for name in names:
        assert getattr(module, name) is not None, name
    assert set(names) <= set(dir(module))


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'CertWidget'"):
        _ = certwidget.CertWidget  # type: ignore[attr-defined]
    with pytest.raises(AttributeError, match="no attribute 'SandboxProvider'"):
        _ = certwidget.providers.SandboxProvider  # type: ignore[attr-defined]


def test_from_import_of_a_submodule_still_works_beside_the_lazy_names() -> None:
    from certwidget.providers import retrying

    assert retrying.__name__ == "certwidget.providers.retrying"


def _certwidget_imports(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules.add(node.module)
    return {name for name in modules if name.split(".")[0] == "certwidget"}


def test_the_example_shop_imports_only_certwidgets_public_modules() -> None:
    sources = sorted((ROOT / "example_shop").rglob("*.py"))
    assert sources
    used = {name: path.name for path in sources for name in _certwidget_imports(path)}
    assert "certwidget" in used
    private = {name: where for name, where in used.items() if name not in PUBLIC_MODULES}
    assert private == {}, f"the example shop reaches into certwidget's internals: {private}"
