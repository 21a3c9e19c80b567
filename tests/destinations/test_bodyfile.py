"""An object's body read as a file over its parts (what S3 uploads are sent from)."""

from __future__ import annotations

import io

import pytest

from firehose.destinations.bodyfile import BodyFile, body_pieces

PARTS = (b"abc", memoryview(b"defgh"), b"", memoryview(bytearray(b"ij")))


def test_reads_the_parts_back_to_back_from_anywhere() -> None:
    body = BodyFile(PARTS)
    assert body.read() == b"abcdefghij" and body.read(5) == b""
    body.seek(0)
    assert body.read(4) == b"abcd" and body.read(2) == b"ef" and body.tell() == 6
    assert body.seek(-3, io.SEEK_END) == 7 and body.read(100) == b"hij"
    body.seek(2)
    into = bytearray(5)
    assert body.readinto(into) == 5 and into == b"cdefg" and body.tell() == 7
    with pytest.raises(ValueError):
        body.seek(-1)


def test_a_closed_body_lets_go_of_its_parts() -> None:
    part = bytearray(b"spooled")
    with BodyFile([memoryview(part)]) as body:
        assert body.read(3) == b"spo"
    part.extend(b"!")  # resizing fails while any view of it is alive
    with pytest.raises(ValueError):
        body.read()


@pytest.mark.parametrize(("size", "pieces"), [(4, [b"abcd", b"efgh", b"ij"]), (5, [b"abcde", b"fghij"]),
                                              (100, [b"abcdefghij"])])
def test_pieces_cut_the_body_in_order(size: int, pieces: list[bytes]) -> None:
    assert [p.read() for p in body_pieces(PARTS, size)] == pieces


def test_an_empty_body_is_one_empty_piece() -> None:
    assert [p.read() for p in body_pieces([], 4)] == [b""]
    assert BodyFile([]).read() == b""
