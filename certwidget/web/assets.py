"""The widget's static files, served from memory under content-hashed names.

``certwidget.3f2a9c1b7e.js`` changes name whenever its bytes change, so it can be cached for a
year (``immutable``) and a deploy still reaches every browser at once. The plain names
(``certwidget.js``) stay available for shops that call ``CertWidget.init`` from their own markup;
those are revalidated with an ETag.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

from starlette.responses import Response

from certwidget.resources import static_dir

_MEDIA_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
IMMUTABLE = "public, max-age=31536000, immutable"


@dataclass(frozen=True, slots=True)
class Asset:
    name: str
    hashed_name: str
    content: bytes
    gzipped: bytes
    media_type: str
    etag: str


class Assets:
    """Loads ``certwidget.js`` and ``certwidget.css`` once and answers requests for them."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or static_dir()
        self._by_name: dict[str, tuple[Asset, bool]] = {}
        self.urls: dict[str, str] = {}
        for name in ("certwidget.js", "certwidget.css"):
            content = (directory / name).read_bytes()
            digest = hashlib.sha256(content).hexdigest()[:12]
            stem, suffix = name.rsplit(".", 1)
            asset = Asset(
                name=name,
                hashed_name=f"{stem}.{digest}.{suffix}",
                content=content,
                gzipped=gzip.compress(content, 9, mtime=0),
                media_type=_MEDIA_TYPES["." + suffix],
                etag=f'"{digest}"',
            )
            self._by_name[asset.hashed_name] = (asset, True)
            self._by_name[name] = (asset, False)
            self.urls[name] = asset.hashed_name

    def response(self, name: str, *, accept_encoding: str, if_none_match: str | None) -> Response:
        found = self._by_name.get(name)
        if found is None:
            return Response(
                "Not found: the widget serves certwidget.js and certwidget.css only.",
                status_code=404,
                media_type="text/plain",
            )
        asset, hashed = found
        headers = {
            "Cache-Control": IMMUTABLE if hashed else "no-cache",
            "ETag": asset.etag,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        if if_none_match is not None and asset.etag in if_none_match:
            return Response(status_code=304, headers=headers)
        if "gzip" in accept_encoding.lower():
            headers["Content-Encoding"] = "gzip"
            return Response(asset.gzipped, media_type=asset.media_type, headers=headers)
        return Response(asset.content, media_type=asset.media_type, headers=headers)
