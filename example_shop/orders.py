"""Placed orders in SQLite: what was bought, the tax charged, the certificate that removed it."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Order:
    id: int
    owner: str
    zone: str
    lines: list[dict[str, Any]]
    subtotal_cents: int
    tax_cents: int
    tax_label: str
    certificate: str | None
    placed_at: float

    @property
    def total_cents(self) -> int:
        return self.subtotal_cents + self.tax_cents


class Orders:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, owner TEXT NOT NULL,"
            " zone TEXT NOT NULL, lines TEXT NOT NULL, subtotal_cents INTEGER NOT NULL,"
            " tax_cents INTEGER NOT NULL, tax_label TEXT NOT NULL, certificate TEXT,"
            " placed_at REAL NOT NULL)"
        )
        self._db.commit()

    def place(
        self,
        *,
        owner: str,
        zone: str,
        lines: list[dict[str, Any]],
        subtotal_cents: int,
        tax_cents: int,
        tax_label: str,
        certificate: str | None,
    ) -> int:
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO orders (owner, zone, lines, subtotal_cents, tax_cents, tax_label,"
                " certificate, placed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    owner,
                    zone,
                    json.dumps(lines),
                    subtotal_cents,
                    tax_cents,
                    tax_label,
                    certificate,
                    time.time(),
                ),
            )
            self._db.commit()
            return int(cursor.lastrowid or 0)

    def for_owner(self, owner: str) -> list[Order]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, owner, zone, lines, subtotal_cents, tax_cents, tax_label, certificate,"
                " placed_at FROM orders WHERE owner = ? ORDER BY id DESC",
                (owner,),
            ).fetchall()
        return [
            Order(
                row[0], row[1], row[2], json.loads(row[3]), row[4], row[5], row[6], row[7], row[8]
            )
            for row in rows
        ]
