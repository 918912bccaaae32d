"""The signed world a scenario plays in: keys, a ledger's commits as feeds, heads, key documents, cosignatures.

Every signature is real (Ed25519, DSSE, OPOS's own signing code); keys are derived from the scenario's
name, so a scenario is the same bytes on every run. A commit is a 40-hex id derived from its
sequence and a variant: a client sees documents, never git, so nothing else of a ledger is needed.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import CommitHash, format_time
from opos.publish import render
from opos.signing import cosignature, keydoc, keys
from opos.signing.documents import FeedEntry

Files = dict[str, bytes]


def commit_id(sequence: int, variant: str = "") -> CommitHash:
    return CommitHash(hashlib.sha1(f"commit {sequence} {variant}".encode(), usedforsecurity=False).hexdigest())


def instruction(ident: str, now: dt.datetime, **fields: Any) -> dict[str, Any]:
    """A run instruction for Iran, in its window at `now`, with `fields` over the defaults (as the feed holds it)."""
    base: dict[str, Any] = {
        "id": ident, "kind": "run", "title": f"Scenario {ident}", "reason": "The conformance kit",
        "test": "web_connectivity", "inputs": ["https://example.org/"],
        "target": {"countries": ["IR"], "networks": [], "platforms": [], "max_probes": None,
                   "max_probes_per": "target", "sample": None},
        "window": {"start": format_time(now - dt.timedelta(days=1)), "end": format_time(now + dt.timedelta(days=6))},
        "every": None, "revision": commit_id(0, ident), "signer": "staff@ooni.example",
    }  # fmt: skip
    for name, value in fields.items():
        if name in ("countries", "networks", "platforms", "max_probes", "sample"):
            base["target"][name] = value
        else:
            base[name] = value
    return base


@dataclass
class World:
    name: str
    now: dt.datetime
    private: dict[str, ed25519.Ed25519PrivateKey] = field(default_factory=dict)

    def key(self, name: str) -> ed25519.Ed25519PrivateKey:
        """The scenario's key called `name` (feed, feed-2, root, auditor-1 …), the same on every run."""
        if name not in self.private:
            seed = hashlib.sha256(f"opos conformance {self.name} {name}".encode()).digest()
            self.private[name] = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        return self.private[name]

    def public_line(self, name: str) -> str:
        return keys.public_line(self.key(name).public_key(), f"conformance {name}")

    def feed(
        self, sequence: int, instructions: Sequence[dict[str, Any]] = (), variant: str = "", key: str = "feed"
    ) -> bytes:
        entries = [FeedEntry.from_json(value) for value in instructions]
        payload = render.feed_payload(commit_id(sequence, variant), sequence, self.now - dt.timedelta(hours=1), entries)
        return render.sign("feed", payload, self.key(key))

    def head(
        self, sequence: int, feed: bytes, variant: str = "", key: str = "feed", issued: dt.datetime | None = None,
        ttl: dt.timedelta = dt.timedelta(hours=24),
    ) -> bytes:  # fmt: skip
        payload = render.head_payload(commit_id(sequence, variant), sequence, feed, issued or self.now, ttl)
        return render.sign("head", payload, self.key(key))

    def site(
        self, sequence: int, instructions: Sequence[dict[str, Any]] = (), variant: str = "", key: str = "feed",
        **head: Any,
    ) -> Files:  # fmt: skip
        """A mirror's files for one commit: its head and its feed."""
        feed = self.feed(sequence, instructions, variant, key)
        commit = commit_id(sequence, variant)
        return {"/v1/head.json": self.head(sequence, feed, variant, key, **head), f"/v1/feed/{commit}.json": feed}

    def key_document(
        self, version: int, feed_keys: Iterable[str] = ("feed",), roots: Iterable[str] = ("root",),
        threshold: int = 1, signers: Iterable[str] | None = None, auditors: Iterable[str] = (), required: int = 0,
        expires: dt.datetime | None = None,
    ) -> bytes:  # fmt: skip
        roots = list(roots)
        document = keydoc.KeyDocument(
            version, expires or self.now + dt.timedelta(days=180), tuple(self._key(n) for n in roots), threshold,
            tuple(self._key(n) for n in feed_keys), tuple(self._key(n) for n in auditors), required,
        )  # fmt: skip
        return keydoc.sign(document, [self.key(n) for n in (roots if signers is None else signers)])

    def _key(self, name: str) -> keydoc.Key:
        return keydoc.Key.of(self.key(name).public_key())

    def cosignatures(
        self, site: Files, auditors: Iterable[str], sequence: int | None = None, digest: str | None = None
    ) -> Files:
        """v1/cosignatures/<commit>.json for the site's head, by these auditors (over another sequence or feed
        digest if asked)."""
        feed_path = next(path for path in site if path.startswith("/v1/feed/"))
        commit = feed_path.removeprefix("/v1/feed/").removesuffix(".json")
        feed = site[feed_path]
        head_sequence = int(_payload(site["/v1/head.json"])["sequence"])
        statement = cosignature.Statement(CommitHash(commit), head_sequence if sequence is None else sequence,
                                          digest or hashlib.sha256(feed).hexdigest())  # fmt: skip
        envelopes = [cosignature.cosign(statement, self.key(name)) for name in auditors]
        return {f"/v1/cosignatures/{commit}.json": cosignature.combine(statement, envelopes)}


def _payload(envelope: bytes) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(base64.b64decode(json.loads(envelope)["payload"]))
    return value
