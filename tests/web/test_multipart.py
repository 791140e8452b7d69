"""Reading an in-memory multipart/form-data body: what browsers send, and what they must not."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from certwidget.web.multipart import (
    MAX_BOUNDARY_LENGTH,
    MAX_FIELD_BYTES,
    MultipartError,
    parse_form,
)
from tests.support.files import pdf
from tests.support.shop import build


def encoded(data: dict[str, object], files: dict[str, tuple[str, bytes, str]]) -> tuple[str, bytes]:
    request = httpx.Request("POST", "http://shop.test/", data=data, files=files)
    return request.headers["content-type"], request.read()


def test_fields_repeated_fields_and_one_file_come_back_as_sent() -> None:
    document = b"%PDF-1.7\n" + bytes(range(256)) * 800 + b"\r\n--not-the-boundary\r\n%%EOF"
    content_type, body = encoded(
        {"zones": ["WA", "TX"], "reason": "G", "exemptionNumber": "603123456"},
        {"file": ("resale certificate.pdf", document, "application/pdf")},
    )
    form = parse_form(body, content_type, max_files=1, max_fields=10)
    assert form.getlist("zones") == ["WA", "TX"]
    assert form.get("reason") == "G"
    assert form.get("missing") is None and form.getlist("missing") == []
    upload = form.file("file")
    assert upload is not None
    assert upload.content == document
    assert upload.filename == "resale certificate.pdf"
    assert upload.content_type == "application/pdf"
    assert form.file("zones") is None


def test_names_and_values_are_utf8_and_bad_bytes_do_not_raise() -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="reason"\r\n\r\n'.encode()
        + "Résumé".encode()
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\n'.encode()
        + b"\xff\xfe"
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = parse_form(body, f"multipart/form-data; boundary={boundary}", max_files=1, max_fields=10)
    assert form.get("reason") == "Résumé"
    assert form.get("note") == "\ufffd\ufffd"


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        ("multipart/form-data", b"--x\r\n", "no multipart boundary"),
        (
            "multipart/form-data; boundary=x",
            b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\nhalf a val',
            "ends before",
        ),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n",
            '"name"',
        ),
        ("multipart/form-data; boundary=x", b"this is not multipart at all", "does not begin"),
    ],
)
def test_broken_framing_is_a_multipart_error_with_a_reason(
    content_type: str, body: bytes, why: str
) -> None:
    with pytest.raises(MultipartError) as raised:
        parse_form(body, content_type, max_files=1, max_fields=10)
    assert why in str(raised.value)
    assert str(raised.value)


def test_limits_on_files_fields_and_field_length() -> None:
    two_files = {
        "file": ("a.pdf", b"%PDF-1.4 a", "application/pdf"),
        "other": ("b.pdf", b"%PDF-1.4 b", "application/pdf"),
    }
    content_type, body = encoded({}, two_files)
    with pytest.raises(MultipartError, match="more than 1 file"):
        parse_form(body, content_type, max_files=1, max_fields=10)
    assert len(parse_form(body, content_type, max_files=2, max_fields=10).files) == 2

    one_file = {"file": ("a.pdf", b"%PDF-1.4 a", "application/pdf")}
    content_type, body = encoded({f"f{n}": "v" for n in range(4)}, one_file)
    with pytest.raises(MultipartError, match="more than 3 fields"):
        parse_form(body, content_type, max_files=1, max_fields=3)

    content_type, body = encoded({"reason": "x" * (MAX_FIELD_BYTES + 1)}, one_file)
    with pytest.raises(MultipartError, match="longer than a form field"):
        parse_form(body, content_type, max_files=1, max_fields=3)


def test_an_endless_part_header_is_refused() -> None:
    body = b'--x\r\nContent-Disposition: form-data; name="a"; junk="' + b"j" * 20_000
    with pytest.raises(MultipartError, match=r"[Hh]eader"):
        parse_form(body, "multipart/form-data; boundary=x", max_files=1, max_fields=3)


def test_a_file_of_one_repeated_byte_is_read_whole() -> None:
    # A long run of "x" with a boundary full of "8" is bytes.find's slowest case (0x78 and 0x38
    # share a slot in its skip filter): slow, but the file must still come back whole.
    boundary = "8888aaaa8888bbbb8888cccc8888dddd"
    document = b"%PDF-1.4\n" + b"x" * 300_000 + b"\n%%EOF"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="reason"\r\n\r\nG\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.pdf"\r\n'
            "Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + document
        + f"\r\n--{boundary}--\r\n".encode()
    )
    form = parse_form(body, f"multipart/form-data; boundary={boundary}", max_files=1, max_fields=10)
    assert form.get("reason") == "G"
    upload = form.file("file")
    assert upload is not None and upload.content == document


PART = b'Content-Disposition: form-data; name="reason"\r\n\r\nG\r\n'


@pytest.mark.parametrize(
    ("content_type", "body", "why"),
    [
        # The boundary: missing, empty, or longer than python-multipart takes (its constructor
        # raised, outside the parse's error handling: a 500 with a traceback).
        ("multipart/form-data", b"--x\r\n" + PART + b"--x--\r\n", "no multipart boundary"),
        ('multipart/form-data; boundary=""', b"--\r\n", "no multipart boundary"),
        (
            "multipart/form-data; boundary=" + "b" * (MAX_BOUNDARY_LENGTH + 1),
            b"--" + b"b" * (MAX_BOUNDARY_LENGTH + 1) + b"\r\n" + PART,
            f"{MAX_BOUNDARY_LENGTH + 1} characters long; at most {MAX_BOUNDARY_LENGTH}",
        ),
        ("multipart/form-data; boundary=x", b"", "the body is empty"),
        # The first line is not the boundary the header names.
        ("multipart/form-data; boundary=x", b"--y\r\n" + PART, "does not begin with the boundary"),
        ("multipart/form-data; boundary=x", b"--x\n" + PART, "must end with CRLF"),
        # Part headers: a bad name, no name, a bare CR, no blank line, too many, too long.
        ("multipart/form-data; boundary=x", b"--x\r\nBad Name: v\r\n\r\nv", "header name"),
        ("multipart/form-data; boundary=x", b"--x\r\n: v\r\n\r\nv", "no name before its colon"),
        ("multipart/form-data; boundary=x", b"--x\r\nA: v\rB: w\r\n\r\n", "CR without LF"),
        ("multipart/form-data; boundary=x", b"--x\r\nA: v\r\n\rv", "empty line (CRLF CRLF)"),
        (
            "multipart/form-data; boundary=x",
            b"--x\r\n" + b"".join(b"H%d: v\r\n" % n for n in range(30)) + b"\r\nv",
            "header lines",
        ),
        ("multipart/form-data; boundary=x", b"--x\r\nA: " + b"v" * 9000, "header line is longer"),
        # Boundaries between and after parts.
        ("multipart/form-data; boundary=x", b"--x\r\n" + PART + b"--x junk\r\n", "more after it"),
        ("multipart/form-data; boundary=x", b"--x\r\n" + PART + b"--x\r\n", "closing boundary"),
        ("multipart/form-data; boundary=x", b"--x\r\n" + PART, "closing boundary (--x--)"),
    ],
)
def test_every_parser_error_is_a_multipart_error_a_person_can_act_on(
    content_type: str, body: bytes, why: str
) -> None:
    with pytest.raises(MultipartError) as raised:
        parse_form(body, content_type, max_files=1, max_fields=10)
    message = str(raised.value)
    assert why in message
    # Not python-multipart's own words ("Expected boundary character 45, got 116 at index 2").
    assert "Expected boundary character" not in message and "Did not find" not in message


def test_a_boundary_of_the_longest_length_allowed_still_reads() -> None:
    boundary = "b" * MAX_BOUNDARY_LENGTH
    body = f"--{boundary}\r\n".encode() + PART + f"--{boundary}--\r\n".encode()
    form = parse_form(body, f"multipart/form-data; boundary={boundary}", max_files=1, max_fields=3)
    assert form.get("reason") == "G"


# -- over HTTP, under uvicorn -----------------------------------------------------------------


@pytest.fixture
def served(
    tmp_path: Path, live_server_factory: Any, caplog: pytest.LogCaptureFixture
) -> Iterator[Any]:
    caplog.set_level(logging.ERROR)
    # log_config=None: uvicorn's records reach the root logger, so caplog sees any traceback.
    server = live_server_factory(build(tmp_path), log_config=None)
    yield server
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


@pytest.mark.parametrize("length", [MAX_BOUNDARY_LENGTH + 1, 300, 4000])
def test_under_uvicorn_an_upload_with_a_too_long_boundary_is_a_400_that_says_so(
    served: Any, length: int
) -> None:
    boundary = "B" * length
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="c.pdf"\r\n'
            f"Content-Type: application/pdf\r\n\r\n"
        ).encode()
        + pdf()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    with httpx.Client(base_url=served.url) as http:
        minted = http.post(
            "/certwidget/ecommerce/token", json={"zones": ["WA"]}, headers={"x-customer": "C-1"}
        )
        assert minted.status_code == 200, minted.text
        response = http.post(
            "/certwidget/certificates",
            content=body,
            headers={
                "Authorization": f"Bearer {minted.json()['token']}",
                "x-customer": "C-1",
                "Idempotency-Key": uuid.uuid4().hex,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed_multipart"
    assert f"boundary is {length} characters long" in error["message"]
    assert f"at most {MAX_BOUNDARY_LENGTH}" in error["message"]
