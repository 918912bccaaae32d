"""The size of a git object, read from its header: never more than a few hundred bytes of it.

A loose object is zlib("<type> <size>\\0<content>"). A packed one starts with a varint holding its
type and, for whole objects, its size; a delta's header holds the delta's size instead, and the
object's size is the second varint of the delta's data (after the base's size).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

OFS_DELTA, REF_DELTA = 6, 7
_HEAD = 64  # compressed bytes read to learn a size: headers are tiny


def loose_size(path: Path) -> int:
    """The size of the loose object in `path`. Raises OSError, ValueError."""
    with path.open("rb") as handle:
        start = zlib.decompressobj().decompress(handle.read(_HEAD), 64)
    header, zero, _ = start.partition(b"\0")
    if not zero:
        raise ValueError("not a loose git object")
    return int(header.split(b" ", 1)[1])


def _varint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def packed_size(fd: int, offset: int) -> int:
    """The size of the object at `offset` of an open pack file (positioned reads: threads may share `fd`).

    Raises ValueError.
    """
    data = os.pread(fd, _HEAD, offset)
    first = data[0]
    kind, size, shift, position = (first >> 4) & 0x07, first & 0x0F, 4, 1
    byte = first
    while byte & 0x80:
        byte = data[position]
        size |= (byte & 0x7F) << shift
        shift += 7
        position += 1
    if kind not in (OFS_DELTA, REF_DELTA):
        return size
    if kind == OFS_DELTA:
        while data[position] & 0x80:
            position += 1
        position += 1
    else:
        position += 20
    delta = zlib.decompressobj().decompress(os.pread(fd, _HEAD, offset + position), 32)
    _, after_base = _varint(delta, 0)
    target, _ = _varint(delta, after_base)
    return target
