"""The key document: which online keys (feed keys, auditors) are current, vouched for by offline root keys. Pure.

A DSSE envelope of payload type `application/vnd.opos.keys.v1+json`, canonical payload
`{"type":"opos.keys/v1","version":N,"expires":…,"root_keys":[…],"root_threshold":k,"feed_keys":[…],
"auditors":[…],"auditors_required":m}` (`schemas/keys.schema.json`), each key
`{"keyid": "SHA256:…", "public": "ssh-ed25519 AAAA…"}`.

The chain (as TUF's root role): version 1 is signed by a threshold of its own root keys; version
N+1 by a threshold of version N's root keys *and* a threshold of its own, so root keys themselves
can rotate. Each key counts once however many signatures it has.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import ChainBroken, EnvelopeInvalid, KeyInvalid, Problem, UntrustedDataError
from opos.instructions import resources
from opos.limits import MAX_KEY_FILE_BYTES
from opos.model import format_time, parse_time
from opos.signing import dsse, keys

PAYLOAD_TYPE = "application/vnd.opos.keys.v1+json"
MAX_BYTES = MAX_KEY_FILE_BYTES  # one document
MAX_WALK = 32  # versions a probe walks in one poll
_NAME = re.compile(r"^([1-9][0-9]{0,8})\.json$")  # <ledger>/keys/<N>.json


@dataclass(frozen=True)
class Key:
    keyid: str
    public: str  # "ssh-ed25519 AAAA…"

    @classmethod
    def of(cls, public: ed25519.Ed25519PublicKey) -> Key:
        return cls(keys.key_id(public), " ".join(keys.public_line(public).split()[:2]))

    def load(self) -> ed25519.Ed25519PublicKey:
        return keys.parse_public_line(self.public, self.keyid)

    def to_json(self) -> dict[str, str]:
        return {"keyid": self.keyid, "public": self.public}


@dataclass(frozen=True)
class KeyDocument:
    version: int
    expires: dt.datetime
    root_keys: tuple[Key, ...]
    root_threshold: int
    feed_keys: tuple[Key, ...]
    auditors: tuple[Key, ...] = ()
    auditors_required: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "type": "opos.keys/v1", "version": self.version, "expires": format_time(self.expires),
            "root_keys": [k.to_json() for k in self.root_keys], "root_threshold": self.root_threshold,
            "feed_keys": [k.to_json() for k in self.feed_keys], "auditors": [k.to_json() for k in self.auditors],
            "auditors_required": self.auditors_required,
        }  # fmt: skip

    def payload(self) -> bytes:
        return dsse.canonical_json(self.to_json())

    def expired(self, now: dt.datetime, clock_skew: dt.timedelta = dt.timedelta(0)) -> bool:
        return self.expires + clock_skew < now

    def feed_public_keys(self) -> list[ed25519.Ed25519PublicKey]:
        return [k.load() for k in self.feed_keys]

    def auditor_public_keys(self) -> list[ed25519.Ed25519PublicKey]:
        return [k.load() for k in self.auditors]


def _keys(value: object, field: str) -> tuple[Key, ...]:
    found = []
    for item in value if isinstance(value, list) else []:
        key = Key(str(item["keyid"]), str(item["public"]))
        try:
            actual = keys.key_id(key.load())
        except KeyInvalid as err:
            raise EnvelopeInvalid(f"{field}: {err}") from None
        if actual != key.keyid:
            raise EnvelopeInvalid(f"{field}: the keyid {key.keyid} is not the fingerprint of its key ({actual})")
        if key in found:
            raise EnvelopeInvalid(f"{field}: {key.keyid} is listed twice")
        found.append(key)
    return tuple(found)


def read(data: bytes) -> tuple[dsse.Envelope, KeyDocument]:
    """The envelope and the document it carries, checked for form only (no signature). Raises UntrustedDataError."""
    if len(data) > MAX_BYTES:
        raise EnvelopeInvalid(f"a key document is at most {MAX_BYTES} bytes; this is {len(data)}")
    envelope = dsse.parse(data)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EnvelopeInvalid(f"payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    value = dsse.load_json(envelope.payload, "the key document")
    try:
        problem = resources.unreadable("keys", value)
    except RecursionError:
        raise EnvelopeInvalid("the key document is nested too deeply") from None
    if problem is not None:
        raise EnvelopeInvalid(f"the key document: {problem}")
    document = KeyDocument(
        value["version"], parse_time(value["expires"]), _keys(value["root_keys"], "root_keys"), value["root_threshold"],
        _keys(value["feed_keys"], "feed_keys"), _keys(value["auditors"], "auditors"), value["auditors_required"],
    )  # fmt: skip
    if document.root_threshold > len(document.root_keys):
        raise EnvelopeInvalid(f"root_threshold {document.root_threshold} is more than the {len(document.root_keys)} "
                              "root keys: no later version could ever be signed")  # fmt: skip
    if document.auditors_required > len(document.auditors):
        raise EnvelopeInvalid(f"auditors_required {document.auditors_required} is more than the "
                              f"{len(document.auditors)} auditors")  # fmt: skip
    return envelope, document


def signers(envelope: dsse.Envelope, among: Iterable[Key]) -> list[str]:
    """The distinct keys among `among` with a valid signature on the envelope: one key counts once."""
    first = dsse.Envelope(envelope.payload_type, envelope.payload, envelope.signatures[:64])  # at most 64 looked at
    return dsse.distinct_signers(first, [(key.keyid, key.load()) for key in among])


def _threshold(envelope: dsse.Envelope, of: KeyDocument, version: int, whose: str) -> None:
    found = signers(envelope, of.root_keys)
    if len(found) < of.root_threshold:
        raise ChainBroken(f"key document version {version} is signed by {len(found)} of {whose} root keys; "
                          f"{of.root_threshold} are needed")  # fmt: skip


def first(data: bytes, pinned_roots: Sequence[Key] | None = None) -> KeyDocument:
    """Version 1: a threshold of its own root keys, which must be exactly `pinned_roots` when given."""
    envelope, document = read(data)
    if document.version != 1:
        raise ChainBroken(f"the first key document must be version 1, not {document.version}")
    if pinned_roots is not None and {k.keyid for k in document.root_keys} != {k.keyid for k in pinned_roots}:
        raise ChainBroken("the first key document's root keys are not the pinned root keys: "
                          f"{', '.join(k.keyid for k in document.root_keys)}")  # fmt: skip
    _threshold(envelope, document, 1, "its own")
    return document


def following(trusted: KeyDocument, data: bytes) -> KeyDocument:
    """Version trusted.version + 1: a threshold of the trusted version's root keys and of its own."""
    envelope, document = read(data)
    if document.version != trusted.version + 1:
        raise ChainBroken(f"expected key document version {trusted.version + 1}, got {document.version}")
    _threshold(envelope, trusted, document.version, f"version {trusted.version}'s")
    _threshold(envelope, document, document.version, "its own")
    return document


def chain(documents: Sequence[bytes], pinned_roots: Sequence[Key] | None = None) -> KeyDocument:
    """The newest of a whole chain, versions 1, 2, … in order. Raises UntrustedDataError at the first break."""
    if not documents:
        raise ChainBroken("there is no key document")
    trusted = first(documents[0], pinned_roots)
    for data in documents[1:]:
        trusted = following(trusted, data)
    return trusted


def sign(document: KeyDocument, private_keys: Sequence[ed25519.Ed25519PrivateKey]) -> bytes:
    """The document's envelope with a signature by each key (in keyid order)."""
    payload = document.payload()
    message = dsse.pae(PAYLOAD_TYPE, payload)
    signatures = sorted((keys.key_id(k.public_key()), k.sign(message)) for k in private_keys)
    return dsse.Envelope(PAYLOAD_TYPE, payload, tuple(signatures)).to_bytes()


def add_signature(data: bytes, private_key: ed25519.Ed25519PrivateKey) -> bytes:
    """The envelope with one more signature (a second root holder's); the same key twice changes nothing."""
    envelope, _ = read(data)
    keyid = keys.key_id(private_key.public_key())
    signatures = dict(envelope.signatures)
    signatures[keyid] = private_key.sign(dsse.pae(PAYLOAD_TYPE, envelope.payload))
    return dsse.Envelope(PAYLOAD_TYPE, envelope.payload, tuple(sorted(signatures.items()))).to_bytes()


def folder_documents(files: Mapping[str, bytes | None], shown: str) -> tuple[list[bytes], list[Problem]]:
    """The documents in version order, and what is wrong with the folder's names."""
    problems: list[Problem] = []
    versions: dict[int, bytes] = {}
    for name, data in sorted(files.items()):
        match = _NAME.fullmatch(name)
        if not match or data is None:
            problems.append(Problem(f"{shown}keys/{name}", None, "", "the keys folder holds only <version>.json files "
                                    "made by `opos keys` (1.json, 2.json, …)"))  # fmt: skip
            continue
        versions[int(match.group(1))] = data
    ordered = [versions[n] for n in sorted(versions)]
    if sorted(versions) != list(range(1, len(versions) + 1)):
        missing = sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
        problems.append(Problem(f"{shown}keys/", None, "", f"versions {', '.join(map(str, missing))} are missing: "
                                "the chain is 1.json, 2.json, … without a gap"))  # fmt: skip
    return ordered, problems


def folder_chain(files: Mapping[str, bytes | None], shown: str) -> tuple[list[bytes], list[Problem]]:
    """The documents in version order when they form a chain; else the problems (no keys/: none)."""
    ordered, problems = folder_documents(files, shown)
    if problems or not ordered:
        return [], problems
    try:
        chain(ordered)
    except UntrustedDataError as err:
        return [], [Problem(f"{shown}keys/", None, "", f"the key documents do not form a chain: {err}")]
    return ordered, []
