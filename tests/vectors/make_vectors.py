"""Regenerate the client test vectors: `python tests/vectors/make_vectors.py [DIR]` (deterministic).

The key is a TEST key made from a fixed seed, published here on purpose: never use it to sign a
real feed. Ed25519 signatures and canonical JSON are deterministic, so these files come out byte
for byte the same every time; a port of the client checks that it accepts and rejects them as
vectors.json says, and plans as it says.
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import FEED_PAYLOAD_TYPE, HEAD_PAYLOAD_TYPE, parse_time
from opos.signing import cosignature, dsse, keydoc, keys

HERE = Path(__file__).resolve().parent
SEED = bytes(range(32))  # the test key's seed
OTHER_SEED = bytes(range(32, 64))
AUDITOR_SEEDS = (bytes(range(64, 96)), bytes(range(96, 128)))  # two TEST auditor keys
ROOT_SEEDS = (bytes(range(128, 160)), bytes(range(160, 192)))  # two TEST root keys, a and b
COMMIT, OTHER_COMMIT = "1" * 40, "2" * 40


def instruction(ident: str, **changes: object) -> dict[str, object]:
    target = {"countries": ["IR"], "networks": ["AS197207"], "platforms": [], "max_probes": None,
              "max_probes_per": "target", "sample": None}  # fmt: skip
    target.update(changes.pop("target", {}))  # type: ignore[call-overload]
    base: dict[str, object] = {
        "id": ident, "kind": "run", "title": f"Vector {ident}", "reason": "A test vector.", "test": "web_connectivity",
        "inputs": ["https://example.org/"], "every": None, "target": target,
        "window": {"start": "2026-12-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"},
        "revision": COMMIT, "signer": "alice@ooni.example",
    }  # fmt: skip
    base.update(changes)
    return base


def feed_payload(commit: str, sequence: int) -> bytes:
    return dsse.canonical_json(
        {
            "type": "opos.feed/v1",
            "commit": commit,
            "sequence": sequence,
            "committed": "2026-12-01T00:00:00Z",
            "instructions": [
                instruction("ir-capped", target={"max_probes": 5}),
                instruction("ir-run"),
                instruction("ir-telegram-2h", kind="schedule", test="telegram", inputs=[], every=7200),
                instruction("mm-sample", target={"countries": ["MM"], "networks": [], "sample": 0.5}),
                instruction("ru-run", target={"countries": ["RU"], "networks": []}),
            ],
        }
    )


def future_feed_payload(commit: str, sequence: int) -> bytes:
    """A feed as a later version might write it: fields this one does not know, a new kind, a new test.

    A probe accepts it, ignores the fields, and skips (and says) the instructions it cannot follow.
    """
    return dsse.canonical_json(
        {
            "type": "opos.feed/v1", "commit": commit, "sequence": sequence, "committed": "2026-12-01T00:00:00Z",
            "publisher": "a later OPOS",
            "instructions": [
                instruction("ir-run", approvers=["bob@ooni.example"], target={"languages": ["fa"]}),
                instruction("ir-survey", kind="survey", questions=["one"]),
                instruction("ir-future-test", test="future_test"),
            ],
        }
    )  # fmt: skip


def head_payload(commit: str, sequence: int, feed: bytes, expires: str, **more: object) -> bytes:
    return dsse.canonical_json(
        {
            "type": "opos.head/v1", "commit": commit, "sequence": sequence,
            "feed_sha256": hashlib.sha256(feed).hexdigest(), "issued": "2026-12-01T00:00:00Z", "expires": expires,
            **more,
        }
    )  # fmt: skip


def main(out: Path = HERE) -> None:
    key = ed25519.Ed25519PrivateKey.from_private_bytes(SEED)
    other = ed25519.Ed25519PrivateKey.from_private_bytes(OTHER_SEED)
    keyid = keys.key_id(key.public_key())
    (out / "key.pub").write_text(keys.public_line(key.public_key(), "opos TEST VECTOR key, never trust it"))

    def sign(payload_type: str, payload: bytes, with_key: ed25519.Ed25519PrivateKey = key) -> bytes:
        return dsse.sign(payload_type, payload, with_key, keyid).to_bytes()

    feed = sign(FEED_PAYLOAD_TYPE, feed_payload(COMMIT, 7))
    files = {
        "feed.json": feed,
        "head.json": sign(HEAD_PAYLOAD_TYPE, head_payload(COMMIT, 7, feed, "2030-01-01T00:00:00Z")),
        "head-expired.json": sign(HEAD_PAYLOAD_TYPE, head_payload(COMMIT, 7, feed, "2026-12-31T00:00:00Z")),
        "head-other-key.json": sign(HEAD_PAYLOAD_TYPE, head_payload(COMMIT, 7, feed, "2030-01-01T00:00:00Z"), other),
        "feed-other-commit.json": sign(FEED_PAYLOAD_TYPE, feed_payload(OTHER_COMMIT, 7)),
    }
    future = sign(FEED_PAYLOAD_TYPE, future_feed_payload(COMMIT, 7))
    files["feed-future.json"] = future
    files["head-future.json"] = sign(
        HEAD_PAYLOAD_TYPE, head_payload(COMMIT, 7, future, "2030-01-01T00:00:00Z", cosignatures="v1/later.json")
    )
    tampered = json.loads(files["head.json"])
    tampered["payload"] = base64.b64encode(
        base64.b64decode(tampered["payload"]).replace(b'"sequence":7', b'"sequence":8')
    ).decode()
    files["head-tampered.json"] = dsse.canonical_json(tampered)
    files.update(cosignatures(feed))
    files.update(key_chain(key, other))
    for name, data in files.items():
        (out / name).write_bytes(data)


def key_chain(feed: ed25519.Ed25519PrivateKey, other: ed25519.Ed25519PrivateKey) -> dict[str, bytes]:
    """Key documents: root a, then a and b, then b alone (a root rotated in two steps), and the bad ones."""
    a, b = (ed25519.Ed25519PrivateKey.from_private_bytes(seed) for seed in ROOT_SEEDS)
    root_a, root_b = keydoc.Key.of(a.public_key()), keydoc.Key.of(b.public_key())
    feed_key, other_key = keydoc.Key.of(feed.public_key()), keydoc.Key.of(other.public_key())
    later = parse_time("2030-01-01T00:00:00Z")
    one = keydoc.KeyDocument(1, later, (root_a,), 1, (feed_key,))
    two = keydoc.KeyDocument(2, later, (root_a, root_b), 1, (feed_key,))
    three = keydoc.KeyDocument(3, later, (root_b,), 1, (feed_key,))
    expired = keydoc.KeyDocument(4, parse_time("2026-12-15T00:00:00Z"), (root_b,), 1, (feed_key,))
    revoked = keydoc.KeyDocument(4, later, (root_b,), 1, (other_key,))
    strict = keydoc.KeyDocument(2, later, (root_a, root_b), 2, (feed_key,))
    duplicate = json.loads(keydoc.sign(strict, [a]))
    # a's signature twice, the second under b's keyid: one key, counted once
    duplicate["signatures"].append({**duplicate["signatures"][0], "keyid": root_b.keyid})
    return {
        "root-a.pub": keys.public_line(a.public_key(), "opos TEST root a").encode(),
        "root-b.pub": keys.public_line(b.public_key(), "opos TEST root b").encode(),
        "keys-1.json": keydoc.sign(one, [a]),
        "keys-2.json": keydoc.sign(two, [a]),
        "keys-3.json": keydoc.sign(three, [b]),
        "keys-3-old-root-only.json": keydoc.sign(three, [a]),
        "keys-4-expired.json": keydoc.sign(expired, [b]),
        "keys-4-revoked.json": keydoc.sign(revoked, [b]),
        "keys-2-duplicate.json": dsse.canonical_json(duplicate),
    }


def cosignatures(feed: bytes) -> dict[str, bytes]:
    """The auditors' keys and cosignatures of head.json's commit: enough, too few, one key twice, another commit."""
    auditors = [ed25519.Ed25519PrivateKey.from_private_bytes(seed) for seed in AUDITOR_SEEDS]
    files = {f"auditor-{n}.pub": keys.public_line(a.public_key(), f"opos TEST auditor {n}").encode()
             for n, a in enumerate(auditors, 1)}  # fmt: skip
    digest = hashlib.sha256(feed).hexdigest()
    statement = cosignature.Statement(COMMIT, 7, digest)
    both = [cosignature.cosign(statement, a) for a in auditors]
    files["cosignature.json"] = cosignature.combine(statement, both)
    files["cosignature-one.json"] = both[0]
    once = json.loads(both[0])
    # one key's signature twice, the second under the other auditor's keyid: it still counts once
    once["signatures"].append({**once["signatures"][0], "keyid": keys.key_id(auditors[1].public_key())})
    files["cosignature-duplicate.json"] = dsse.canonical_json(once)
    other = cosignature.Statement(OTHER_COMMIT, 7, digest)
    files["cosignature-other-commit.json"] = cosignature.combine(
        other, [cosignature.cosign(other, a) for a in auditors]
    )
    return files


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
