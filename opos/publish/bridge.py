"""The OONI Run bridge's files in a site, written with the feed and the head when the bridge is on.

<out>/v1/oonirun/link.json        the link for the served feed (`GET /api/v2/oonirun/links/{id}`), so that a
                                  static mirror serves the untargeted link too
<out>/v1/oonirun/sequences.json   {"<sequence>": "<commit>"} for each pinned feed kept: the revisions the
                                  service answers engine descriptors for
<out>/v1/oonirun/bridged/<commit>.json   what of that feed crosses the bridge (commit, sequence, time and
                                  the instructions): an older revision is answered from this small file,
                                  never by parsing its whole feed again on request
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from opos.atomic import write_atomically
from opos.errors import EnvelopeInvalid
from opos.instructions import oonirun
from opos.instructions.oonirun import Bridge, LinkSettings
from opos.lru import Serialised
from opos.model import CommitHash, Instruction, format_time, parse_time
from opos.signing.documents import Feed, FeedEntry, read_own_feed

LINK = "v1/oonirun/link.json"
SEQUENCES = "v1/oonirun/sequences.json"


def write_link(
    out: Path, settings: LinkSettings, bridged: Bridged, expires: dt.datetime, now: dt.datetime
) -> dt.datetime | None:
    """Write the link for a feed (its head expiring at `expires`); when it must be written again (a window)."""
    document, changes = oonirun.link(settings, bridged.bridge, bridged.sequence, bridged.committed, expires, now)
    write_atomically(out / LINK, oonirun.to_bytes(document))
    return changes


def sequences(out: Path) -> dict[int, CommitHash]:
    """Which commit each kept feed's sequence is (our own file; empty when there is none)."""
    try:
        return parse_sequences((out / SEQUENCES).read_bytes())
    except OSError:
        return {}


def parse_sequences(data: bytes) -> dict[int, CommitHash]:
    """The sequences file's contents; empty for what is not one."""
    try:
        return {int(sequence): CommitHash(str(commit)) for sequence, commit in json.loads(data).items()}
    except (ValueError, TypeError, AttributeError):
        return {}


@dataclass(frozen=True)
class Bridged:
    """What of one feed crosses the bridge: enough to answer for its revision."""

    commit: CommitHash
    sequence: int
    committed: dt.datetime
    bridge: Bridge


def bridged_of(feed: Feed) -> Bridged:
    return Bridged(feed.commit, feed.sequence, feed.committed, Bridge(entry.instruction for entry in feed.entries))


def bridged_path(commit: str) -> str:
    return f"v1/oonirun/bridged/{commit}.json"


def load_bridged(out: Path, commit: str) -> Bridged | None:
    """What of the kept feed of `commit` crosses: from its bridged file, or (kept before the bridge was on) its
    feed; None when neither can be read."""
    try:
        found = read_bridged((out / bridged_path(commit)).read_bytes())
    except OSError:
        found = None
    if found is not None:
        return found
    try:
        return bridged_of(read_own_feed((out / "v1" / "feed" / f"{commit}.json").read_bytes()))
    except (OSError, EnvelopeInvalid):
        return None


def record(out: Path, feed: Feed) -> None:
    """Keep what of `feed` crosses the bridge, and its sequence among the revisions."""
    write_atomically(out / bridged_path(feed.commit), bridged_json(feed))
    known = sequences(out)
    if known.get(feed.sequence) != feed.commit:
        known[feed.sequence] = feed.commit
        _write_sequences(out, known)


def bridged_json(feed: Feed) -> bytes:
    """`json.dumps` of the bridged document (ensure_ascii off), byte for byte, each instruction's part made once
    per process: a sync writes it for every new commit, and nearly all its instructions are the last one's."""
    _crossing.trim(len(feed.entries))
    parts = [_crossing.get(id(entry.instruction), entry.instruction, functools.partial(_crossing_json, entry))
             for entry in feed.entries]  # fmt: skip
    document = {"commit": feed.commit, "sequence": feed.sequence, "committed": format_time(feed.committed)}
    text = json.dumps(document, ensure_ascii=False)[:-1] + ', "instructions": [' + ", ".join(p for p in parts if p)
    return (text + "]}").encode()


def _crossing_json(entry: FeedEntry) -> str:
    """The instruction's JSON when it crosses the bridge, else nothing."""
    crosses = oonirun.not_bridged(entry.instruction) is None
    return json.dumps(entry.instruction.to_json(), ensure_ascii=False) if crosses else ""


_crossing: Serialised[int, str] = Serialised()  # by the instruction's identity


def read_bridged(data: bytes) -> Bridged | None:
    """A bridged file (our own); None for what is not one."""
    try:
        document = json.loads(data)
        instructions = [Instruction.from_json(value) for value in document["instructions"]]
        committed = parse_time(document["committed"])
        return Bridged(CommitHash(str(document["commit"])), int(document["sequence"]), committed, Bridge(instructions))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def forget(out: Path, commits: Iterable[str]) -> None:
    """Pruned feeds are no revisions any more."""
    gone = set(commits)
    for commit in gone:
        (out / bridged_path(commit)).unlink(missing_ok=True)
    known = sequences(out)
    kept = {sequence: commit for sequence, commit in known.items() if commit not in gone}
    if kept != known:
        _write_sequences(out, kept)


def _write_sequences(out: Path, known: dict[int, CommitHash]) -> None:
    ordered = {str(sequence): known[sequence] for sequence in sorted(known)}
    write_atomically(out / SEQUENCES, json.dumps(ordered, indent=0).encode())
