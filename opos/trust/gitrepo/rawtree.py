"""A git tree read from its raw bytes where its entries start: what changed between two versions of a large
tree, and one entry of it, without parsing its thousand entries.

A step of a long history changes one or two of the 1,000 entries of `instructions/`; parsing both
trees whole and comparing them cost about 0.6 ms a step, most of a new instance's event log. Two
versions share all but a few bytes: past their common prefix and before their common suffix, only
the entries in between are parsed. Where the entries start is known exactly: the first tree is
scanned once, each next one's starts follow from its parent's and the few entries parsed. What is
not as expected (a malformed tree, a region that does not parse) gives None, and the caller parses
the trees whole, as before.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from dulwich.errors import ObjectFormatException
from dulwich.objects import parse_tree

_SHA_BYTES = 20
_TRIES = 8  # candidate ends of the changed region before giving up (a tree built to make this slow)


@dataclass(frozen=True)
class RawTree:
    raw: bytes
    starts: list[int]  # where each entry starts, then len(raw)

    @classmethod
    def scan(cls, raw: bytes) -> RawTree | None:
        """Every entry's start, found as git's parser finds them (the first space, then the first NUL)."""
        starts = _starts(raw, 0, len(raw))
        return None if starts is None else cls(raw, [*starts, len(raw)])

    def entry(self, name: bytes) -> tuple[int, str] | None:
        """(mode, hex id) of the entry called `name`, the last one if there are two (as a parsed dict keeps)."""
        raw, needle = self.raw, b" " + name + b"\0"
        found = raw.rfind(needle)
        while found >= 0:
            start = self.starts[bisect.bisect_right(self.starts, found) - 1]
            if raw.find(b" ", start) == found:  # right after the mode: a name, not the inside of another one
                sha = raw[found + len(needle) : found + len(needle) + _SHA_BYTES]
                return int(raw[start:found], 8), sha.hex()  # octal digits: scanned so
            found = raw.rfind(needle, 0, found)
        return None

    def changed(self, new_raw: bytes) -> tuple[set[bytes], RawTree] | None:
        """Names whose entries differ (added, removed, or another mode or id) in `new_raw`, and its layout."""
        old, starts = self.raw, self.starts
        prefix = _common_prefix(old, new_raw)
        begin = starts[bisect.bisect_right(starts, prefix) - 1]  # an entry start of both: they agree up to it
        suffix = _common_suffix(old, new_raw, min(len(old), len(new_raw)) - begin)
        shift = len(new_raw) - len(old)
        candidate = bisect.bisect_left(starts, len(old) - suffix)
        for end in starts[candidate : candidate + _TRIES]:
            if end < begin or end + shift < begin:
                continue
            middle_starts = _starts(new_raw, begin, end + shift)
            if middle_starts is None:
                continue
            try:
                before = list(parse_tree(old[begin:end], _SHA_BYTES))
                after = list(parse_tree(new_raw[begin : end + shift], _SHA_BYTES))
            except (ObjectFormatException, ValueError, TypeError):
                return None
            names = {name for name, _, _ in set(before) ^ set(after)}
            if _repeated(before) or _repeated(after):  # a name twice (a damaged tree): the last one counts
                names.update(name for name, _, _ in (*before, *after))
            # from `end` on, the new tree is the old one's bytes: its entries start where the old ones did, shifted
            rest = (start + shift for start in starts[bisect.bisect_left(starts, end) :])
            return names, RawTree(new_raw, [*starts[: bisect.bisect_left(starts, begin)], *middle_starts, *rest])
        return None


def _repeated(entries: list[tuple[bytes, int, bytes]]) -> bool:
    return len({name for name, _, _ in entries}) < len(entries)


def _starts(raw: bytes, begin: int, end: int) -> list[int] | None:
    """The starts of the entries that fill raw[begin:end] exactly, or None when they do not."""
    starts, position = [], begin
    while position < end:
        space = raw.find(b" ", position, end)
        nul = raw.find(b"\0", space, end) if space > position else -1
        # octal digits only, so that git's parser (strtol) stops where this one does
        if nul < 0 or nul + 1 + _SHA_BYTES > end or raw[position:space].strip(b"01234567"):
            return None
        starts.append(position)
        position = nul + 1 + _SHA_BYTES
    return starts


def _common_prefix(one: bytes, other: bytes) -> int:
    low, high = 0, min(len(one), len(other))
    while low < high:  # bytes comparisons are memcmp: a binary search is a few dozen of them
        middle = (low + high + 1) // 2
        if one[:middle] == other[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(one: bytes, other: bytes, most: int) -> int:
    low, high = 0, max(most, 0)
    while low < high:
        middle = (low + high + 1) // 2
        if one[len(one) - middle :] == other[len(other) - middle :]:
            low = middle
        else:
            high = middle - 1
    return low
