"""Key documents for real: `opos keys` on a ledger with signed commits, `opos check` and `opos verify`, and
probes with pinned root keys polling real HTTP mirrors while the feed key rotates and attackers lie."""

from __future__ import annotations

import base64
import datetime as dt
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.probe import ClientConfig, Mirror, TrustAnchors, poll
from opos.probe.plan import Plan
from opos.publish import render
from opos.signing import keydoc
from opos.signing import keys as feed_keys
from servers import Mirror as StaticMirror


@pytest.fixture
def key_files(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("root-a", "root-b", "feed-a", "feed-b"):
        made[name] = tmp_path / name
        assert opos("keygen", "--out", made[name]).code == 0
    return made


def keyid(path: Path) -> str:
    return feed_keys.key_id(feed_keys.load_public(Path(f"{path}.pub")))


def keys_command(*args: Any) -> None:
    result = opos("keys", *args)
    assert result.code == 0, result.err


def committed(repo: LedgerRepo, key: SshKey, message: str) -> str:
    return repo.commit(message, key)


def init_with_root_a(ledger: Path, key_files: dict[str, Path]) -> None:
    """Version 1: root a alone (threshold 1), feed key a."""
    keys_command("init", "--root", key_files["root-a"], "--root-threshold", "1", "--feed-key",
                 f"{key_files['feed-a']}.pub", "--ledger", ledger)  # fmt: skip


def probe(mirror: str, roots: list[Path], state: Path) -> Plan:
    config = ClientConfig(
        mirrors=[Mirror(mirror)], country="IR", network="AS197207", state_dir=state,
        trust=TrustAnchors(root_keys=tuple(keydoc.Key.of(feed_keys.load_public(Path(f"{r}.pub"))) for r in roots)),
    )  # fmt: skip
    return poll(config)


def render_site(repo: LedgerRepo, feed_key: Path, site: Path) -> None:
    result = opos("render", "--repo", repo.path, "--key", feed_key, "--out", site)
    assert result.code == 0, result.err


def test_keys_commands_check_and_verify(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path]
) -> None:
    ledger = ledger_repo.path / "ledger"
    keys_command("init", "--root", key_files["root-a"], "--root", key_files["root-b"], "--root-threshold", "2",
                 "--feed-key", f"{key_files['feed-a']}.pub", "--ledger", ledger)  # fmt: skip
    committed(ledger_repo, keys["alice"], "Key document version 1")
    # version 2 signed by one root holder, then by the second with `opos keys sign`
    half = opos("keys", "rotate", "--root", key_files["root-a"], "--add-feed-key", f"{key_files['feed-b']}.pub",
                "--ledger", ledger)  # fmt: skip
    assert half.code == 0 and "not complete yet" in half.err
    assert opos("check", "--repo", ledger_repo.path).code == 1  # a version not signed by enough roots
    keys_command("sign", "--root", key_files["root-b"], "--ledger", ledger)
    assert opos("check", "--repo", ledger_repo.path).code == 0
    committed(ledger_repo, keys["alice"], "Key document version 2")
    assert opos("verify", "--repo", ledger_repo.path).code == 0
    log = opos("log", "--repo", ledger_repo.path).out
    assert "keys-rotated key document version 2: feed_keys changed" in log
    # a version that does not follow is refused by check
    keys_command("rotate", "--root", key_files["root-a"], "--root", key_files["root-b"], "--ledger", ledger)
    (ledger / "keys" / "3.json").rename(ledger / "keys" / "4.json")
    assert "versions 3 are missing" in opos("check", "--repo", ledger_repo.path).out
    (ledger / "keys" / "4.json").unlink()
    # a commit that changes a committed version (validly re-signed) breaks the chain's history
    original = keydoc.read((ledger / "keys" / "2.json").read_bytes())[1]
    roots = [feed_keys.load_private(key_files["root-a"]), feed_keys.load_private(key_files["root-b"])]
    later = dt.datetime(2031, 1, 1, tzinfo=dt.UTC)
    (ledger / "keys" / "2.json").write_bytes(keydoc.sign(replace(original, expires=later), roots))
    assert opos("check", "--repo", ledger_repo.path).code == 0  # a chain in itself
    bad = committed(ledger_repo, keys["alice"], "Rewrite version 2")
    verify = opos("verify", "--repo", ledger_repo.path)
    assert verify.code == 1 and bad in verify.out and "was changed or removed" in verify.out


def test_probes_follow_a_feed_key_rotation_and_refuse_the_revoked_key(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path], tmp_path: Path
) -> None:
    ledger, site, state = ledger_repo.path / "ledger", tmp_path / "site", tmp_path / "probe"
    roots = [key_files["root-a"]]
    init_with_root_a(ledger, key_files)
    commits = [committed(ledger_repo, keys["alice"], "Keys: version 1")]
    render_site(ledger_repo, key_files["feed-a"], site)
    mirror = StaticMirror.of_site(site)
    try:

        def poll_again() -> Plan:
            mirror.files = StaticMirror.of_site(site).files
            plan = probe(mirror.url, roots, state)
            assert plan.commit == commits[-1], plan.rejected  # no probe stops working at any step
            return plan

        poll_again()
        # 1. add feed key b beside a; 2. sign with b; 3. remove a
        keys_command("rotate", "--root", key_files["root-a"], "--add-feed-key", f"{key_files['feed-b']}.pub",
                     "--ledger", ledger)  # fmt: skip
        commits.append(committed(ledger_repo, keys["alice"], "Keys: version 2, feed key b"))
        render_site(ledger_repo, key_files["feed-a"], site)
        poll_again()
        ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
        commits.append(committed(ledger_repo, keys["alice"], "Add second-one"))
        render_site(ledger_repo, key_files["feed-b"], site)
        poll_again()
        refused = opos("render", "--repo", ledger_repo.path, "--key", key_files["feed-a"], "--out", tmp_path / "x")
        assert refused.code == 0  # a is still listed in version 2
        keys_command("rotate", "--root", key_files["root-a"], "--remove-feed-key", keyid(key_files["feed-a"]),
                     "--ledger", ledger)  # fmt: skip
        commits.append(committed(ledger_repo, keys["alice"], "Keys: version 3, feed key a revoked"))
        render_site(ledger_repo, key_files["feed-b"], site)
        assert json.loads((state / "keys.json").read_bytes()) and poll_again()
        assert keydoc.read((state / "keys.json").read_bytes())[1].version == 3
        no_longer = opos("render", "--repo", ledger_repo.path, "--key", key_files["feed-a"], "--out", tmp_path / "y")
        assert no_longer.code == 1 and "is not in key document version 3" in no_longer.err
        # a thief with feed key a signs a newer head: validly signed, refused since version 3
        feed = (site / "v1" / f"feed/{commits[-1]}.json").read_bytes()
        stolen = feed_keys.load_private(key_files["feed-a"])
        head = render.sign("head", render.head_payload(commits[-1], 99, feed, dt.datetime.now(dt.UTC)), stolen)
        mirror.files["/v1/head.json"] = head
        kept = probe(mirror.url, roots, state)
        assert kept.source == "cache" and kept.commit == commits[-1]
        assert "not by a pinned key" in str(kept.rejected)
    finally:
        mirror.stop()


def test_attacks_on_the_key_chain_keep_the_trusted_document_and_the_cache(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path], tmp_path: Path
) -> None:
    ledger, site, state = ledger_repo.path / "ledger", tmp_path / "site", tmp_path / "probe"
    roots = [key_files["root-a"]]
    init_with_root_a(ledger, key_files)
    keys_command("rotate", "--root", key_files["root-a"], "--ledger", ledger)
    commit = committed(ledger_repo, keys["alice"], "Keys: versions 1 and 2")
    render_site(ledger_repo, key_files["feed-a"], site)
    honest = StaticMirror.of_site(site).files
    mirror = StaticMirror(honest)
    try:
        assert probe(mirror.url, roots, state).commit == commit
        assert keydoc.read((state / "keys.json").read_bytes())[1].version == 2
        a, b = feed_keys.load_private(key_files["root-a"]), feed_keys.load_private(key_files["root-b"])
        current = keydoc.read(honest["/v1/keys.json"])[1]
        later = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)

        def next_version(signers: list[Any], **changes: Any) -> bytes:
            return keydoc.sign(replace(current, **{"version": 3, "expires": later, **changes}), signers)

        attacks = {
            "rollback": {"/v1/keys.json": honest["/v1/keys/1.json"]},
            "signed by a key that is not a root": {"/v1/keys.json": next_version([b]),
                                                   "/v1/keys/3.json": next_version([b])},
            "a skipped version": {"/v1/keys.json": next_version([a], version=4),
                                  "/v1/keys/3.json": next_version([a], version=4)},
            "expired": {"/v1/keys.json": next_version([a], expires=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)),
                        "/v1/keys/3.json": next_version([a], expires=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))},
            "a fork of the trusted version": {"/v1/keys.json": keydoc.sign(replace(current, expires=later), [a])},
            "nested": {"/v1/keys.json": b"[" * 60_000},
            "huge": {"/v1/keys.json": b" " * 10 * 1024 * 1024},
            "a huge version in the chain": {"/v1/keys.json": next_version([a], version=4),
                                            "/v1/keys/3.json": b" " * 10 * 1024 * 1024},
        }  # fmt: skip
        reasons = {
            "rollback": "rollback", "signed by a key that is not a root": "signed by 0 of version 2's root keys",
            "a skipped version": "expected key document version 3, got 4", "expired": "expired",
            "a fork of the trusted version": "a fork", "nested": "nested too deeply", "huge": "the limit is 65536",
            "a huge version in the chain": "v1/keys/3.json is 10485760 bytes; the limit is 65536",
        }  # fmt: skip
        for name, files in attacks.items():
            mirror.files = {**honest, **files}
            plan = probe(mirror.url, roots, state)
            assert plan.commit == commit, name  # the cache, or the same head with the trusted keys
            assert reasons[name] in str(plan.rejected), (name, plan.rejected)
            assert keydoc.read((state / "keys.json").read_bytes())[1].version == 2, name  # kept
        # a chain of 10,000 versions: a poll walks 32 of them, trusts each on the way, and says where it stopped
        chain = {f"/v1/keys/{n}.json": next_version([a], version=n) for n in range(3, 3 + keydoc.MAX_WALK)}
        mirror.files = {**honest, **chain, "/v1/keys.json": next_version([a], version=10_000)}
        plan = probe(mirror.url, roots, state)
        assert plan.commit == commit
        assert "a poll walks at most 32 versions (the probe's limit), so version 34 is trusted now" in str(
            plan.rejected), plan.rejected  # fmt: skip
        assert keydoc.read((state / "keys.json").read_bytes())[1].version == 34
    finally:
        mirror.stop()


def test_a_probe_bootstraps_only_from_its_pinned_roots(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path], tmp_path: Path
) -> None:
    ledger, site = ledger_repo.path / "ledger", tmp_path / "site"
    init_with_root_a(ledger, key_files)
    commit = committed(ledger_repo, keys["alice"], "Keys: version 1")
    render_site(ledger_repo, key_files["feed-a"], site)
    mirror = StaticMirror.of_site(site)
    try:
        wrong = probe(mirror.url, [key_files["root-b"]], tmp_path / "wrong")
        assert wrong.commit is None and "not the pinned root keys" in str(wrong.rejected)
        right = probe(mirror.url, [key_files["root-a"]], tmp_path / "right")
        assert right.commit == commit
        cli = opos("probe", "--mirror", mirror.url, "--root-key", f"{key_files['root-a']}.pub", "--country", "IR",
                   "--network", "AS197207", "--state", tmp_path / "cli", "--json")  # fmt: skip
        assert cli.code == 0 and json.loads(cli.out)["commit"] == commit
        both = opos("probe", "--mirror", mirror.url, "--root-key", f"{key_files['root-a']}.pub", "--key",
                    f"{key_files['feed-a']}.pub", "--country", "IR", "--network", "AS197207")  # fmt: skip
        assert both.code == 2 and "not both" in both.err
    finally:
        mirror.stop()


@pytest.mark.slow
def test_the_service_publishes_the_chain_and_warns_a_month_before_it_expires(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], key_files: dict[str, Path],
    start_service: Any, feed_key_file: Path,
) -> None:  # fmt: skip
    repo, url = published_ledger
    keys_command("init", "--root", key_files["root-a"], "--root-threshold", "1", "--feed-key",
                 f"{feed_key_file}.pub", "--expires", "10d", "--ledger", repo.path / "ledger")  # fmt: skip
    commit = committed(repo, keys["alice"], "Keys: version 1, for ten days")
    repo.git("push", "-q", "origin", "main")
    service = start_service(url)
    service.wait_for(lambda: service.served_commit() == commit, 60, "the commit with its key document")
    assert service.get("/v1/keys.json").body == service.get("/v1/keys/1.json").body
    health = service.get("/healthz").json()
    assert (
        health["status"] == "ok" and "expires" in health["warnings"][0] and "opos keys rotate" in health["warnings"][0]
    )
    metrics = service.get("/metrics").body.decode()
    assert "opos_key_document_expiry_timestamp_seconds" in metrics
    assert "the key document expires at" in service.log.read_text()  # the sync logs it too


def test_render_refuses_a_head_that_the_key_document_wants_cosigned_when_no_auditor_is_asked(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path], tmp_path: Path
) -> None:
    """CI stayed green while it rendered a Pages site that every probe pinning the root refused."""
    ledger = ledger_repo.path / "ledger"
    auditor = tmp_path / "auditor"
    assert opos("keygen", "--out", auditor).code == 0
    init_with_root_a(ledger, key_files)
    keys_command("rotate", "--root", key_files["root-a"], "--add-auditor", f"{auditor}.pub", "--auditors-required",
                 "1", "--ledger", ledger)  # fmt: skip
    committed(ledger_repo, keys["alice"], "Keys: an auditor is required")
    site = tmp_path / "site"
    result = opos("render", "--repo", ledger_repo.path, "--key", key_files["feed-a"], "--out", site)
    assert result.code == 1
    assert "the key document (version 2) requires 1 auditors' cosignatures" in result.err
    assert "pass --auditor URL (and --auditor-key)" in result.err.replace("Pass", "pass")
    assert not (site / "v1" / "head.json").exists() and not list(site.rglob("*.json"))  # nothing written


def test_auditors_and_audits_that_pin_the_root_follow_a_feed_key_rotation(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], key_files: dict[str, Path], tmp_path: Path
) -> None:
    """Auditors pinned feed keys on their command line: a rotation as documented stopped every cosignature."""
    ledger = ledger_repo.path / "ledger"
    init_with_root_a(ledger, key_files)
    committed(ledger_repo, keys["alice"], "Keys: version 1")
    before, after, other = tmp_path / "before", tmp_path / "after", tmp_path / "other"
    render_site(ledger_repo, key_files["feed-a"], before)
    keys_command("rotate", "--root", key_files["root-a"], "--add-feed-key", f"{key_files['feed-b']}.pub",
                 "--remove-feed-key", keyid(key_files["feed-a"]), "--ledger", ledger)  # fmt: skip
    committed(ledger_repo, keys["alice"], "Keys: the feed key rotated")
    render_site(ledger_repo, key_files["feed-b"], after)
    auditor = tmp_path / "auditor"
    assert opos("keygen", "--out", auditor).code == 0
    pins = ["--root-key", f"{key_files['root-a']}.pub"]
    one_shot = ["--key", auditor, *pins, "--repo", ledger_repo.path, "--state", tmp_path / "state"]
    for site in (before, after):  # no --feed-key: the key documents say which feed key signs each commit
        cosigned = opos("auditor", "cosign", site / "v1" / "feed.json", *one_shot)
        assert cosigned.code == 0, cosigned.err
        audited = opos("audit", site / "v1" / "feed.json", *pins, "--repo", ledger_repo.path)
        assert audited.code == 0 and "byte for byte" in audited.out, audited.err
    payload = base64.b64decode(json.loads((after / "v1" / "feed.json").read_bytes())["payload"])
    forged = render.sign("feed", payload, feed_keys.load_private(key_files["feed-a"]))  # the old key, unlisted now
    (other / "v1").mkdir(parents=True)
    (other / "v1" / "feed.json").write_bytes(forged)
    refused = opos("auditor", "cosign", other / "v1" / "feed.json", *one_shot)
    assert refused.code == 1 and "not a feed signed by a feed key that the key documents at" in refused.err
    audited = opos("audit", other / "v1" / "feed.json", *pins, "--repo", ledger_repo.path)
    assert audited.code == 1 and "REFUSED" in audited.out
    assert opos("auditor", "cosign", after / "v1" / "feed.json", "--key", auditor, "--repo", ledger_repo.path,
                "--state", tmp_path / "state").code == 2  # neither --feed-key nor --root-key  # fmt: skip
