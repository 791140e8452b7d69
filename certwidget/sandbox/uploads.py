"""Certificate documents from ``multipart/form-data``: capped while streaming, typed by content.

The cap is enforced on the wire: a declared Content-Length over the limit is refused before a
byte is read, and a chunked body is counted as it streams, so no upload is ever held in memory
beyond the cap (python-multipart only ever sees the bytes we let through). The type comes from
the file's first bytes, never from its name or the declared part type, which clients get wrong.

    >>> sniff_media_type(b"%PDF-1.7 ...")
    'application/pdf'
    >>> sniff_media_type(b"GIF89a") is None
    True
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request
from starlette.responses import Response

from certwidget.sandbox.errors import ApiError, bad_request
from certwidget.sandbox.store import Attachment
from certwidget.sandbox.validation import too_large

MAX_FILE_BYTES = 10 * 1024 * 1024
# Room for the part headers and boundaries around a file of exactly MAX_FILE_BYTES.
_MULTIPART_OVERHEAD = 64 * 1024
MAX_BODY_BYTES = MAX_FILE_BYTES + _MULTIPART_OVERHEAD

#: Leading bytes of each accepted document type.
_SIGNATURES = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
ACCEPTED_TYPES = "PDF, PNG, JPEG or TIFF"


def sniff_media_type(content: bytes) -> str | None:
    """The media type the content's magic bytes identify, or None if it is not accepted."""
    for signature, media_type in _SIGNATURES:
        if content.startswith(signature):
            return media_type
    return None


def _show_boundary(boundary: str) -> str:
    return boundary if len(boundary) <= 72 else boundary[:69] + "..."


def attachment_response(attachment: Attachment) -> Response:
    """A stored document as a download.

    ``nosniff``: the media type was judged from the content at upload, and a browser must not
    guess another one (an upload that sniffs as HTML would otherwise run as a page here).
    """
    return Response(
        attachment.content,
        media_type=attachment.media_type,
        headers={"X-Content-Type-Options": "nosniff"},
    )


async def _capped(request: Request, limit: int) -> AsyncIterator[bytes]:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise too_large(MAX_FILE_BYTES)
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise too_large(MAX_FILE_BYTES)
        yield chunk


class _Part:
    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self.data = bytearray()
        self.name = ""
        self.filename = ""


async def read_upload(request: Request) -> Attachment:
    """The document in the ``file`` field of a multipart request, checked for size and type."""
    media_type, params = parse_options_header(request.headers.get("content-type"))
    if media_type != b"multipart/form-data":
        raise ApiError(
            415,
            "unsupported_media_type",
            "Upload the document as multipart/form-data with a field named 'file'",
        )
    boundary = params.get(b"boundary")
    if not boundary:
        raise bad_request("The multipart/form-data Content-Type has no boundary parameter")

    parts: list[_Part] = []
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        parts.append(_Part())

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data += data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        parts[-1].headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        part = parts[-1]
        _, options = parse_options_header(part.headers.get(b"content-disposition"))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        part.filename = options.get(b"filename", b"").decode("utf-8", "replace")

    ended = False

    def on_end() -> None:
        nonlocal ended
        ended = True

    try:
        # Inside the try: the constructor refuses a boundary over 256 characters (a 500 once).
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_part_data": on_part_data,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_end": on_end,
            },
        )
        async for chunk in _capped(request, MAX_BODY_BYTES):
            parser.write(chunk)
        parser.finalize()
    except FormParserError as exc:
        raise bad_request(f"The multipart/form-data body is malformed: {exc}") from None
    # python-multipart's finalize() does not check that the body was complete (its own TODO):
    # a body cut short would store a truncated document as if it were whole.
    if not ended:
        closing = boundary.decode("latin-1")
        raise bad_request(
            "The multipart/form-data body ends before its closing boundary "
            f"'--{_show_boundary(closing)}--'; send the whole body"
        )

    document = next((part for part in parts if part.name == "file"), None)
    if document is None:
        raise bad_request("Send the document in a multipart/form-data field named 'file'")
    if len(document.data) > MAX_FILE_BYTES:
        raise too_large(MAX_FILE_BYTES)
    if not document.data:
        raise bad_request("The uploaded file is empty")
    sniffed = sniff_media_type(bytes(document.data))
    if sniffed is None:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"The file is not a {ACCEPTED_TYPES} document (judged by its content, not its name)",
        )
    return Attachment(bytes(document.data), sniffed, document.filename or "attachment")
