"""The published client test vectors (tests/vectors/): what a port must accept, reject and plan."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from opos.errors import UntrustedDataError
from opos.instructions import resources, targeting
from opos.model import parse_time
from opos.probe import plan
from opos.probe.errors import Rejected
from opos.probe.verify import Pin, check_feed, check_head
from opos.signing import cosignature, keydoc
from opos.signing.keys import key_id, load_public

HERE = Path(__file__).parent / "vectors"
VECTORS: dict[str, Any] = json.loads((HERE / "vectors.json").read_text())
KEYS = [load_public(HERE / "key.pub")]
NOW = parse_time(VECTORS["now"])
SKEW = dt.timedelta(seconds=VECTORS["clock_skew"])


def test_the_envelopes_are_reproducible(tmp_path: Path) -> None:
    """make_vectors.py gives the same bytes again: the files are what the generator says."""
    import subprocess
    import sys

    subprocess.run([sys.executable, str(HERE / "make_vectors.py"), str(tmp_path)], check=True)
    made = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert made == {name: (HERE / name).read_bytes() for name in made} and len(made) == 24


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: f"{c['head']}+{c['feed']}+{c['pin']}")
def test_cases(case: dict[str, Any]) -> None:
    pin = Pin(**case["pin"]) if case["pin"] else None
    head_bytes, feed_bytes = (HERE / case["head"]).read_bytes(), (HERE / case["feed"]).read_bytes()
    if case["accept"]:
        head = check_head(head_bytes, KEYS, NOW, SKEW, pin)
        assert check_feed(feed_bytes, head, KEYS).commit == head.commit
        return
    with pytest.raises((Rejected, UntrustedDataError)) as caught:
        check_feed(feed_bytes, check_head(head_bytes, KEYS, NOW, SKEW, pin), KEYS)
    assert case["reason"] in str(caught.value)


@pytest.mark.parametrize("case", VECTORS["cosignature_cases"], ids=lambda c: f"{c['cosignatures']}-{c['required']}")
def test_cosignature_cases(case: dict[str, Any]) -> None:
    head = check_head((HERE / case["head"]).read_bytes(), KEYS, NOW, SKEW, None)
    statement = cosignature.Statement(head.commit, head.sequence, head.feed_sha256)
    auditors = [load_public(HERE / name) for name in case["auditors"]]
    data = (HERE / case["cosignatures"]).read_bytes()
    if case["accept"]:
        assert len(cosignature.require(data, statement, auditors, case["required"])) >= case["required"]
        return
    with pytest.raises(UntrustedDataError) as caught:
        cosignature.require(data, statement, auditors, case["required"])
    assert case["reason"] in str(caught.value)


@pytest.mark.parametrize("case", VECTORS["key_cases"], ids=lambda c: f"{c['walk'][-1]}-{c.get('reason', 'ok')}")
def test_key_cases(case: dict[str, Any]) -> None:
    roots = [keydoc.Key.of(load_public(HERE / name)) for name in case["roots"]]

    def walk() -> keydoc.KeyDocument:
        documents = [(HERE / name).read_bytes() for name in case["walk"]]
        trusted = keydoc.first(documents[0], roots)
        for data in documents[1:]:
            trusted = keydoc.following(trusted, data)
        if "offered" in case and keydoc.read((HERE / case["offered"]).read_bytes())[1].version < trusted.version:
            raise Rejected("rollback: a lower version than the trusted one")
        if trusted.expired(NOW, SKEW):
            raise Rejected(f"the key document expired at {trusted.expires}")
        return trusted

    if not case["accept"]:
        with pytest.raises(UntrustedDataError) as caught:
            walk()
        assert case["reason"] in str(caught.value)
        return
    document = walk()
    head = (HERE / case["head"]).read_bytes()
    if case["head_accept"]:
        check_head(head, document.feed_public_keys(), NOW, SKEW, None)
        return
    with pytest.raises(UntrustedDataError) as refused:
        check_head(head, document.feed_public_keys(), NOW, SKEW, None)
    assert case["reason"] in str(refused.value)


def test_the_cosignatures_verify_with_securesystemslib() -> None:
    """Another DSSE implementation agrees: both auditors' signatures in cosignature.json, one in -duplicate."""
    sslib_keys = []
    for name in ("auditor-1.pub", "auditor-2.pub"):
        public = load_public(HERE / name)
        sslib_keys.append(SSlibKey(key_id(public), "ed25519", "ed25519", {"public": public.public_bytes_raw().hex()}))
    both = SslibEnvelope.from_dict(json.loads((HERE / "cosignature.json").read_bytes()))
    assert set(both.verify(sslib_keys, 2)) == {k.keyid for k in sslib_keys}
    duplicate = SslibEnvelope.from_dict(json.loads((HERE / "cosignature-duplicate.json").read_bytes()))
    with pytest.raises(VerificationError):
        duplicate.verify(sslib_keys, 2)


@pytest.mark.parametrize("sample", VECTORS["sample_points"], ids=lambda s: s["probe_id"])
def test_sample_points(sample: dict[str, Any]) -> None:
    assert targeting.sample_point(sample["probe_id"], sample["instruction"]) == sample["point"]


def test_the_plan() -> None:
    head = check_head((HERE / "head.json").read_bytes(), KEYS, NOW, SKEW, None)
    feed = check_feed((HERE / "feed.json").read_bytes(), head, KEYS)
    probe = plan.Probe(**VECTORS["probe"])
    applicable = plan.applicable(feed, probe, NOW)
    runs = [
        {"instruction": e.id, "revision": e.revision, "test": e.instruction.test, "inputs": list(e.instruction.inputs),
         "capped": e.instruction.target.max_probes is not None}
        for e in plan.pending_runs(applicable, {})
    ]  # fmt: skip
    assert runs == VECTORS["plan"]["runs"]
    assert [e.to_json() for e in plan.schedule(applicable, VECTORS["defaults"])] == VECTORS["plan"]["schedule"]
    for run in plan.pending_runs(applicable, {}):
        assert 0 <= plan.jitter(run, NOW, 900, random.Random(1)) <= 900


def test_a_feed_from_a_later_version_is_followed_as_far_as_this_probe_can() -> None:
    """Unknown fields are ignored; an unknown kind or a test the probe lacks is skipped and said."""
    head = check_head((HERE / "head-future.json").read_bytes(), KEYS, NOW, SKEW, None)
    feed = check_feed((HERE / "feed-future.json").read_bytes(), head, KEYS)
    applicable = plan.applicable(feed, plan.Probe(**VECTORS["probe"]), NOW)
    usable, skipped = plan.followable(applicable, resources.nettests())
    expected = VECTORS["plan_future"]
    assert [e.id for e in plan.pending_runs(usable, {})] == expected["runs"]
    assert [item.to_json() for item in skipped] == expected["skipped"]
