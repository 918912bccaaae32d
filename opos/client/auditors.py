"""Asking auditors to cosign a new feed, for the publisher (the service, `opos render --auditor`).

Every auditor is asked at once, each exchange bounded in time and size. An answer counts only when
it verifies with that auditor's own key (`GET <auditor>/v1/public_key`, fetched once per process)
over exactly the statement the head will make. A 409 is the split-view alarm: an auditor has
cosigned something this feed contradicts.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.client.fetch import HttpFetcher, Limits, Mirror
from opos.errors import OposError, UntrustedDataError
from opos.feed import cosignature, keys
from opos.lru import LRU

ASK_LIMITS = Limits(connect_seconds=5.0, total_seconds=30.0, gap_seconds=10.0, answer_bytes=cosignature.MAX_BYTES)
_public_keys: LRU[str, ed25519.Ed25519PublicKey] = LRU(64)


class CosignaturesMissing(OposError):
    """Too few auditors cosigned: the new head waits, the previous one stays served."""

    def __init__(self, message: str, alarms: Sequence[str]) -> None:
        super().__init__(message)
        self.alarms = list(alarms)


@dataclass
class Answers:
    envelopes: list[bytes] = field(default_factory=list)  # one per auditor that cosigned
    problems: list[str] = field(default_factory=list)  # "<url>: why not"
    alarms: list[str] = field(default_factory=list)  # "<url>: 409 …"


def gather(
    urls: Sequence[str], feed_envelope: bytes, statement: cosignature.Statement, required: int,
    limits: Limits = ASK_LIMITS,
) -> bytes:  # fmt: skip
    """The combined cosignature envelope when at least `required` auditors cosigned; else CosignaturesMissing."""
    answers = ask(urls, feed_envelope, statement, limits)
    if len(answers.envelopes) < required:
        said = "; ".join(answers.alarms + answers.problems) or "no auditor answered"
        alarm = "SPLIT VIEW ALARM: " if answers.alarms else ""
        raise CosignaturesMissing(f"{alarm}{len(answers.envelopes)} of the {required} auditor cosignatures needed "
                                  f"for {statement.commit[:12]}: {said}", answers.alarms)  # fmt: skip
    return cosignature.combine(statement, answers.envelopes)


def ask(urls: Sequence[str], feed_envelope: bytes, statement: cosignature.Statement, limits: Limits) -> Answers:
    answers = Answers()
    if not urls:
        return answers
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(lambda url: _ask_one(url, feed_envelope, statement, limits), urls))
    for url, (envelope, problem, alarm) in zip(urls, results, strict=True):
        if envelope is not None:
            answers.envelopes.append(envelope)
        elif alarm:
            answers.alarms.append(f"{url}: {problem}")
        else:
            answers.problems.append(f"{url}: {problem}")
    return answers


def _ask_one(
    url: str, feed_envelope: bytes, statement: cosignature.Statement, limits: Limits
) -> tuple[bytes | None, str, bool]:
    """(the auditor's cosignature, or None with why, and whether it is an alarm)."""
    fetcher = HttpFetcher(limits)
    mirror = Mirror.parse(url)
    try:
        public = _public_key(fetcher, mirror)
        status, body = fetcher.send(mirror, "v1/cosign", feed_envelope)
    except (OposError, ValueError) as err:  # unreachable, or its key is not one
        return None, f"unreachable: {err}", False
    if status != 200:
        return None, f"HTTP {status}: {_detail(body)}", status == 409
    try:
        if keys.key_id(public) not in cosignature.signers(body, statement, [public]):
            return None, "its answer is not a signature by its key over this feed", False
    except UntrustedDataError as err:
        return None, f"its answer is not a cosignature: {err}", False
    return body, "", False


def _public_key(fetcher: HttpFetcher, mirror: Mirror) -> ed25519.Ed25519PublicKey:
    known = _public_keys.get(mirror.url)
    if known is None:
        line = fetcher.get(mirror, "v1/public_key", 4096).body.decode("ascii", "replace")
        known = keys.parse_public_line(line)
        _public_keys.put(mirror.url, known)
    return known


def _detail(body: bytes) -> str:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return body[:200].decode("utf-8", "replace")
    if isinstance(value, dict):
        detail = str(value.get("detail", ""))[:500]
        latest = value.get("latest")
        return f"{detail} (its latest: {latest})" if latest else detail
    return str(value)[:200]
