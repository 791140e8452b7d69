"""A multipart/form-data body already in memory, read into fields and files.

Intake reads an upload's body whole (it is size-capped first), so the parts are sliced straight
out of it. Starlette's form parser, made for bodies that stream, writes each file to a spooled
temporary file and reads it back: on a 200 KB upload that is most of what reading the form costs.
The framing itself is parsed by python-multipart, as in Starlette.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass, field

import python_multipart.multipart
from python_multipart.exceptions import FormParserError, ParseError
from python_multipart.multipart import MultipartParser, parse_options_header

__all__ = ["FormFile", "FormParts", "MultipartError", "parse_form"]

# A text field (a zone, a reason code, a number) is short; anything past this is not one of ours.
MAX_FIELD_BYTES = 64 * 1024
MAX_HEADER_BYTES = 8 * 1024

# RFC 2046 caps a boundary at 70 characters and browsers send about 40; python-multipart's parser
# refuses one over 256 (its MAX_BOUNDARY_LENGTH, raised from the constructor; older releases had
# no limit). Checked here first, so the client hears why whichever release is installed.
MAX_BOUNDARY_LENGTH = 256
# python-multipart's own per-part header limits (named in our messages; older releases had none).
_MAX_PART_HEADERS: int = getattr(python_multipart.multipart, "DEFAULT_MAX_HEADER_COUNT", 8)
_MAX_PART_HEADER_LINE: int = getattr(python_multipart.multipart, "DEFAULT_MAX_HEADER_SIZE", 4224)


class MultipartError(ValueError):
    """The body is not a well-formed form within the limits; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class FormFile:
    filename: str
    content_type: str | None
    content: bytes


@dataclass(slots=True)
class FormParts:
    fields: dict[str, list[str]] = field(default_factory=dict)
    files: dict[str, list[FormFile]] = field(default_factory=dict)

    def get(self, name: str) -> str | None:
        values = self.fields.get(name)
        return values[0] if values else None

    def getlist(self, name: str) -> list[str]:
        return list(self.fields.get(name, ()))

    def file(self, name: str) -> FormFile | None:
        files = self.files.get(name)
        return files[0] if files else None


@dataclass(slots=True)
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0


def parse_form(body: bytes, content_type: str, *, max_files: int, max_fields: int) -> FormParts:
    """The fields and files of ``body``; raises :class:`MultipartError` on bad framing or limits.

    Text is decoded as the ``charset`` parameter says (UTF-8 if absent), undecodable bytes
    replaced, as browsers send names and values.
    """
    try:
        _, params = parse_options_header(content_type)
    except UnicodeError as exc:  # only an ASGI caller can pass one: HTTP headers are bytes
        raise MultipartError("the Content-Type header holds characters outside Latin-1") from exc
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultipartError(
            "the Content-Type has no multipart boundary: send "
            '"multipart/form-data; boundary=..." naming the line that separates the parts'
        )
    if len(boundary) > MAX_BOUNDARY_LENGTH:
        raise MultipartError(
            f"the multipart boundary is {len(boundary)} characters long; at most "
            f"{MAX_BOUNDARY_LENGTH} are accepted (RFC 2046 allows 70, browsers send about 40)"
        )
    if not body:
        raise MultipartError("the body is empty: send the form's parts, each after a boundary line")
    charset = _charset(params.get(b"charset"))
    form = FormParts()
    counts = {"files": 0, "fields": 0, "ended": 0}
    part = _Part()
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal part
        part = _Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])
        _check_header(header_name)

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])
        _check_header(header_value)

    def on_header_end() -> None:
        part.headers[bytes(header_name).lower()] = bytes(header_value)
        header_name.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, options = parse_options_header(part.headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise MultipartError('a part has no Content-Disposition "name"')
        part.name = options[b"name"].decode(charset, "replace")
        if b"filename" in options:
            counts["files"] += 1
            if counts["files"] > max_files:
                raise MultipartError(f"it has more than {max_files} file(s)")
            part.filename = options[b"filename"].decode(charset, "replace")
        else:
            counts["fields"] += 1
            if counts["fields"] > max_fields:
                raise MultipartError(f"it has more than {max_fields} fields")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part.size += end - start
        if part.filename is None and part.size > MAX_FIELD_BYTES:
            raise MultipartError(f"the field {part.name[:60]!r} is longer than a form field can be")
        part.chunks.append(data[start:end])

    def on_part_end() -> None:
        # One chunk when the body came in one piece: join hands it back without a copy.
        content = b"".join(part.chunks)
        if part.filename is None:
            form.fields.setdefault(part.name, []).append(content.decode(charset, "replace"))
            return
        declared = part.headers.get(b"content-type")
        form.files.setdefault(part.name, []).append(
            FormFile(
                filename=part.filename,
                content_type=declared.decode("latin-1").strip() if declared else None,
                content=content,
            )
        )

    def on_end() -> None:
        counts["ended"] = 1

    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": on_part_begin,
                "on_header_field": on_header_field,
                "on_header_value": on_header_value,
                "on_header_end": on_header_end,
                "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data,
                "on_part_end": on_part_end,
                "on_end": on_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except FormParserError as exc:  # every error python-multipart raises (ours are not one)
        raise MultipartError(_explain(exc, boundary)) from exc
    if not counts["ended"]:
        # python-multipart does not check this itself: a cut-off upload must not pass as whole.
        raise MultipartError(
            f"the body ends before the form's closing boundary (--{_shown(boundary)}--): "
            "it was cut off on the way, or the client did not send all of it"
        )
    return form


# python-multipart's messages (by their opening words), as what is wrong with the body. Each
# error it raises while parsing is one of these; the offset it carries is a byte of our body.
_PARSE_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), message)
    for pattern, message in (
        (
            r"Expected boundary character",
            "the body does not begin with the boundary its Content-Type names "
            "(--{boundary}): the body and its Content-Type header do not belong together",
        ),
        (
            r"Did not find (CR|LF) at end of boundary",
            "a boundary line must end with CRLF (--{boundary} then CR LF)",
        ),
        (
            r"Did not find CRLF after boundary padding",
            "a boundary line has more after it than spaces: write --{boundary} then CRLF "
            "between parts, and --{boundary}-- after the last",
        ),
        (
            r"Did not find - at end of boundary",
            "the closing boundary must end with two hyphens (--{boundary}--)",
        ),
        (
            r"Found invalid character",
            "a part's header has a character a header name cannot hold (each header line is "
            '"Name: value" ending in CRLF, e.g. Content-Disposition: form-data; name="file")',
        ),
        (r"Found 0-length header", "a part has a header line with no name before its colon"),
        (
            r"Did not find LF character at end of header",
            "a part's header line ends in CR without LF: header lines end with CRLF",
        ),
        (
            r"Did not find LF at end of headers",
            "a part's headers must end with an empty line (CRLF CRLF) before its content",
        ),
        (
            r"Maximum header count exceeded",
            f"a part has more than {_MAX_PART_HEADERS} header lines (a form part needs "
            "Content-Disposition, and a file Content-Type)",
        ),
        (
            r"Maximum header size exceeded",
            f"a part's header line is longer than {_MAX_PART_HEADER_LINE} bytes",
        ),
        (
            r"Boundary length",
            f"the multipart boundary is longer than {MAX_BOUNDARY_LENGTH} characters",
        ),
    )
)


def _explain(exc: FormParserError, boundary: bytes) -> str:
    """What a python-multipart error says is wrong with the body, as a person can act on it."""
    detail = str(exc)
    for pattern, message in _PARSE_ERRORS:
        if pattern.match(detail):
            explained = message.format(boundary=_shown(boundary))
            break
    else:  # a message this release does not have yet: still say where, and what it said
        explained = f"its multipart framing is broken ({detail[:200]})"
    offset = exc.offset if isinstance(exc, ParseError) else -1
    return f"{explained} (at byte {offset})" if offset >= 0 else explained


def _shown(boundary: bytes) -> str:
    # A boundary is echoed back to the sender: as it came, but short (it is at most 256 here).
    text = boundary.decode("latin-1")
    return text if len(text) <= 70 else text[:70] + "..."


def _check_header(value: bytearray) -> None:
    if len(value) > MAX_HEADER_BYTES:
        raise MultipartError("a part's header is too long")


def _charset(value: bytes | None) -> str:
    if not value:
        return "utf-8"
    try:
        return codecs.lookup(value.decode("latin-1")).name
    except LookupError:
        return "utf-8"
