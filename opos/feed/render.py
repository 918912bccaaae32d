"""Feed and head documents: valid instructions in, canonical payloads and signed envelopes out."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import EnvelopeInvalid
from opos.feed import dsse, keys
from opos.instructions import resources
from opos.model import FEED_PAYLOAD_TYPE, HEAD_PAYLOAD_TYPE, CommitHash, Instruction, format_time

DEFAULT_HEAD_TTL = dt.timedelta(hours=24)
PAYLOAD_TYPES = {"feed": FEED_PAYLOAD_TYPE, "head": HEAD_PAYLOAD_TYPE}


@dataclass(frozen=True)
class Entry:
    """An instruction as it stands at a commit, with who last changed it and when."""

    instruction: Instruction
    revision: CommitHash
    signer: str | None


def feed_payload(commit: CommitHash, sequence: int, committed: dt.datetime, entries: Iterable[Entry]) -> bytes:
    """The canonical feed payload: every instruction, sorted by id."""
    instructions = []
    for entry in sorted(entries, key=lambda e: e.instruction.id):
        document = entry.instruction.to_json()
        document["revision"] = entry.revision
        document["signer"] = entry.signer
        instructions.append(document)
    return dsse.canonical_json(
        {
            "type": "opos.feed/v1",
            "commit": commit,
            "sequence": sequence,
            "committed": format_time(committed),
            "instructions": instructions,
        }
    )


def head_payload(
    commit: CommitHash, sequence: int, feed_envelope: bytes, issued: dt.datetime, ttl: dt.timedelta = DEFAULT_HEAD_TTL
) -> bytes:
    return dsse.canonical_json(
        {
            "type": "opos.head/v1",
            "commit": commit,
            "sequence": sequence,
            "feed_sha256": hashlib.sha256(feed_envelope).hexdigest(),
            "issued": format_time(issued),
            "expires": format_time(issued + ttl),
        }
    )


def sign(kind: str, payload: bytes, key: ed25519.Ed25519PrivateKey) -> bytes:
    """A DSSE envelope ("feed" or "head"), serialised canonically."""
    return dsse.sign(PAYLOAD_TYPES[kind], payload, key, keys.key_id(key.public_key())).to_bytes()


@dataclass(frozen=True)
class VerifiedDocument:
    kind: str  # "feed" or "head"
    keyid: str
    payload: dict[str, Any]


def verify_envelope(data: bytes, trusted: Sequence[ed25519.Ed25519PublicKey]) -> VerifiedDocument:
    """Check a feed or head envelope: signature by a trusted key, payload type, schema.

    Raises EnvelopeInvalid or SignatureInvalid, each saying why.
    """
    envelope = dsse.parse(data)
    kinds = {v: k for k, v in PAYLOAD_TYPES.items()}
    kind = kinds.get(envelope.payload_type)
    if kind is None:
        expected = " or ".join(PAYLOAD_TYPES.values())
        raise EnvelopeInvalid(f"payload type {envelope.payload_type!r} is not an OPOS document ({expected})")
    keyid = dsse.verify(envelope, [(keys.key_id(k), k) for k in trusted], envelope.payload_type)
    try:
        payload = json.loads(envelope.payload)
    except (UnicodeDecodeError, ValueError) as err:
        raise EnvelopeInvalid(f"the signed payload is not JSON: {err}") from None
    errors = sorted(resources.validator(kind).iter_errors(payload), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].absolute_path) or "(top)"
        raise EnvelopeInvalid(f"the {kind} payload breaks its schema at {where}: {errors[0].message}")
    return VerifiedDocument(kind, keyid, payload)
