"""Asking auditors to cosign a new feed, for the publisher (the service, `opos render --auditor`).

Every auditor URL is asked at once, each exchange bounded in time and size. What counts is the
number of distinct pinned auditor keys with a valid signature over exactly the statement the head
will make, counted as probes count them: never URLs (several may be mirrors of one auditor) nor
envelopes, and never a key an auditor's own URL hands out. A 409 is the split-view alarm: an
auditor has cosigned something this feed contradicts.
"""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import OposError, UntrustedDataError
from opos.publish.errors import CosignaturesMissing
from opos.publish.site import Cosigner
from opos.signing import cosignature
from opos.transport import HttpFetcher, Limits, Mirror

ASK_LIMITS = Limits(connect_seconds=5.0, total_seconds=30.0, gap_seconds=10.0, answer_bytes=cosignature.MAX_BYTES)


@dataclass
class Answers:
    envelopes: list[bytes] = field(default_factory=list)  # one per auditor that cosigned
    problems: list[str] = field(default_factory=list)  # "<url>: why not"
    alarms: list[str] = field(default_factory=list)  # "<url>: 409 …"


def gather(
    urls: Sequence[str], feed_envelope: bytes, statement: cosignature.Statement, required: int,
    pinned: Sequence[ed25519.Ed25519PublicKey], limits: Limits = ASK_LIMITS,
) -> bytes:  # fmt: skip
    """The combined cosignature envelope when at least `required` distinct `pinned` auditor keys cosigned;
    else CosignaturesMissing."""
    if len(pinned) < required:
        raise CosignaturesMissing(f"{required} auditor cosignatures are required but {len(pinned)} auditor key(s) "
                                  "are pinned: list the auditors in the key document (`opos keys rotate "
                                  "--add-auditor`) or pin their keys (OPOS_AUDITOR_KEYS, `opos render "
                                  "--auditor-key`); a key an auditor's URL hands out is never trusted by itself",
                                  [])  # fmt: skip
    answers = ask(urls, feed_envelope, statement, pinned, limits)
    combined = cosignature.combine(statement, answers.envelopes) if answers.envelopes else None
    counted = cosignature.signers(combined, statement, pinned) if combined is not None else []
    if combined is None or len(counted) < required:
        said = "; ".join(answers.alarms + answers.problems) or "every answer was from an auditor already counted"
        alarm = "SPLIT VIEW ALARM: " if answers.alarms else ""
        raise CosignaturesMissing(f"{alarm}{len(counted)} of the {required} auditor cosignatures needed for "
                                  f"{statement.commit[:12]} (distinct pinned keys): {said}",
                                  answers.alarms)  # fmt: skip
    return combined


def asking(urls: Sequence[str], limits: Limits = ASK_LIMITS) -> Cosigner:
    """The publisher's cosigner (`site.Auditors`) that asks these URLs."""
    return lambda statement, envelope, pinned, required: gather(urls, envelope, statement, required, pinned, limits)


def ask(
    urls: Sequence[str], feed_envelope: bytes, statement: cosignature.Statement,
    pinned: Sequence[ed25519.Ed25519PublicKey], limits: Limits,
) -> Answers:  # fmt: skip
    answers = Answers()
    if not urls:
        return answers
    with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
        results = list(pool.map(lambda url: _ask_one(url, feed_envelope, statement, pinned, limits), urls))
    for url, (envelope, problem, alarm) in zip(urls, results, strict=True):
        if envelope is not None:
            answers.envelopes.append(envelope)
        elif alarm:
            answers.alarms.append(f"{url}: {problem}")
        else:
            answers.problems.append(f"{url}: {problem}")
    return answers


def _ask_one(
    url: str, feed_envelope: bytes, statement: cosignature.Statement, pinned: Sequence[ed25519.Ed25519PublicKey],
    limits: Limits,
) -> tuple[bytes | None, str, bool]:  # fmt: skip
    """(the auditor's cosignature, or None with why, and whether it is an alarm)."""
    fetcher = HttpFetcher(limits)
    try:
        mirror = Mirror.parse(url)
        status, body, _ = fetcher.send(mirror, "v1/cosign", feed_envelope)
    except (OposError, ValueError) as err:  # unreachable, or not a URL
        return None, f"unreachable: {err}", False
    if status != 200:
        return None, f"HTTP {status}: {_detail(body)}", status == 409
    try:
        if not cosignature.signers(body, statement, pinned):
            return None, "its answer is not a signature by a pinned auditor key over this feed", False
    except UntrustedDataError as err:
        return None, f"its answer is not a cosignature: {err}", False
    return body, "", False


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
