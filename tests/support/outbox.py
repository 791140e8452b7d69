"""What the outbox tests share: a new submission to store, and a slow provider to deliver to."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from typing import Any

from certwidget.outbox.base import NewSubmission
from certwidget.providers.base import (
    CertificateDraft,
    CustomerProfile,
    ProviderCertificate,
    ProviderToken,
)


def new(
    key: str, *, customer: str = "C-1", document: bytes = b"%PDF-1.4 doc", **payload: Any
) -> NewSubmission:
    return NewSubmission(
        customer=customer,
        guest=False,
        idempotency_key=key,
        body_hash="hash-" + key,
        kind="upload",
        payload={"zones": ["WA"], "reason": "G", **payload},
        document=document,
        media_type="application/pdf",
        filename="cert.pdf",
    )


class SlowProvider:
    """Counts deliveries; each takes a while, longer than the lease would last unrenewed."""

    name = "slow"
    can_mint_tokens = False

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.created: Counter[str] = Counter()
        self.attached: Counter[str] = Counter()
        self.active = 0
        self.most_active = 0
        self._lock = threading.Lock()

    async def mint_token(self, customer_code: str) -> ProviderToken:
        raise NotImplementedError

    async def ensure_customer(self, profile: CustomerProfile) -> str:
        return "cust-" + profile.code

    async def create_certificate(self, draft: CertificateDraft) -> ProviderCertificate:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await asyncio.sleep(self.seconds)
        finally:
            self.active -= 1
        self.created[draft.idempotency_key] += 1
        return ProviderCertificate(
            id=draft.idempotency_key, zone=draft.zone, reason=draft.reason, status="Pending"
        )

    async def attach_document(
        self, certificate_id: str, content: bytes, *, media_type: str, filename: str
    ) -> None:
        self.attached[certificate_id] += 1

    async def certificates_for(self, customer_code: str) -> list[ProviderCertificate]:
        return []

    async def aclose(self) -> None:
        return None
