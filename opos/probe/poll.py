"""One poll: mirrors in a random order → a verified head → its feed → saved state → the plan.

The exact algorithm, step by step, is in docs/client.md; each step names the check it makes.
"""

from __future__ import annotations

import datetime as dt
import json
import random
from dataclasses import dataclass, field, replace
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import UntrustedDataError
from opos.instructions import resources
from opos.model import parse_time
from opos.probe import keyring, plan
from opos.probe.state import ProbeState
from opos.probe.verify import Pin, Rejected, SplitView, check_feed, check_head, verify_head
from opos.signing import cosignature, keydoc
from opos.signing.documents import Feed, FeedEntry, Head
from opos.transport import Fetcher, FetchFailed, HttpFetcher, Limits, Mirror


@dataclass(frozen=True)
class ClientConfig:
    mirrors: list[Mirror]
    keys: list[ed25519.Ed25519PublicKey]
    country: str
    network: str
    state_dir: Path
    platform: str | None = None
    claims: tuple[Mirror, ...] = ()  # the service's base URLs, tried in a random order: <url>/v1/claims
    probe_id: str | None = None  # default: generated once and kept in the state directory
    defaults: dict[str, int] = field(default_factory=lambda: dict(plan.DEFAULT_SCHEDULE))
    limits: Limits = field(default_factory=Limits)
    clock_skew: dt.timedelta = dt.timedelta(minutes=5)
    max_delay: int = 900  # the largest start delay of a run, in seconds (never past the window)
    claim_retry: dt.timedelta = dt.timedelta(hours=1)  # ask again this long after a refusal
    tests: frozenset[str] | None = None  # the tests this probe has (default: every test this version knows)
    auditors: tuple[ed25519.Ed25519PublicKey, ...] = ()  # pinned auditor keys (issue: auditors)
    root_keys: tuple[keydoc.Key, ...] = ()  # pinned root keys: `keys` and auditors then come from the key document
    auditors_required: int = 0  # a head counts only with this many of them cosigning its commit


@dataclass(frozen=True)
class _Verified:
    head_bytes: bytes
    feed_bytes: bytes
    head: Head
    feed: Feed
    cosigned: bytes | None = None  # the auditors' cosignatures of the head's commit, when required


def _load_cache(state: ProbeState, config: ClientConfig, rejected: list[plan.RejectedSource]) -> _Verified | None:
    """The saved head and feed, fully verified again (except expiry: an old feed is still a good fallback)."""
    head_bytes, feed_bytes = state.cached()
    if head_bytes is None and feed_bytes is None:
        return None
    try:
        if head_bytes is None or feed_bytes is None:
            raise Rejected("half a cache (a head without its feed, or the reverse)")
        head = verify_head(head_bytes, config.keys)
        feed = check_feed(feed_bytes, head, config.keys)
        cosigned = state.cosignature() if config.auditors_required else None
        if config.auditors_required:
            if cosigned is None:
                raise Rejected("no auditor cosignatures are saved with it, and this probe requires them")
            _check_cosigned(cosigned, head, config)
        return _Verified(head_bytes, feed_bytes, head, feed, cosigned)
    except UntrustedDataError as err:
        state.discard_cache()
        rejected.append(plan.RejectedSource("cache", f"the saved state was discarded: {err}"))
        return None


def _fetch_feed(
    mirrors: list[Mirror], head: Head, config: ClientConfig, fetcher: Fetcher, rejected: list[plan.RejectedSource]
) -> tuple[Mirror, bytes, Feed] | None:
    """The feed a verified head names, from the first mirror that gives a good one; each bad one is rejected."""
    for mirror in mirrors:
        try:
            answer = fetcher.get(mirror, f"v1/feed/{head.commit}.json", config.limits.feed_bytes)
            return mirror, answer.body, check_feed(answer.body, head, config.keys)
        except (FetchFailed, UntrustedDataError) as err:
            rejected.append(plan.RejectedSource(mirror.url, f"feed: {err}"))
        except Exception as err:  # whatever a mirror sends, the probe goes on
            rejected.append(plan.RejectedSource(mirror.url, f"feed: could not be handled ({type(err).__name__})"))
    return None


def _keys_from(config: ClientConfig, document: keydoc.KeyDocument | None) -> ClientConfig:
    """The configuration with the key document's feed keys, and its auditors when it names any."""
    if document is None:
        return replace(config, keys=[])
    config = replace(config, keys=document.feed_public_keys())
    if document.auditors:
        config = replace(config, auditors=tuple(document.auditor_public_keys()),
                         auditors_required=document.auditors_required)  # fmt: skip
    return config


def _check_cosigned(data: bytes, head: Head, config: ClientConfig) -> None:
    """That enough distinct pinned auditors cosigned exactly the head's commit, sequence and feed."""
    statement = cosignature.Statement(head.commit, head.sequence, head.feed_sha256)
    try:
        cosignature.require(data, statement, config.auditors, config.auditors_required)
    except UntrustedDataError as err:
        raise Rejected(f"cosignatures: {err}") from None


def _fetch_cosigned(mirrors: list[Mirror], head: Head, config: ClientConfig, fetcher: Fetcher) -> bytes:
    """The cosignatures of the head's commit, from the first mirror that has enough. Raises Rejected."""
    reasons = []
    for mirror in mirrors:
        try:
            data = fetcher.get(mirror, f"v1/cosignatures/{head.commit}.json", cosignature.MAX_BYTES).body
            _check_cosigned(data, head, config)
            return data
        except (FetchFailed, UntrustedDataError) as err:
            reasons.append(f"{mirror.url}: {err}")
    raise Rejected(f"the head's commit {head.commit[:12]} is not cosigned by the auditors required: "
                   + "; ".join(reasons))  # fmt: skip


def poll(
    config: ClientConfig,
    now: dt.datetime | None = None,
    rng: random.Random | None = None,
    fetcher: Fetcher | None = None,
) -> plan.Plan:
    """Poll the mirrors once and return the plan. Never raises for a mirror's fault.

    `fetcher` is the transport (default: HTTP with `config.limits`); tests pass their own.
    """
    now = now or dt.datetime.now(dt.UTC)  # one "now" for every check of this poll
    rng = rng or random.SystemRandom()
    fetcher = fetcher or HttpFetcher(config.limits)
    state = ProbeState(config.state_dir)
    probe = plan.Probe(state.probe_id(config.probe_id), config.country.upper(), config.network, config.platform)
    rejected: list[plan.RejectedSource] = []
    mirrors = list(config.mirrors)
    rng.shuffle(mirrors)  # so that one stale or hostile mirror cannot hold the probe back
    if config.root_keys:  # first the key document: which feed keys and auditors are current
        document, current = keyring.update(config.root_keys, state, mirrors, fetcher, rejected, now, config.clock_skew)
        config = _keys_from(config, document)
        if not current:
            reason = "no key document could be trusted" if document is None else (
                f"the trusted key document (version {document.version}) has expired")  # fmt: skip
            rejected.append(plan.RejectedSource("keys", f"{reason}: no new head is accepted; planning from the cache"))
            mirrors = []
    cache = _load_cache(state, config, rejected) if config.keys else None
    pin = state.pin()
    if cache is not None and (pin is None or cache.head.sequence > pin.sequence):
        pin = Pin(cache.head.sequence, cache.head.commit)
    accepted: _Verified | None = None
    source = "none"
    etags = state.etags()
    for mirror in mirrors:
        head_bytes = b""
        try:
            answer = fetcher.get(mirror, "v1/head.json", config.limits.head_bytes,
                                 etags.get(mirror.url) if cache else None)  # fmt: skip
            head_bytes = cache.head_bytes if answer.status == 304 and cache else answer.body
            head = check_head(head_bytes, config.keys, now, config.clock_skew, pin)
            others = [m for m in mirrors if m != mirror]
            # the same commit and the same feed confirm the cache; a head that names another feed for the
            # same commit does not, whoever signed it
            same = cache is not None and (head.commit, head.feed_sha256) == (cache.head.commit, cache.head.feed_sha256)
            cosigned = None
            if config.auditors_required:  # before the feed: an uncosigned head costs no feed download
                known = cache.cosigned if same and cache is not None else None
                cosigned = known or _fetch_cosigned([mirror, *others], head, config, fetcher)
            if same and cache is not None:
                feed_from, feed_bytes, feed = mirror, cache.feed_bytes, cache.feed  # this head confirms the cache
            else:
                found = _fetch_feed([mirror, *others], head, config, fetcher, rejected)
                if found is None:
                    continue  # every mirror that gave a bad feed is in `rejected` already
                feed_from, feed_bytes, feed = found
            accepted = _Verified(head_bytes, feed_bytes, head, feed, cosigned)
            state.save(head_bytes, feed_bytes, Pin(head.sequence, head.commit), cosigned)
            state.save_etag(mirror.url, answer.etag if answer.status == 200 else etags.get(mirror.url))
            source = feed_from.url
            break
        except SplitView as err:
            folder = state.save_evidence(now, {"accepted-head.json": cache.head_bytes if cache else b"",
                                               "other-head.json": head_bytes})  # fmt: skip
            rejected.append(plan.RejectedSource(mirror.url, f"{err} (evidence saved in {folder})"))
        except (FetchFailed, UntrustedDataError) as err:
            rejected.append(plan.RejectedSource(mirror.url, str(err)))
        except Exception as err:  # whatever a mirror sends, the probe goes on
            rejected.append(plan.RejectedSource(mirror.url, f"its answer could not be handled ({type(err).__name__})"))
    if accepted is None and cache is not None:
        accepted, source = cache, "cache"
    return _plan(config, fetcher, state, probe, accepted, source, rejected, now, rng)


def _plan(
    config: ClientConfig,
    fetcher: Fetcher,
    state: ProbeState,
    probe: plan.Probe,
    accepted: _Verified | None,
    source: str,
    rejected: list[plan.RejectedSource],
    now: dt.datetime,
    rng: random.Random,
) -> plan.Plan:
    applicable = plan.applicable(accepted.feed, probe, now) if accepted else []
    entries, skipped = plan.followable(applicable, config.tests or frozenset(resources.nettests()))
    runs = []
    reported: dict[str, str] = {}
    ran = state.ran()
    already = tuple(e.id for e in entries if e.instruction.kind == "run" and ran.get(e.id) == e.revision)
    for entry in plan.pending_runs(entries, ran):
        claim: plan.Claim | None = None
        if entry.instruction.target.max_probes is not None:
            claim = _claim(config, fetcher, state, probe, entry, now, rng, rejected)
        if claim in (None, "granted"):
            reported[entry.id] = entry.revision
        delay = plan.jitter(entry, now, config.max_delay, rng)
        sequence = accepted.head.sequence if accepted else 0
        runs.append(
            plan.Run(entry.id, entry.revision, entry.instruction.test, entry.instruction.inputs, delay, claim, sequence)
        )
    state.mark_ran(reported)
    return plan.Plan(
        time=now,
        probe_id=probe.probe_id,
        commit=accepted.head.commit if accepted else None,
        sequence=accepted.head.sequence if accepted else None,
        source=source,
        runs=tuple(runs),
        schedule=plan.schedule(entries, config.defaults),
        rejected=tuple(rejected),
        upcoming=plan.upcoming(accepted.feed, probe, now) if accepted else (),
        reported=already,
        skipped=skipped,
    )


def _claim(
    config: ClientConfig,
    fetcher: Fetcher,
    state: ProbeState,
    probe: plan.Probe,
    entry: FeedEntry,
    now: dt.datetime,
    rng: random.Random,
    rejected: list[plan.RejectedSource],
) -> plan.Claim:
    """granted, refused or unavailable: a capped instruction runs only with a granted claim."""
    cached = state.claims().get(entry.id)
    if cached and cached.get("revision") == entry.revision:
        if cached.get("granted"):
            return "granted"
        try:
            if now - parse_time(str(cached.get("at"))) < config.claim_retry:
                return "refused"
        except ValueError:
            pass
    document = {"instruction": entry.id, "probe_id": probe.probe_id, "country": probe.country,
                "network": probe.network, "platform": probe.platform}  # fmt: skip
    services = list(config.claims)
    rng.shuffle(services)  # one blocked or hostile claims service cannot hold the probe back
    for service in services:
        try:
            answer = fetcher.post(service, "v1/claims", document)
            granted = _granted(answer.body)
        except FetchFailed as err:
            rejected.append(plan.RejectedSource(service.url, f"claims: {err}"))
            continue
        except Exception as err:  # whatever a claims service sends, the probe goes on
            rejected.append(plan.RejectedSource(service.url, f"claims: the answer could not be handled ({err})"))
            continue
        state.save_claim(entry.id, entry.revision, granted, now)
        return "granted" if granted else "refused"
    return "unavailable"


def _granted(body: bytes) -> bool:
    """The `granted` of a claims answer. Raises ValueError for anything else."""
    try:
        answer = json.loads(body)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("granted"), bool):
        raise ValueError("not a claims answer: expected an object with a boolean `granted`")
    return bool(answer["granted"])
