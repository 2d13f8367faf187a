"""png.py — decodes an 8-bit RGB/RGBA PNG with zlib (standard library) to check that a
screenshot is not blank: how many colours, and how much of it differs from its background.
"""
import struct
import zlib


def decode(data, max_rows=None):
    """Returns (width, height, channels, rows) with rows a list of bytearrays: the first
    max_rows rows only when given (pure Python is slow: ~5 s for a full laptop screen)."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, ihdr = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    w, h, depth, ctype, _, _, interlace = ihdr
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError("unsupported PNG: depth %d, colour type %d" % (depth, ctype))
    ch = 4 if ctype == 6 else 3
    raw = zlib.decompress(idat)
    stride = w * ch
    rows, prev = [], bytearray(stride)
    for y in range(min(h, max_rows or h)):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        if f == 1:
            for i in range(ch, stride):
                line[i] = (line[i] + line[i - ch]) & 255
        elif f == 2:
            for i in range(stride):
                line[i] = (line[i] + prev[i]) & 255
        elif f == 3:
            for i in range(stride):
                left = line[i - ch] if i >= ch else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 255
        elif f == 4:
            for i in range(stride):
                a = line[i - ch] if i >= ch else 0
                b = prev[i]
                c = prev[i - ch] if i >= ch else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        rows.append(line)
        prev = line
    return w, h, ch, rows


def variety(data, max_rows=None):
    """(distinct colours, fraction of pixels unlike the most common one) over the first
    max_rows rows (all by default)."""
    w, h, ch, rows = decode(data, max_rows)
    counts = {}
    for line in rows:
        for i in range(0, w * ch, ch):
            px = bytes(line[i:i + 3])
            counts[px] = counts.get(px, 0) + 1
    top = max(counts.values())
    return len(counts), 1.0 - top / float(w * len(rows))
