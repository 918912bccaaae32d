"""DSSE, the Dead Simple Signing Envelope (secure-systems-lab/dsse, protocol v1), with Ed25519.

Envelopes are serialised canonically (sorted keys, no white space), so the same payload signed
with the same key gives the same bytes whoever signs it: Ed25519 signatures are deterministic.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.errors import EnvelopeInvalid, SignatureInvalid


def canonical_json(value: Any) -> bytes:
    """Sorted keys, no insignificant white space, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    """The pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature)

    def to_bytes(self) -> bytes:
        return canonical_json(
            {
                "payload": base64.b64encode(self.payload).decode(),
                "payloadType": self.payload_type,
                "signatures": [{"keyid": k, "sig": base64.b64encode(s).decode()} for k, s in self.signatures],
            }
        )


def sign(payload_type: str, payload: bytes, key: ed25519.Ed25519PrivateKey, keyid: str) -> Envelope:
    return Envelope(payload_type, payload, ((keyid, key.sign(pae(payload_type, payload))),))


def load_json(data: bytes, what: str) -> Any:
    """JSON from untrusted bytes. Raises EnvelopeInvalid, also for nesting too deep to parse."""
    try:
        return json.loads(data)
    except RecursionError:
        raise EnvelopeInvalid(f"{what} is nested too deeply to be an OPOS document") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise EnvelopeInvalid(f"{what} is not a JSON document: {err}") from None


def parse(data: bytes) -> Envelope:
    """Parse envelope JSON. Raises EnvelopeInvalid."""
    document = load_json(data, "the envelope")
    if not isinstance(document, dict):
        raise EnvelopeInvalid("not a DSSE envelope: expected a JSON object")
    payload, payload_type, signatures = (document.get(k) for k in ("payload", "payloadType", "signatures"))
    if not isinstance(payload, str) or not isinstance(payload_type, str) or not isinstance(signatures, list):
        raise EnvelopeInvalid("not a DSSE envelope: needs payload, payloadType and signatures")
    if not signatures:
        raise EnvelopeInvalid("the envelope has no signatures")
    parsed = []
    try:
        for entry in signatures:
            if not isinstance(entry, dict) or not isinstance(entry.get("sig"), str):
                raise EnvelopeInvalid("a signature entry needs a base64 `sig`")
            keyid = entry.get("keyid", "")
            parsed.append((keyid if isinstance(keyid, str) else "", base64.b64decode(entry["sig"], validate=True)))
        return Envelope(payload_type, base64.b64decode(payload, validate=True), tuple(parsed))
    except binascii.Error:
        raise EnvelopeInvalid("the envelope holds invalid base64") from None


def distinct_signers(envelope: Envelope, keys: Iterable[tuple[str, ed25519.Ed25519PublicKey]]) -> list[str]:
    """The ids of the distinct keys with a valid signature on the envelope, for thresholds: a key counts
    once however many signatures it has, and the same key given twice counts once."""
    message = pae(envelope.payload_type, envelope.payload)
    found: list[str] = []
    for keyid, public in keys:
        if keyid in found:
            continue
        for _, signature in envelope.signatures:
            try:
                public.verify(signature, message)
            except InvalidSignature:
                continue
            found.append(keyid)
            break
    return found


def verify(envelope: Envelope, keys: Iterable[tuple[str, ed25519.Ed25519PublicKey]], payload_type: str) -> str:
    """The keyid of a trusted key whose signature verifies; raises SignatureInvalid or EnvelopeInvalid."""
    if envelope.payload_type != payload_type:
        raise EnvelopeInvalid(f"payload type {envelope.payload_type!r}, expected {payload_type!r}")
    message = pae(envelope.payload_type, envelope.payload)
    trusted = list(keys)
    for _keyid, signature in envelope.signatures:
        for trusted_id, public in trusted:
            try:
                public.verify(signature, message)
            except InvalidSignature:
                continue
            return trusted_id
    names = ", ".join(k for k, _ in trusted)
    claimed = ", ".join(sorted({keyid for keyid, _ in envelope.signatures if keyid})) or "no key id"
    raise SignatureInvalid(
        f"the document is signed by {claimed} (as its signatures say), not by a pinned key ({names})"
    )
