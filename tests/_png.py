"""A minimal PNG reader for tests (8-bit grey/RGB/RGBA, non-interlaced: what Chromium and matplotlib write), so
pixel checks need no imaging library."""

from __future__ import annotations

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_png(data: bytes) -> tuple[int, int, int, list[bytearray]]:
    """(width, height, channels, rows of raw bytes). Raises ValueError on anything that is not a valid PNG."""
    if not data.startswith(SIGNATURE):
        raise ValueError("not a PNG signature")
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r} chunk")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    if header is None:
        raise ValueError("no IHDR")
    width, height, depth, ctype, _, _, interlace = header
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytearray] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(line)
        prev = line
    return width, height, channels, rows


def pixel(rows: list[bytearray], channels: int, x: int, y: int) -> tuple[int, ...]:
    return tuple(rows[y][x * channels : x * channels + min(channels, 3)])


def count_non_background(
    rows: list[bytearray],
    channels: int,
    box: tuple[int, int, int, int],
    bg: tuple[int, ...] = (255, 255, 255),
) -> tuple[int, set[tuple[int, ...]]]:
    """Pixels in box (x0, y0, x1, y1) that differ from the background, and the set of colours seen there."""
    x0, y0, x1, y1 = box
    n, colours = 0, set()
    for y in range(y0, y1):
        for x in range(x0, x1):
            px = pixel(rows, channels, x, y)
            if channels < 3:
                px = (px[0],) * 3
            if px != bg:
                n += 1
                colours.add(px)
    return n, colours
