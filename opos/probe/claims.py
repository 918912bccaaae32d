"""Claiming: before a capped instruction ("at most N probes") runs, the service must grant this probe a slot.

A grant is remembered for the instruction's revision. A refusal (a 200 with `granted: false`, or a
403, 422 or 429 that says why) is remembered with its reason, word for word, for the answer's
Retry-After (between a minute and a day), else for `claim_retry`: a slot revoked by staff is
asked for again soon. Services are tried in a random order, so that one blocked or hostile claims
service cannot hold the probe back.
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
    encoded = json.dumps(document).encode()
    for service in shuffled:
        try:
            reply = fetcher.send(service, "v1/claims", encoded)
            if reply.status not in (200, *REFUSALS):
                raise FetchFailed(f"HTTP {reply.status} for v1/claims")
            granted, reason = _answer(reply.body, reply.status)
        except FetchFailed as err:
            rejected.append(plan.RejectedSource(service.url, f"claims: {err}"))
            continue
        except Exception as err:  # whatever a claims service sends, the probe goes on
            rejected.append(plan.RejectedSource(service.url, f"claims: the answer could not be handled ({err})"))
            continue
        until = now + (_retry_after(reply.retry_after) or retry)
        state.save_claim(entry.id, entry.revision, granted, now, reason, None if granted else until)
        return "granted" if granted else "refused"
    return "unavailable"


def _remembered(state: ProbeState, entry: FeedEntry, now: dt.datetime, retry: dt.timedelta) -> plan.Claim | None:
    """A grant of this revision, or a refusal still within its Retry-After; else None (ask)."""
    cached = state.claims().get(entry.id)
    if not cached or cached.get("revision") != entry.revision:
        return None
    if cached.get("granted"):
        return "granted"
    try:
        until = parse_time(str(cached["until"])) if cached.get("until") else parse_time(str(cached.get("at"))) + retry
    except ValueError:
        return None
    return "refused" if now < until else None


REFUSALS = (403, 422, 429)  # a claims service's refusals that say why (its 503 is no answer: the next one is asked)
_LONGEST_WAIT = dt.timedelta(days=1)
_REASON_CHARACTERS = 300


def _retry_after(value: str | None) -> dt.timedelta | None:
    """A Retry-After in seconds, kept between a minute and a day; None when absent or not a number."""
    if value is None or not value.strip().isdigit():
        return None
    return min(max(dt.timedelta(seconds=int(value.strip())), dt.timedelta(minutes=1)), _LONGEST_WAIT)


def _answer(body: bytes, status: int) -> tuple[bool, str | None]:
    """`granted` and the refusal's reason, from a 200 claims answer or a refusal's error. Raises ValueError."""
    try:
        answer = json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(answer, dict):
        raise ValueError("not a claims answer: expected a JSON object")
    if status != 200:
        said = answer.get("detail")
        return False, str(said)[:_REASON_CHARACTERS] if isinstance(said, str) else f"HTTP {status}"
    if not isinstance(answer.get("granted"), bool):
        raise ValueError("not a claims answer: expected an object with a boolean `granted`")
    said = answer.get("reason")
    reason = str(said)[:_REASON_CHARACTERS] if isinstance(said, str) and not answer["granted"] else None
    return bool(answer["granted"]), reason
