"""certwidget.testing: a returning buyer's certificate on file, in either sandbox dialect."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from certwidget import CustomerProfile
from certwidget.providers import CertificateProvider, embedded_commenda, embedded_sandbox
from certwidget.testing import seed_certificate

pytestmark = pytest.mark.anyio

BUYER = CustomerProfile(
    code="C-100", name="Acme Resale", line1="1 Main St", city="Seattle", region="WA"
)


@pytest.fixture(params=[embedded_sandbox, embedded_commenda], ids=["certcapture", "commenda"])
async def provider(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[CertificateProvider]:
    make: Callable[[Path], CertificateProvider] = request.param
    async with make(tmp_path / "sandbox.sqlite3") as made:  # type: ignore[attr-defined]
        yield made


async def test_a_seeded_certificate_is_active_and_on_file(provider: CertificateProvider) -> None:
    expires = dt.date.today() + dt.timedelta(days=200)
    seeded = await seed_certificate(
        provider, BUYER, zone="WA", reason="G", exemption_number="603123456",
        expiration_date=expires,
    )  # fmt: skip

    (on_file,) = await provider.certificates_for(BUYER.code)
    assert on_file.id == seeded
    assert (on_file.zone, on_file.reason, on_file.status) == ("WA", "G", "Active")
    assert on_file.expiration_date == expires


async def test_seeding_again_with_the_same_key_makes_no_second_certificate(
    provider: CertificateProvider,
) -> None:
    expires = dt.date.today() + dt.timedelta(days=30)
    for _ in range(2):
        await seed_certificate(
            provider, BUYER, zone="WA", reason="G", exemption_number="603123456",
            expiration_date=expires, idempotency_key="seed-once",
        )  # fmt: skip
    assert len(await provider.certificates_for(BUYER.code)) == 1


async def test_a_provider_it_cannot_write_to_is_refused_by_name() -> None:
    class Elsewhere:
        name = "elsewhere"

    with pytest.raises(TypeError, match="not Elsewhere"):
        await seed_certificate(
            Elsewhere(),  # type: ignore[arg-type]
            BUYER,
            zone="WA",
            reason="G",
            exemption_number="1",
            expiration_date=dt.date.today(),
        )
