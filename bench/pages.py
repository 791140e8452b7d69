"""Checkout pages of a chosen size, shaped like real ones (tables, buttons, inline script)."""

from __future__ import annotations

from collections.abc import AsyncIterator

HEAD = (
    b"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Checkout</title>"
    b"<link rel='stylesheet' href='/assets/shop.css'></head><body><header><nav>"
    b"<a href='/'>Shop</a> <a href='/cart'>Cart</a></nav></header><main><h1>Checkout</h1>"
    b"<table class='cart'><thead><tr><th>Item</th><th>Qty</th><th>Price</th></tr></thead><tbody>"
)
ROW = (
    b"<tr class='line'><td><b>Shipping box %05d</b> <small>SKU BOX-%05d</small></td>"
    b"<td><input name='qty' value='1' aria-label='Quantity'></td><td>$%d.00</td>"
    b"<td><button type='button' class='remove'>Remove</button></td></tr>\n"
)
TAIL = (
    b"</tbody></table><form method='post' action='/orders'><button>Place order</button></form>"
    b"</main><footer>Shop Inc.</footer><script>if (1 < 2) { console.log('ready'); }</script>"
    b"</body></html>"
)


def page(size: int) -> bytes:
    """An HTML page of ``size`` bytes (give or take one row) ending in ``</body></html>``."""
    rows = bytearray()
    index = 0
    while len(HEAD) + len(rows) + len(TAIL) < size:
        rows += ROW % (index, index, 3 + index % 40)
        index += 1
    return HEAD + bytes(rows) + TAIL


def chunks(body: bytes, size: int) -> list[bytes]:
    return [body[at : at + size] for at in range(0, len(body), size)]


async def stream(parts: list[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
