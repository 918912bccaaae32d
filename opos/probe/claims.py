"""Claiming: before a capped instruction ("at most N probes") runs, the service must grant this probe a slot.

A refusal is remembered for `claim_retry`, a grant for the instruction's revision; services are
tried in a random order, so that one blocked or hostile claims service cannot hold the probe back.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Sequence

from opos.errors import FetchFailed
from opos.model import parse_time
from opos.probe import plan
from opos.probe.state import ProbeState
from opos.signing.documents import FeedEntry
from opos.transport import Fetcher, Mirror


def claim_each(
    entries: Sequence[FeedEntry], services: Sequence[Mirror], retry: dt.timedelta, fetcher: Fetcher,
    state: ProbeState, probe: plan.Probe, now: dt.datetime, rng: random.Random, rejected: list[plan.RejectedSource],
) -> dict[str, plan.Claim]:  # fmt: skip
    """granted, refused or unavailable, for each capped instruction: it runs only with a granted claim."""
    return {entry.id: _claim(entry, services, retry, fetcher, state, probe, now, rng, rejected) for entry in entries}


def _claim(
    entry: FeedEntry, services: Sequence[Mirror], retry: dt.timedelta, fetcher: Fetcher, state: ProbeState,
    probe: plan.Probe, now: dt.datetime, rng: random.Random, rejected: list[plan.RejectedSource],
) -> plan.Claim:  # fmt: skip
    remembered = _remembered(state, entry, now, retry)
    if remembered is not None:
        return remembered
    document = {"instruction": entry.id, "probe_id": probe.probe_id, "country": probe.country,
                "network": probe.network, "platform": probe.platform}  # fmt: skip
    shuffled = list(services)
    rng.shuffle(shuffled)
    for service in shuffled:
        try:
            granted = _granted(fetcher.post(service, "v1/claims", document).body)
        except FetchFailed as err:
            rejected.append(plan.RejectedSource(service.url, f"claims: {err}"))
            continue
        except Exception as err:  # whatever a claims service sends, the probe goes on
            rejected.append(plan.RejectedSource(service.url, f"claims: the answer could not be handled ({err})"))
            continue
        state.save_claim(entry.id, entry.revision, granted, now)
        return "granted" if granted else "refused"
    return "unavailable"


def _remembered(state: ProbeState, entry: FeedEntry, now: dt.datetime, retry: dt.timedelta) -> plan.Claim | None:
    """A grant of this revision, or a refusal newer than `retry`; else None (ask)."""
    cached = state.claims().get(entry.id)
    if not cached or cached.get("revision") != entry.revision:
        return None
    if cached.get("granted"):
        return "granted"
    try:
        return "refused" if now - parse_time(str(cached.get("at"))) < retry else None
    except ValueError:
        return None


def _granted(body: bytes) -> bool:
    """The `granted` of a claims answer. Raises ValueError for anything else."""
    try:
        answer = json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("granted"), bool):
        raise ValueError("not a claims answer: expected an object with a boolean `granted`")
    return bool(answer["granted"])
