"""Reading what changed between two versions of a tree from their bytes (rawtree) says what parsing them whole says.

Random trees and random edits, hostile names included (spaces, NUL-free bytes that look like modes,
duplicates, non-UTF-8), against dulwich's parser; then a real history through GitLedger.
"""

from __future__ import annotations

import hashlib
import random

from dulwich.objects import parse_tree
from hypothesis import given, settings
from hypothesis import strategies as st

from opos.trust.gitrepo.rawtree import RawTree

MODES = (b"100644", b"100755", b"40000", b"120000", b"160000")
NAMES = st.binary(min_size=1, max_size=12).filter(lambda n: b"\0" not in n and b"/" not in n) | st.sampled_from(
    [b"a.yaml", b"b.yaml", b"x 100644 a.yaml", b" a.yaml", b"a.yaml ", b"100644", b"\xff\xfe.yaml"]
)
Entry = tuple[bytes, bytes, bytes]  # mode, name, binary id
ENTRIES = st.lists(st.tuples(st.sampled_from(MODES), NAMES, st.binary(min_size=20, max_size=20)), max_size=30)


def raw(entries: list[Entry]) -> bytes:
    return b"".join(mode + b" " + name + b"\0" + sha for mode, name, sha in entries)


def parsed(data: bytes) -> dict[bytes, tuple[int, str]]:
    return {name: (mode, sha.decode()) for name, mode, sha in parse_tree(data, 20)}


def edit(entries: list[Entry], rng: random.Random) -> list[Entry]:
    edited = list(entries)
    for _ in range(rng.randint(1, 3)):
        what = rng.random()
        if edited and what < 0.3:
            del edited[rng.randrange(len(edited))]
        elif edited and what < 0.7:
            at = rng.randrange(len(edited))
            mode, name, _ = edited[at]
            edited[at] = (rng.choice((mode, b"100755")), name, hashlib.sha1(rng.randbytes(8)).digest())
        else:
            name = bytes(rng.choice(b"ab .y\xff1") for _ in range(rng.randint(1, 6)))
            edited.insert(rng.randint(0, len(edited)), (rng.choice(MODES), name, rng.randbytes(20)))
    return edited


@settings(max_examples=400, deadline=None)
@given(ENTRIES, st.integers(0, 2**32), st.integers(1, 6))
def test_what_changed_and_each_entry_are_what_the_parsed_trees_say(entries: list[Entry], seed: int, steps: int) -> None:
    rng = random.Random(seed)
    layout = RawTree.scan(raw(entries))
    assert layout is not None and layout == RawTree.scan(layout.raw)
    for _ in range(steps):
        newer = edit(entries, rng)
        found = layout.changed(raw(newer))
        before, after = parsed(raw(entries)), parsed(raw(newer))
        expected = {name for name, _ in before.items() ^ after.items()}
        assert found is not None
        names, next_layout = found
        assert next_layout == RawTree.scan(raw(newer))  # the starts carried over are where a scan finds them
        # every change is seen; with a name twice (a damaged tree) an unchanged-looking one may be named too
        assert expected <= names
        if len({name for _, name, _ in newer}) == len(newer) and len({n for _, n, _ in entries}) == len(entries):
            assert names == expected
        for name in {name for _, name, _ in newer} | {b"absent", b"a.yaml"}:
            assert next_layout.entry(name) == after.get(name)
        entries, layout = newer, next_layout


def test_a_tree_git_would_not_parse_is_left_to_the_whole_parse() -> None:
    good = raw([(b"100644", b"a.yaml", b"\1" * 20)])
    assert RawTree.scan(good + b"100644 b.yaml\0short") is None  # a truncated id
    assert RawTree.scan(b" 100644 a.yaml\0" + b"\1" * 20) is None  # strtol would skip the space: not ours to guess
    assert RawTree.scan(b"1008 a.yaml\0" + b"\1" * 20) is None  # not octal
    layout = RawTree.scan(good)
    assert layout is not None and layout.changed(good + b"garbage") is None
