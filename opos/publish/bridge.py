"""The OONI Run bridge's files in a site, written with the feed and the head when the bridge is on.

<out>/v1/oonirun/link.json        the link for the served feed (`GET /api/v2/oonirun/links/{id}`), so that a
                                  static mirror serves the untargeted link too
<out>/v1/oonirun/sequences.json   {"<sequence>": "<commit>"} for each pinned feed kept: the revisions the
                                  service answers engine descriptors for
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path

from opos.atomic import write_atomically
from opos.instructions import oonirun
from opos.instructions.oonirun import Bridge, LinkSettings
from opos.model import CommitHash
from opos.signing.documents import Feed

LINK = "v1/oonirun/link.json"
SEQUENCES = "v1/oonirun/sequences.json"


def bridge_of(feed: Feed) -> Bridge:
    return Bridge(entry.instruction for entry in feed.entries)


def write_link(
    out: Path, settings: LinkSettings, feed: Feed, expires: dt.datetime, now: dt.datetime
) -> dt.datetime | None:
    """Write the link for `feed` (its head expiring at `expires`); when it must be written again (a window)."""
    document, changes = oonirun.link(settings, bridge_of(feed), feed.sequence, feed.committed, expires, now)
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


def record(out: Path, sequence: int, commit: CommitHash) -> None:
    known = sequences(out)
    if known.get(sequence) != commit:
        known[sequence] = commit
        _write_sequences(out, known)


def forget(out: Path, commits: Iterable[str]) -> None:
    """Pruned feeds are no revisions any more."""
    gone = set(commits)
    known = sequences(out)
    kept = {sequence: commit for sequence, commit in known.items() if commit not in gone}
    if kept != known:
        _write_sequences(out, kept)


def _write_sequences(out: Path, known: dict[int, CommitHash]) -> None:
    ordered = {str(sequence): known[sequence] for sequence in sorted(known)}
    write_atomically(out / SEQUENCES, json.dumps(ordered, indent=0).encode())
