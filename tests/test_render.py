"""The signed feed: canonical bytes, head, independent DSSE verification, refusals, verify-feed."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.instructions import resources
from opos.publish.site import publish
from opos.signing import keys as feed_keys
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification


@pytest.fixture(scope="module")
def feed_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feedkey") / "feed-key"
    assert opos("keygen", "--out", path).code == 0
    return path


def render(repo: LedgerRepo, key: Path, out: Path, *extra: str) -> tuple[int, str, str]:
    result = opos("render", "--repo", repo.path, "--key", key, "--out", out, *extra)
    assert "Traceback" not in result.err
    return result.code, result.out, result.err


def payload(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(base64.b64decode(json.loads(path.read_bytes())["payload"]))


def test_render_writes_the_site(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key: Path, tmp_path: Path
) -> None:
    first = ledger_repo.head()
    ledger_repo.write(
        "ledger/instructions/second-one.yaml",
        instruction("second-one", target="\n  countries: [no, ir]\n  networks: [12880]"),
    )
    commit = ledger_repo.commit("Add second", keys["alice"], "2026-11-02T10:00:00+02:00")
    out = tmp_path / "site"
    code, _, _ = render(ledger_repo, feed_key, out)
    assert code == 0
    feed_file = out / "v1" / "feed" / f"{commit}.json"
    assert feed_file.read_bytes() == (out / "v1" / "feed.json").read_bytes()
    feed = payload(feed_file)
    assert feed["type"] == "opos.feed/v1" and feed["commit"] == commit and feed["sequence"] == 1
    assert feed["committed"] == "2026-11-02T08:00:00Z"
    assert [i["id"] for i in feed["instructions"]] == ["first-one", "second-one"]
    second = feed["instructions"][1]
    assert second["target"]["countries"] == ["NO", "IR"] and second["target"]["networks"] == ["AS12880"]
    assert second["revision"] == commit and second["signer"] == "alice@ooni.example"
    assert feed["instructions"][0]["revision"] == first
    assert second["every"] is None and second["target"]["max_probes"] is None and second["target"]["platforms"] == []
    resources.validator("feed").validate(feed)
    head = payload(out / "v1" / "head.json")
    resources.validator("head").validate(head)
    assert head["commit"] == commit and head["sequence"] == 1
    assert head["feed_sha256"] == hashlib.sha256(feed_file.read_bytes()).hexdigest()
    assert head["expires"] > head["issued"]
    # canonical JSON: sorted keys, no white space
    raw = base64.b64decode(json.loads(feed_file.read_bytes())["payload"])
    assert raw == json.dumps(feed, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_rendering_is_byte_identical(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    ledger_repo.git("clone", "-q", str(ledger_repo.path), str(clone))
    assert render(ledger_repo, feed_key, tmp_path / "a")[0] == 0
    result = opos("render", "--repo", clone, "--key", feed_key, "--out", tmp_path / "b")
    assert result.code == 0
    name = f"v1/feed/{ledger_repo.head()}.json"
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_an_independent_dsse_implementation_verifies(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path) -> None:
    render(ledger_repo, feed_key, tmp_path / "site")
    public = feed_keys.load_public(Path(f"{feed_key}.pub"))
    keyid = feed_keys.key_id(public)
    sslib_key = SSlibKey(keyid, "ed25519", "ed25519", {"public": public.public_bytes_raw().hex()})
    for name in ("feed.json", "head.json"):
        envelope = SslibEnvelope.from_dict(json.loads((tmp_path / "site" / "v1" / name).read_bytes()))
        accepted = envelope.verify([sslib_key], 1)
        assert keyid in accepted


def test_render_refuses_an_unverified_revision(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    bad = ledger_repo.commit("Unsigned", None)
    code, _, err = render(ledger_repo, feed_key, tmp_path / "site")
    assert code == 1 and bad in err and "unsigned" in err
    assert not (tmp_path / "site").exists()


def test_render_refuses_invalid_instructions(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key: Path, tmp_path: Path
) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one", test="web_conectivity"))
    ledger_repo.commit("Signed but invalid", keys["alice"])
    code, _, err = render(ledger_repo, feed_key, tmp_path / "site")
    assert code == 1 and "ledger/instructions/second-one.yaml:5: test:" in err and "web_connectivity" in err


def test_older_commit_adds_its_pinned_feed_only(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key: Path, tmp_path: Path
) -> None:
    old = ledger_repo.head()
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    new = ledger_repo.commit("Add second", keys["alice"])
    out = tmp_path / "site"
    assert render(ledger_repo, feed_key, out)[0] == 0
    code, text, _ = render(ledger_repo, feed_key, out, "--rev", old)
    assert code == 0 and "older than the published head" in text
    assert (out / "v1" / "feed" / f"{old}.json").exists()
    assert payload(out / "v1" / "head.json")["commit"] == new


def test_the_published_commit_rendered_again_renews_its_head_and_log_and_rewrites_no_feed(
    ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path
) -> None:
    """A scheduled render of the served commit (the Pages workflow, six-hourly) judges nothing and pins nothing."""
    out = tmp_path / "site"
    assert render(ledger_repo, feed_key, out)[0] == 0
    feed = out / "v1" / "feed" / f"{ledger_repo.head()}.json"
    pinned, before = feed.stat().st_mtime_ns, payload(out / "v1" / "head.json")
    (out / "v1" / "log.json").unlink()
    state = ledger_repo.path / ".git" / "opos"
    journal = next(state.glob("checked-*"))
    journal.write_bytes(b"not read\n")  # a run that judged something would skip this line and append
    code, text, _ = render(ledger_repo, feed_key, out, "--head-ttl", "2d")
    assert code == 0 and "renewed; its feed was already" in text
    head = payload(out / "v1" / "head.json")
    assert head["commit"] == before["commit"] and head["expires"] != before["expires"]
    assert feed.stat().st_mtime_ns == pinned and (out / "v1" / "log.json").exists()
    assert journal.read_bytes() == b"not read\n"  # nothing judged, nothing saved
    other = tmp_path / "other-key"
    assert opos("keygen", "--out", other).code == 0  # another key: the served head is not ours to renew
    code, text, _ = render(ledger_repo, other, out)
    assert code == 0 and "renewed" not in text and "published as the head" in text
    assert feed.stat().st_mtime_ns != pinned


def test_render_refuses_rewritten_history(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key: Path, tmp_path: Path
) -> None:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    published = ledger_repo.commit("Add second", keys["alice"])
    out = tmp_path / "site"
    render(ledger_repo, feed_key, out)
    ledger_repo.git("reset", "-q", "--hard", "HEAD~1")
    ledger_repo.write("ledger/instructions/other-one.yaml", instruction("other-one"))
    ledger_repo.commit("Rewritten", keys["alice"])
    code, _, err = render(ledger_repo, feed_key, out)
    assert code == 1 and "history rewritten" in err and published in err
    assert payload(out / "v1" / "head.json")["commit"] == published


def test_verify_feed_prints_the_payload(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path) -> None:
    render(ledger_repo, feed_key, tmp_path / "site")
    result = opos("verify-feed", tmp_path / "site" / "v1" / "feed.json", "--key", f"{feed_key}.pub")
    assert result.code == 0 and json.loads(result.out)["commit"] == ledger_repo.head()
    result = opos("verify-feed", tmp_path / "site" / "v1" / "head.json", "--key", f"{feed_key}.pub")
    assert result.code == 0 and json.loads(result.out)["type"] == "opos.head/v1"


def _tampered(envelope: dict, how: str, other_key: Path) -> bytes:  # type: ignore[type-arg]
    from opos.signing import dsse

    raw = base64.b64decode(envelope["payload"])
    if how == "one byte":
        raw = raw.replace(b'"sequence":0', b'"sequence":9')
        envelope = {**envelope, "payload": base64.b64encode(raw).decode()}
    elif how == "re-encoded":
        pretty = json.dumps(json.loads(raw), indent=1).encode()
        envelope = {**envelope, "payload": base64.b64encode(pretty).decode()}
    elif how == "no signature":
        envelope = {**envelope, "signatures": []}
    elif how == "wrong payload type":
        envelope = {**envelope, "payloadType": "application/vnd.in-toto+json"}
    elif how == "wrong key":
        signed = dsse.sign(envelope["payloadType"], raw, feed_keys.load_private(other_key), "x")
        return signed.to_bytes()
    elif how == "not json":
        return b"<html>blocked</html>"
    return json.dumps(envelope).encode()


@pytest.mark.parametrize(
    "how", ["one byte", "re-encoded", "no signature", "wrong payload type", "wrong key", "not json"]
)
def test_verify_feed_rejects_tampering(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path, how: str) -> None:
    render(ledger_repo, feed_key, tmp_path / "site")
    other = tmp_path / "other-key"
    opos("keygen", "--out", other)
    envelope = json.loads((tmp_path / "site" / "v1" / "feed.json").read_bytes())
    bad = tmp_path / "bad.json"
    bad.write_bytes(_tampered(envelope, how, other))
    result = opos("verify-feed", bad, "--key", f"{feed_key}.pub")
    assert result.code == 1 and result.out == "" and result.err.strip()
    assert "Traceback" not in result.err


def test_verify_feed_rejects_an_expired_head(ledger_repo: LedgerRepo, feed_key: Path, tmp_path: Path) -> None:
    """A head issued 25 hours ago with a 24-hour life is past even the probes' clock-skew allowance."""
    site = tmp_path / "site"
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(hours=25)
    with GitLedger(ledger_repo.path) as ledger:
        head = ledger.resolve("HEAD")
        publish(Verification.open(ledger, head, None), head, feed_keys.load_private(feed_key), site, issued)
    result = opos("verify-feed", site / "v1" / "head.json", "--key", f"{feed_key}.pub")
    assert result.code == 1 and "expired" in result.err
    fresh = tmp_path / "fresh"
    render(ledger_repo, feed_key, fresh, "--head-ttl", "1s")  # expired a second later, within the allowance
    assert opos("verify-feed", fresh / "v1" / "head.json", "--key", f"{feed_key}.pub").code == 0


def test_render_with_a_bad_key_file(ledger_repo: LedgerRepo, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")
    code, _, err = render(ledger_repo, garbage, tmp_path / "site")
    assert code == 1 and "opos keygen" in err
    code, _, err = render(ledger_repo, tmp_path / "missing", tmp_path / "site")
    assert code == 1 and "cannot read the key" in err
