"""Property-based conformance: the sandbox, under real uvicorn, against the spec it serves.

Schemathesis reads the spec the sandbox serves and drives every operation with
valid (positive) and invalid (negative) requests, authenticated with Basic auth, checking that
nothing is a 5xx, that every status, header, content type and body is one the spec declares, that
invalid input is refused, and that auth is really enforced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from certwidget.sandbox import create_app
from certwidget.sandbox.app import SPEC_PATH as SPEC

PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)

CONFIG = schemathesis.Config.from_dict(
    {
        # Enough to find a crash or a spec mismatch per operation, small enough for 2 cores.
        "generation": {"mode": "all", "max-examples": 25},
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": True},
            "fuzzing": {"enabled": True},
        },
        "checks": {
            "enabled": False,
            "not_a_server_error": {"enabled": True},
            "status_code_conformance": {"enabled": True},
            "content_type_conformance": {"enabled": True},
            "response_schema_conformance": {"enabled": True},
            "response_headers_conformance": {"enabled": True},
            "negative_data_rejection": {"enabled": True},
            "missing_required_header": {"enabled": True},
            "ignored_auth": {"enabled": True},
            "unsupported_method": {"enabled": True},
            "use_after_free": {"enabled": True},
        },
        "auth": {"basic": {"username": "sandbox", "password": "sandbox"}},
    }
)


@pytest.fixture
def sandbox_url(tmp_path: Path, live_server_factory: Any) -> str:
    # A fresh sandbox per operation: starting one costs milliseconds, and no operation's
    # generated data can change what another one sees.
    server = live_server_factory(create_app(db_path=tmp_path / "sandbox.sqlite3"))
    _seed(f"{server.url}/v2")
    return str(server.url)


def _seed(base_url: str) -> None:
    # Some data, so generated ids and codes ("1", "2") sometimes hit real records and the
    # 200 answers are checked too, not only the 404s.
    with httpx.Client(base_url=base_url, auth=("sandbox", "sandbox")) as client:
        for number in range(1, 4):
            client.post("/customers", json={"customerCode": str(number), "name": f"Buyer {number}"})
            cert = client.post(
                "/certificates",
                json={
                    "customerCode": str(number),
                    "exemptionReason": "Resale",
                    "exposureZone": "WA",
                    "expirationDate": "2020-01-01" if number == 3 else "2099-01-01",
                },
            ).json()
            client.post(
                f"/certificates/{cert['id']}/attachment", files={"file": ("a.png", PNG)}
            ).raise_for_status()


# Loaded from the packaged file, which the sandbox serves byte for byte at /v2/openapi.yml
# (test_sandbox_api checks that). schemathesis.pytest.from_fixture, which would fetch it from the
# live server, fails on pytest 9.2 (it sets Function._nodeid, which pytest no longer has).
schema = schemathesis.openapi.from_path(SPEC, config=CONFIG)

# Negative cases add random extra headers. With a random value, these ones frame the HTTP message
# itself (`Content-Length: }`): that is malformed HTTP, refused by uvicorn's parser with a
# text/plain 400 before any application sees it, so no spec can describe the answer.
_FRAMING_HEADERS = frozenset(
    {"content-length", "transfer-encoding", "host", "connection", "expect", "upgrade", "te"}
)


@schema.hook
def filter_headers(context: schemathesis.HookContext, headers: dict[str, Any] | None) -> bool:
    return not headers or _FRAMING_HEADERS.isdisjoint(name.lower() for name in headers)


@schema.parametrize()
# One sandbox per operation, shared by that operation's examples on purpose: each request stands
# alone, and a server per example would spend the time budget on start-ups.
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_the_sandbox_conforms_to_the_spec_it_serves(
    case: schemathesis.Case[Any], sandbox_url: str
) -> None:
    case.call_and_validate(base_url=f"{sandbox_url}/v2")
