"""Frame decoding: formats and sizes from headers, bombs refused before decoding."""

from __future__ import annotations

import struct
import zlib

import cv2
import numpy as np
import pytest

from bridge.images import decode, encode_jpeg, sniff
from bridge.protocol import ErrorCode, ProtocolError
from depthstream.contract import MAX_IMAGE_PIXELS, MAX_IMAGE_SIDE
from tests.helpers import photo

MAX_PIXELS = MAX_IMAGE_PIXELS


def encoded(ext: str, image: np.ndarray, *params: int) -> bytes:
    ok, data = cv2.imencode(ext, image, list(params))
    assert ok
    return data.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height: a decompression bomb's calling card."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("ext,fmt", [(".jpg", "jpeg"), (".png", "png"), (".webp", "webp")])
def test_sniff_reads_format_and_size_from_the_header(ext, fmt):
    data = encoded(ext, photo(123, 45))
    assert sniff(data) == (fmt, 123, 45)


def test_lossless_webp_size():
    assert sniff(encoded(".webp", photo(77, 31), cv2.IMWRITE_WEBP_QUALITY, 101)) == ("webp", 77, 31)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_decode_gives_rgb(ext):
    rgb = photo(64, 48)
    out = decode(
        encoded(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.IMWRITE_WEBP_QUALITY, 101), MAX_PIXELS
    )
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    assert np.abs(out.astype(int) - rgb.astype(int)).mean() < 8  # RGB order, not BGR


@pytest.mark.parametrize(
    "image",
    [
        np.full((20, 30), 128, np.uint8),  # grayscale
        np.full((20, 30, 4), 200, np.uint8),  # RGBA
        np.full((20, 30, 3), 40000, np.uint16),  # 16-bit
    ],
)
def test_gray_alpha_and_16_bit_png_are_converted(image):
    out = decode(encoded(".png", image), MAX_PIXELS)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", ErrorCode.UNSUPPORTED_FORMAT),
        (b"hello world", ErrorCode.UNSUPPORTED_FORMAT),
        (b"GIF89a" + b"\x00" * 20, ErrorCode.UNSUPPORTED_FORMAT),
        (b"BM" + b"\x00" * 60, ErrorCode.UNSUPPORTED_FORMAT),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 10, ErrorCode.BAD_IMAGE),  # truncated JPEG
        (b"\x89PNG\r\n\x1a\n", ErrorCode.BAD_IMAGE),
        (b"RIFF\x00\x00\x00\x00WEBPVP8X", ErrorCode.BAD_IMAGE),
    ],
)
def test_garbage_is_refused_with_a_code(data, code):
    with pytest.raises(ProtocolError) as error:
        decode(data, MAX_PIXELS)
    assert error.value.code == code


def test_truncated_jpeg_is_refused():
    data = encoded(".jpg", photo(64, 48))
    with pytest.raises(ProtocolError) as error:
        decode(data[: len(data) // 2], MAX_PIXELS)
    assert error.value.code == ErrorCode.BAD_IMAGE


def test_bomb_is_refused_from_its_header():
    with pytest.raises(ProtocolError) as error:
        decode(png_header_only(20000, 20000), MAX_PIXELS)
    assert error.value.code == ErrorCode.IMAGE_TOO_LARGE and "20000x20000" in error.value.message


@pytest.mark.parametrize("width,height", [(MAX_IMAGE_SIDE + 1, 2), (2, MAX_IMAGE_SIDE + 1), (16384, 1024)])
def test_a_side_beyond_the_contract_is_refused_whatever_the_pixel_count(width, height):
    with pytest.raises(ProtocolError) as error:
        decode(png_header_only(width, height), MAX_PIXELS)
    assert error.value.code == ErrorCode.IMAGE_TOO_LARGE and f"<= {MAX_IMAGE_SIDE}" in error.value.message


def test_the_largest_image_the_contract_accepts_decodes():
    width, height = MAX_IMAGE_SIDE, MAX_IMAGE_PIXELS // MAX_IMAGE_SIDE
    assert decode(encoded(".png", np.zeros((height, width, 3), np.uint8)), MAX_PIXELS).shape == (
        height,
        width,
        3,
    )


@pytest.mark.parametrize("width,height", [(1, 1), (1, 4000)])
def test_degenerate_sizes_are_refused(width, height):
    data = encoded(".png", np.zeros((height, width, 3), np.uint8))
    with pytest.raises(ProtocolError) as error:
        decode(data, MAX_PIXELS)
    assert error.value.code == ErrorCode.IMAGE_TOO_SMALL


def test_header_and_data_must_agree():
    data = bytearray(encoded(".png", np.zeros((10, 10, 3), np.uint8)))
    data[16:24] = struct.pack(">II", 12, 10)  # lie about the width (CRC now wrong too)
    with pytest.raises(ProtocolError) as error:
        decode(bytes(data), MAX_PIXELS)
    assert error.value.code == ErrorCode.BAD_IMAGE


def test_encode_jpeg_round_trips():
    bgr = cv2.cvtColor(photo(64, 48), cv2.COLOR_RGB2BGR)
    assert cv2.imdecode(np.frombuffer(encode_jpeg(bgr, 80), np.uint8), cv2.IMREAD_COLOR).shape == (48, 64, 3)


def test_an_exif_rotated_jpeg_decodes_as_stored():
    """A phone photo with an orientation tag: decoded as stored, at its header's size."""
    from io import BytesIO

    from PIL import Image

    image = Image.fromarray(photo(60, 40))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    buffer = BytesIO()
    image.save(buffer, "JPEG", exif=exif.tobytes())
    assert decode(buffer.getvalue(), MAX_PIXELS).shape == (40, 60, 3)


def test_a_camera_jpeg_decodes_the_fast_way_to_opencvs_very_pixels(monkeypatch):
    """libjpeg-turbo through simplejpeg, not OpenCV, and exactly OpenCV's pixels: a client that
    decodes the JPEG it sent gets the depth the bridge got."""
    for progressive in (0, 1):
        bgr = cv2.cvtColor(photo(640, 480), cv2.COLOR_RGB2BGR)
        data = encoded(".jpg", bgr, cv2.IMWRITE_JPEG_PROGRESSIVE, progressive)
        exact = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
        with monkeypatch.context() as patched:
            patched.setattr(cv2, "imdecode", lambda *args: pytest.fail("OpenCV decoded it"))
            fast = decode(data, MAX_PIXELS)
        assert np.array_equal(fast, exact)


def test_a_jpeg_the_fast_decoder_refuses_is_left_to_opencv():
    """A CMYK JPEG (libjpeg-turbo will not convert it to RGB) still decodes."""
    from io import BytesIO

    from PIL import Image

    buffer = BytesIO()
    Image.fromarray(photo(40, 30)).convert("CMYK").save(buffer, "JPEG")
    assert decode(buffer.getvalue(), MAX_PIXELS).shape == (30, 40, 3)


@pytest.mark.parametrize("found", ["png-chunk-past-the-end", "png-data-after-iend"])
def test_a_png_found_by_fuzzing_is_refused_before_opencv_reads_it(found, monkeypatch):
    """Found by fuzzing (tests/fuzz/crashes/image/): PNGs of a few hundred bytes whose chunks did
    not add up made OpenCV's PNG reader allocate 3.4-3.8 GB and spend 3-10 s before refusing them."""
    from pathlib import Path

    data = (Path(__file__).parent / "fuzz" / "crashes" / "image" / found).read_bytes()
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("OpenCV was handed the PNG"))
    with pytest.raises(ProtocolError) as error:
        decode(data, MAX_PIXELS)
    assert error.value.code == ErrorCode.BAD_IMAGE and "corrupt PNG" in error.value.message


def chunk(kind: bytes, body: bytes = b"", crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + body) if crc is None else crc
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (
            lambda head, rest, end: head + struct.pack(">I", 1000) + chunk(b"IDAT", b"x")[4:] + end,
            "past the end",
        ),
        (lambda head, rest, end: head + chunk(b"tEXt", b"a", crc=1) + rest + end, "CRC is wrong"),
        (lambda head, rest, end: head + chunk(b"t3Xt", b"a") + rest + end, "not four letters"),
        (lambda head, rest, end: head + end + rest + end, "IEND before"),
        (lambda head, rest, end: head + rest + end + b"\x00" * 12 + end, "IEND before"),
        (lambda head, rest, end: head + chunk(b"tEXt") * 10_001 + rest + end, "more than 10000 chunks"),
    ],
    ids=["overrun", "crc", "name", "iend-first", "after-iend", "too-many"],
)
def test_a_png_whose_chunks_do_not_add_up_is_refused(damage, said, monkeypatch):
    good = encoded(".png", photo(8, 6))
    head, rest, end = good[:33], good[33:-12], good[-12:]  # signature + IHDR, IDAT..., IEND
    assert decode(good, MAX_PIXELS).shape == (6, 8, 3)
    monkeypatch.setattr(cv2, "imdecode", lambda *args: pytest.fail("OpenCV was handed the PNG"))
    with pytest.raises(ProtocolError) as error:
        decode(damage(head, rest, end), MAX_PIXELS)
    assert said in error.value.message


def test_a_bomb_is_told_it_is_too_large_before_its_chunks_are_read():
    """The size from the header first (the more useful error), the chunk walk after: a header
    alone (IHDR and IEND, no image data) claiming 20000x20000 is too large, not corrupt."""
    from tests.helpers import png_header

    with pytest.raises(ProtocolError) as error:
        decode(png_header(20000, 20000), MAX_PIXELS)
    assert error.value.code == ErrorCode.IMAGE_TOO_LARGE
