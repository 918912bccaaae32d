"""Cosignatures: auditors' statements that a feed is exactly the public ledger at a commit. Pure.

A cosignature is a DSSE envelope of payload type `application/vnd.opos.cosignature.v1+json`
whose canonical payload is `{"type":"opos.cosignature/v1","commit":…,"sequence":…,"feed_sha256":…}`
(`feed_sha256`: of the feed envelope, as the head names it). Every auditor signs the same bytes,
so one envelope carries them all (keyid: the auditor key's OpenSSH fingerprint). A probe counts
the distinct pinned keys whose signature verifies over exactly the head's (commit, sequence,
feed_sha256); two signatures by one key count once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import EnvelopeInvalid
from opos.model import CommitHash
from opos.signing import dsse, keys

PAYLOAD_TYPE = "application/vnd.opos.cosignature.v1+json"
MAX_BYTES = 64 * 1024  # a cosignature file: a few hundred bytes an auditor
MAX_SIGNATURES = 64


@dataclass(frozen=True)
class Statement:
    """What an auditor vouches for: this feed (by digest) is the ledger at this commit and sequence."""

    commit: CommitHash
    sequence: int
    feed_sha256: str

    def payload(self) -> bytes:
        return dsse.canonical_json(
            {"type": "opos.cosignature/v1", "commit": self.commit, "sequence": self.sequence,
             "feed_sha256": self.feed_sha256}
        )  # fmt: skip


def cosign(statement: Statement, key: ed25519.Ed25519PrivateKey) -> bytes:
    """One auditor's cosignature envelope, serialised canonically."""
    return dsse.sign(PAYLOAD_TYPE, statement.payload(), key, keys.key_id(key.public_key())).to_bytes()


def combine(statement: Statement, envelopes: Iterable[bytes]) -> bytes:
    """One envelope with every signature of the given envelopes that is over exactly this statement.

    Signatures are kept in keyid order, one per keyid, so the file is the same whoever combines it.
    """
    payload = statement.payload()
    signatures: dict[str, bytes] = {}
    for data in envelopes:
        envelope = dsse.parse(data)
        if envelope.payload_type == PAYLOAD_TYPE and envelope.payload == payload:
            for keyid, signature in envelope.signatures:
                signatures.setdefault(keyid, signature)
    if not signatures:
        raise EnvelopeInvalid("no cosignature over this feed to combine")
    return dsse.Envelope(PAYLOAD_TYPE, payload, tuple(sorted(signatures.items()))).to_bytes()


def signers(data: bytes, statement: Statement, auditors: Sequence[ed25519.Ed25519PublicKey]) -> list[str]:
    """The keyids of the distinct pinned auditors whose signature in `data` is over exactly `statement`.

    Raises EnvelopeInvalid when `data` is not a cosignature envelope or is over another statement.
    """
    if len(data) > MAX_BYTES:
        raise EnvelopeInvalid(f"the cosignature file is {len(data)} bytes; at most {MAX_BYTES} are read")
    envelope = dsse.parse(data)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise EnvelopeInvalid(f"payload type {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    if envelope.payload != statement.payload():
        said = dsse.load_json(envelope.payload, "the cosignature payload")
        raise EnvelopeInvalid(f"the cosignatures are over {_brief(said)}, not over the head's commit "
                              f"{statement.commit[:12]} at sequence {statement.sequence} with its feed")  # fmt: skip
    if len(envelope.signatures) > MAX_SIGNATURES:
        raise EnvelopeInvalid(f"{len(envelope.signatures)} signatures; at most {MAX_SIGNATURES} are checked")
    return dsse.distinct_signers(envelope, [(keys.key_id(public), public) for public in auditors])


def require(data: bytes, statement: Statement, auditors: Sequence[ed25519.Ed25519PublicKey], needed: int) -> list[str]:
    """The auditors that cosigned, when at least `needed` did. Raises EnvelopeInvalid saying how many did."""
    found = signers(data, statement, auditors)
    if len(found) < needed:
        named = ", ".join(found) or "none of them"
        raise EnvelopeInvalid(f"{len(found)} of the {needed} auditor cosignatures needed ({named}) for "
                              f"{statement.commit[:12]}")  # fmt: skip
    return found


def _brief(value: object) -> str:
    if isinstance(value, dict):
        return f"commit {str(value.get('commit'))[:12]} at sequence {value.get('sequence')}"
    return "something else"
