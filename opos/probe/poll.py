"""One poll: mirrors in a random order → the key documents → a verified head → its feed → saved state → the plan.

The exact algorithm, step by step, is in docs/client.md; each step names the check it makes. What
is trusted lives in one `TrustedState` (opos/probe/trusted.py), updated step by step with one `now`;
this module fetches, saves, and asks it. Planning is pure (`plan.plan`); claiming is its own step.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path

from opos.errors import FetchFailed, UntrustedDataError
from opos.instructions import resources
from opos.probe import claims, keyring, plan
from opos.probe.errors import Rejected, SplitView
from opos.probe.state import ProbeState
from opos.probe.trusted import TrustAnchors, TrustedState, Verified
from opos.probe.verify import Pin
from opos.signing import cosignature
from opos.signing.documents import Feed
from opos.transport import Fetcher, HttpFetcher, Limits, Mirror


@dataclass(frozen=True)
class ClientConfig:
    """What the probe's operator chose. What is pinned (keys, root keys, auditors) is `trust`."""

    mirrors: list[Mirror]
    trust: TrustAnchors
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
    claim_retry: dt.timedelta = dt.timedelta(minutes=10)  # ask again this long after a refusal without Retry-After
    tests: frozenset[str] | None = None  # the tests this probe has (default: every test this version knows)


@dataclass
class _Poll:
    """The parts of one poll that each step uses."""

    config: ClientConfig
    state: ProbeState
    fetcher: Fetcher
    trusted: TrustedState
    rejected: list[plan.RejectedSource] = field(default_factory=list)

    def reject(self, where: str, why: str) -> None:
        self.rejected.append(plan.RejectedSource(where, why))


def poll(
    config: ClientConfig, now: dt.datetime | None = None, rng: random.Random | None = None,
    fetcher: Fetcher | None = None,
) -> plan.Plan:  # fmt: skip
    """Poll the mirrors once and return the plan. Never raises for a mirror's fault.

    `fetcher` is the transport (default: HTTP with `config.limits`); tests pass their own.
    """
    now = now or dt.datetime.now(dt.UTC)  # one "now" for every check of this poll
    rng = rng or random.SystemRandom()
    state = ProbeState(config.state_dir)
    step = _Poll(config, state, fetcher or HttpFetcher(config.limits),
                 TrustedState(config.trust, now, config.clock_skew, state.pin()))  # fmt: skip
    mirrors = list(config.mirrors)
    rng.shuffle(mirrors)  # so that one stale or hostile mirror cannot hold the probe back
    if config.trust.root_keys and not _update_keys(step, mirrors):
        mirrors = []
    cache = _restore(step)
    verified, source = _follow(step, mirrors, cache) or ((cache, "cache") if cache else (None, "none"))
    result = _plan(step, verified.feed if verified else None, source, now, rng)
    if state.unwritable:  # said, never fatal: the plan stands, but nothing of this poll was kept
        unique = list(dict.fromkeys(state.unwritable))
        step.reject("state", f"the state directory cannot be written ({'; '.join(unique[:3])}): nothing of this "
                    "poll is kept, so the next one starts from what was there before")  # fmt: skip
        result = dataclasses.replace(result, rejected=tuple(step.rejected))
    return result


def _update_keys(step: _Poll, mirrors: list[Mirror]) -> bool:
    """The key document first: which feed keys and auditors are current. Whether new heads may be taken."""
    roots = step.config.trust.root_keys
    document = keyring.update(roots, step.state, mirrors, step.fetcher, step.rejected, step.trusted.now,
                              step.config.clock_skew)  # fmt: skip
    if step.trusted.update_keys(document):
        return True
    reason = "no key document could be trusted" if document is None else (
        f"the trusted key document (version {document.version}) has expired")  # fmt: skip
    step.reject("keys", f"{reason}: no new head is accepted; planning from the cache")
    return False


def _restore(step: _Poll) -> Verified | None:
    """The saved head and feed, verified again; a damaged or untrusted one is discarded, saying why."""
    head_bytes, feed_bytes = step.state.cached()
    if (head_bytes is None and feed_bytes is None) or not step.trusted.feed_keys:
        return None
    try:
        if head_bytes is None or feed_bytes is None:
            raise Rejected("half a cache (a head without its feed, or the reverse)")
        cosigned = step.state.cosignature() if step.trusted.auditors_required else None
        return step.trusted.restore(head_bytes, feed_bytes, cosigned)
    except UntrustedDataError as err:
        step.state.discard_cache()
        step.reject("cache", f"the saved state was discarded: {err}")
        return None


def _follow(step: _Poll, mirrors: list[Mirror], cache: Verified | None) -> tuple[Verified, str] | None:
    """The first mirror's answer that verifies, saved, with the mirror its feed came from; each other is rejected."""
    etags = step.state.etags()
    for mirror in mirrors:
        head_bytes = b""
        try:
            answer = step.fetcher.get(mirror, "v1/head.json", step.config.limits.head_bytes,
                                      etags.get(mirror.url) if cache else None)  # fmt: skip
            head_bytes = cache.head_bytes if answer.status == 304 and cache else answer.body
            found = _answer(step, head_bytes, mirror, [m for m in mirrors if m != mirror], cache)
            if found is None:
                continue  # every mirror that gave a bad feed is in `rejected` already
            verified, source = found
            pin = Pin(verified.head.sequence, verified.head.commit)
            step.state.save(verified.head_bytes, verified.feed_bytes, pin, verified.cosigned)
            step.state.save_etag(mirror.url, answer.etag if answer.status == 200 else etags.get(mirror.url))
            return verified, source
        except SplitView as err:
            _keep_evidence(step, err, mirror, cache, head_bytes)
        except (FetchFailed, UntrustedDataError) as err:
            step.reject(mirror.url, str(err))
        except Exception as err:  # whatever a mirror sends, the probe goes on
            step.reject(mirror.url, f"its answer could not be handled ({type(err).__name__})")
    return None


def _answer(
    step: _Poll, head_bytes: bytes, mirror: Mirror, others: list[Mirror], cache: Verified | None
) -> tuple[Verified, str] | None:
    """Head, then its cosignatures (before the feed: an uncosigned head costs no feed download), then its feed.

    The same commit and the same feed confirm the cache; a head that names another feed for the same
    commit does not, whoever signed it."""
    head = step.trusted.update_head(head_bytes)
    same = cache is not None and (head.commit, head.feed_sha256) == (cache.head.commit, cache.head.feed_sha256)
    if step.trusted.auditors_required and same and cache is not None and cache.cosigned is not None:
        step.trusted.update_cosignatures(cache.cosigned)
    elif step.trusted.auditors_required:
        _fetch_cosigned(step, [mirror, *others], head.commit)
    if same and cache is not None:
        return step.trusted.confirm(cache), mirror.url
    for source in [mirror, *others]:
        try:
            answer = step.fetcher.get(source, f"v1/feed/{head.commit}.json", step.config.limits.feed_bytes)
            return step.trusted.update_feed(answer.body), source.url
        except (FetchFailed, UntrustedDataError) as err:
            step.reject(source.url, f"feed: {err}")
        except Exception as err:  # whatever a mirror sends, the probe goes on
            step.reject(source.url, f"feed: could not be handled ({type(err).__name__})")
    return None


def _fetch_cosigned(step: _Poll, mirrors: list[Mirror], commit: str) -> None:
    """The cosignatures of the head's commit, from the first mirror that has enough. Raises Rejected."""
    reasons = []
    for mirror in mirrors:
        try:
            data = step.fetcher.get(mirror, f"v1/cosignatures/{commit}.json", cosignature.MAX_BYTES).body
            step.trusted.update_cosignatures(data)
            return
        except (FetchFailed, UntrustedDataError) as err:
            reasons.append(f"{mirror.url}: {err}")
    raise Rejected(f"the head's commit {commit[:12]} is not cosigned by the auditors required: " + "; ".join(reasons))


def _keep_evidence(step: _Poll, err: SplitView, mirror: Mirror, cache: Verified | None, head_bytes: bytes) -> None:
    folder = step.state.save_evidence(step.trusted.now, {"accepted-head.json": cache.head_bytes if cache else b"",
                                                         "other-head.json": head_bytes})  # fmt: skip
    step.reject(mirror.url, f"{err} (evidence saved in {folder})")


def _plan(step: _Poll, feed: Feed | None, source: str, now: dt.datetime, rng: random.Random) -> plan.Plan:
    """Claim the capped runs, plan (pure), and remember what is reported as run."""
    config, probe = step.config, plan.Probe(step.state.probe_id(step.config.probe_id), step.config.country.upper(),
                                            step.config.network, step.config.platform)  # fmt: skip
    choices = plan.Choices(config.tests or frozenset(resources.nettests()), config.defaults, config.max_delay)
    ran, found = step.state.ran(), plan.applicable_to(feed, probe, now, choices.tests)
    capped = plan.needing_claims(found, ran)
    granted = claims.claim_each(capped, config.claims, config.claim_retry, step.fetcher, step.state, probe, now, rng,
                                step.rejected)  # fmt: skip
    result = plan.plan(feed, probe, now, ran, granted, choices, rng, source, step.rejected, found)
    step.state.mark_ran({run.instruction: run.revision for run in result.runs if run.claim in (None, "granted")})
    return result
