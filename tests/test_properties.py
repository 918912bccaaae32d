"""Round trips that must hold for every input: sign and verify, render and parse."""

from __future__ import annotations

import base64
import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from opos.errors import SignatureInvalid
from opos.signing import dsse, sshsig
from opos.signing.keys import key_id, public_key_blob

KEY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes(32))
OTHER = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([1] * 32))
MOMENT = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


@given(st.binary(max_size=2048), st.text(min_size=1, max_size=60))
def test_dsse_sign_then_verify(payload: bytes, payload_type: str) -> None:
    envelope = dsse.parse(dsse.sign(payload_type, payload, KEY, "k").to_bytes())
    assert envelope.payload == payload
    assert dsse.verify(envelope, [(key_id(KEY.public_key()), KEY.public_key())], payload_type)
    with pytest.raises(SignatureInvalid):
        dsse.verify(envelope, [("other", OTHER.public_key())], payload_type)


@given(
    st.binary(min_size=1, max_size=2048),
    st.integers(min_value=0, max_value=2047),
    st.integers(min_value=1, max_value=255),
)
def test_dsse_any_changed_byte_is_caught(payload: bytes, where: int, flip: int) -> None:
    envelope = dsse.sign("t", payload, KEY, "k")
    index = where % len(payload)
    changed = payload[:index] + bytes([payload[index] ^ flip]) + payload[index + 1 :]
    forged = dsse.Envelope("t", changed, envelope.signatures)
    with pytest.raises(SignatureInvalid):
        dsse.verify(forged, [("k", KEY.public_key())], "t")


@settings(max_examples=50)
@given(st.binary(max_size=4096))
def test_sshsig_sign_then_verify(message: bytes) -> None:
    line = f"me@x ssh-ed25519 {base64.b64encode(public_key_blob(KEY.public_key())).decode()}"
    signers, _ = sshsig.parse_allowed_signers(line.encode())
    armored = sshsig.sign_ed25519(KEY, message)
    assert sshsig.verify(armored, message, signers, MOMENT).principal == "me@x"
    with pytest.raises(SignatureInvalid):
        sshsig.verify(armored, message + b"!", signers, MOMENT)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
)


@given(JSON_VALUES)
def test_canonical_json_is_stable(value: object) -> None:
    encoded = dsse.canonical_json(value)
    assert dsse.canonical_json(json.loads(encoded)) == encoded
