"""The public log and audits tell one story: opos log, /v1/log.json, /log, /log.atom, opos audit."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import UPCOMING, LedgerRepo, SshKey, day, instruction, opos
from opos.signing import dsse
from opos.signing.keys import load_private
from servers import Mirror as StaticMirror
from webhook import create_app

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def window(start_days: float, end_days: float) -> str:
    return f"\n  start: {stamp(NOW + dt.timedelta(days=start_days))}\n  end: {stamp(NOW + dt.timedelta(days=end_days))}"


@pytest.fixture
def story(tmp_path: Path, keys: dict[str, SshKey], feed_key_file: Path) -> dict[str, Any]:
    """opos init, three signed instructions over several commits, one removed."""
    target = tmp_path / "ledger"
    result = opos("init", target, "--signer", "alice@ooni.example", "--key", keys["alice"].public)
    assert result.code == 0
    printed = result.out.split("Make the signed trust-root commit, and pin its hash:\n")[1]
    for command in [line.strip() for line in printed.splitlines() if line.startswith("  ")][1:]:
        subprocess.run(command.split("#")[0], shell=True, cwd=target, check=True, capture_output=True)
    repo = LedgerRepo.existing(target)
    add = {
        "ir-last-week": instruction("ir-last-week", window=window(-10, -5)),
        "ir-all-networks": instruction("ir-all-networks", target="\n  countries: [IR]", window=window(-3, 3)),
        "ru-telegram": instruction(
            "ru-telegram",
            kind="schedule",
            test="telegram",
            inputs=None,
            every="6h",
            target="\n  countries: [RU]",
            window=window(-6, 6),
        ),
    }
    for ident, text in add.items():
        repo.write(f"ledger/instructions/{ident}.yaml", text)
        repo.commit(f"Add {ident}", keys["alice"])
    repo.remove("ledger/instructions/ir-all-networks.yaml")
    repo.commit("Remove ir-all-networks: no longer needed", keys["alice"])
    app = create_app({"remote": str(target), "data_dir": str(tmp_path / "data"), "feed_key": str(feed_key_file),
                      "follow": False, "commit_url": "https://example.org/ledger/commit/{commit}"})  # fmt: skip
    assert app.extensions["opos"].syncer.sync().outcome == "published"
    return {"repo": repo, "client": app.test_client(), "data": tmp_path / "data", "key": feed_key_file}


LAST_WEEK = {"country": "IR", "network": "AS197207", "since": stamp(NOW - dt.timedelta(days=7)), "until": stamp(NOW)}


def test_every_view_tells_the_same_story(story: dict[str, Any]) -> None:
    repo, client = story["repo"], story["client"]
    cli = json.loads(opos("log", "--repo", repo.path, "--json").out)
    api = client.get("/v1/log.json").json
    assert cli == api and api["next"] is None
    actions = [(e["action"], e["instruction"]) for e in api["events"]]
    assert sorted(actions) == sorted([
        ("signer-added", "allowed_signers"),  # the trust root: who may sign, from the start
        ("added", "ir-last-week"), ("added", "ir-all-networks"), ("added", "ru-telegram"),
        ("removed", "ir-all-networks"), ("expired", "ir-last-week"),
    ])  # fmt: skip
    times = [e["time"] for e in api["events"]]
    assert times == sorted(times, reverse=True)  # newest first
    removal = next(e for e in api["events"] if e["action"] == "removed")
    assert removal["after"] is None and removal["before"]["id"] == "ir-all-networks"
    assert (
        removal["message"] == "Remove ir-all-networks: no longer needed" and removal["signer"] == "alice@ooni.example"
    )
    assert removal["key"].startswith("SHA256:") and removal["sequence"] == 4
    site_log = json.loads((story["data"] / "site" / "v1" / "log.json").read_bytes())
    assert site_log == api  # a static mirror publishes the same log
    document = client.get("/openapi.json").json
    schema = {**document["components"]["schemas"]["LogPage"], "components": document["components"]}
    jsonschema.validate(api, schema)


def test_what_affected_a_probe_in_as197207_of_ir_last_week(story: dict[str, Any]) -> None:
    repo, client = story["repo"], story["client"]
    expected = {"ir-last-week", "ir-all-networks"}  # not ru-telegram: another country
    args = [f"--{k}={v}" for k, v in LAST_WEEK.items()]
    cli = json.loads(opos("log", "--repo", repo.path, "--json", *args).out)
    assert {e["instruction"] for e in cli["events"]} == expected
    api = client.get("/v1/log.json", query_string=LAST_WEEK).json
    assert api == cli
    page = client.get("/log", query_string=LAST_WEEK).data.decode()
    assert all(f">{ident}<" in page for ident in expected) and "ru-telegram" not in page
    atom = client.get("/log.atom", query_string=LAST_WEEK).data.decode()
    assert all(ident in atom for ident in expected) and "ru-telegram" not in atom
    text = opos("log", "--repo", repo.path, *args).out
    assert {line.split()[2] for line in text.splitlines()} == expected
    other = client.get("/v1/log.json", query_string={**LAST_WEEK, "network": "AS12880"}).json
    assert {e["instruction"] for e in other["events"]} == {"ir-all-networks"}  # it targeted every Iranian network


def test_the_audit_agrees_and_catches_a_forgery(story: dict[str, Any], tmp_path: Path) -> None:
    repo, site = story["repo"], story["data"] / "site"
    ok = opos("audit", site / "v1" / "feed.json", "--key", f"{story['key']}.pub", "--repo", repo.path)
    assert ok.code == 0 and "byte for byte" in ok.out
    envelope = json.loads((site / "v1" / "feed.json").read_bytes())
    payload = json.loads(base64.b64decode(envelope["payload"]))
    payload["instructions"][0]["inputs"].append("https://forged.example/")
    forged = dsse.sign(envelope["payloadType"], dsse.canonical_json(payload), load_private(story["key"]), "k")
    (tmp_path / "forged.json").write_bytes(forged.to_bytes())
    caught = opos("audit", tmp_path / "forged.json", "--key", f"{story['key']}.pub", "--repo", repo.path)
    assert caught.code == 1 and "MISMATCH" in caught.out
    changed = [line for line in caught.out.splitlines() if line[:1] in "+-" and line[:3] not in ("+++", "---")]
    assert changed == ['-    "https://example.org/"', '+    "https://example.org/",', '+    "https://forged.example/"']
    head = opos("audit", site / "v1" / "head.json", "--key", f"{story['key']}.pub", "--repo", repo.path)
    assert head.code == 2 and "give the feed" in head.err


def test_pages_per_instruction_with_diffs_and_links(story: dict[str, Any], keys: dict[str, SshKey]) -> None:
    repo, client = story["repo"], story["client"]
    repo.write("ledger/instructions/ru-telegram.yaml", instruction("ru-telegram", kind="schedule", test="telegram",
               inputs=None, every="2h", target="\n  countries: [RU]", window=window(-6, 6)))  # fmt: skip
    repo.commit("Telegram every two hours", keys["alice"])
    client.application.extensions["opos"].syncer.sync()
    page = client.get("/log/ru-telegram").data.decode()
    assert "What changed" in page and "every 6 hours" in page and "every 2 hours" in page
    assert ">21600<" not in page and ">7200<" not in page  # durations in words, never seconds (hashes may hold digits)
    assert "https://example.org/ledger/commit/" in page
    assert client.get("/log/nothing-here").status_code == 404


def test_pagination_walks_every_event_once(story: dict[str, Any]) -> None:
    client = story["client"]
    seen, cursor = [], None
    while True:
        answer = client.get("/v1/log.json", query_string={"limit": 1, **({"cursor": cursor} if cursor else {})}).json
        seen.extend(answer["events"])
        cursor = answer["next"]
        if cursor is None:
            break
    assert seen == client.get("/v1/log.json").json["events"]
    for bad in (
        {"limit": 0},
        {"limit": "x"},
        {"since": "soon"},
        {"cursor": "!!"},
        {"country": "Iran"},
        {"period": "x"},
    ):
        answer = client.get("/v1/log.json", query_string=bad)
        assert answer.status_code == 400 and answer.json["detail"], bad


def test_merged_pull_requests_are_credited_to_their_signer(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    alice, bob = keys["alice"].public_text, keys["bob"].public_text
    ledger_repo.signers([f"alice@ooni.example {alice}", f"bob@ooni.example {bob}"])
    ledger_repo.commit("Allow bob", keys["alice"])
    ledger_repo.git("checkout", "-q", "-b", "pr")
    ledger_repo.write("ledger/instructions/from-pr.yaml", instruction("from-pr"))
    branch_commit = ledger_repo.commit("From a pull request", keys["bob"])
    ledger_repo.write("ledger/instructions/first-one.yaml", instruction("first-one") + "# a comment only\n")
    ledger_repo.commit("Only a comment", keys["bob"])
    ledger_repo.git("checkout", "-q", "main")
    ledger_repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "-m", "Merge pull request #1", "pr")
    events = json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"]
    merged = next(e for e in events if e["instruction"] == "from-pr")
    assert merged["revision"] == branch_commit and merged["signer"] == "bob@ooni.example"
    assert merged["commit"] == ledger_repo.head() and merged["message"] == "From a pull request"
    assert [e["action"] for e in events if e["instruction"] == "first-one"] == ["added"]  # a comment is no change


def test_the_index_follows_and_rebuilds(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    assert len(json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"]) == 2  # + the signer
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Second", keys["alice"])
    assert len(json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"]) == 3
    ledger_repo.git("reset", "-q", "--hard", "HEAD~1")
    ledger_repo.write("ledger/instructions/third-one.yaml", instruction("third-one"))
    ledger_repo.commit("Third, on a rewritten history", keys["alice"])
    events = json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"]
    assert sorted(e["instruction"] for e in events) == ["allowed_signers", "first-one", "third-one"]
    for index in (ledger_repo.path / ".git" / "opos").glob("log-*.sqlite3*"):
        index.unlink()  # the index is only a cache: rebuilt from git
    assert json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"] == events


def test_diff_previews_the_impact(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    base = ledger_repo.head()
    ledger_repo.write("ledger/instructions/everywhere.yaml", instruction(
        "everywhere", kind="schedule", test="telegram", inputs=None, every="20m", target="\n  countries: ['*']",
        window="\n  start: 2026-01-01\n  end: 2026-03-01"))  # fmt: skip
    ledger_repo.write("ledger/instructions/twin-one.yaml", instruction("twin-one"))
    ledger_repo.write("ledger/instructions/first-one.yaml", instruction("first-one", title="Renamed"))
    ledger_repo.write("ledger/instructions/begun-one.yaml", instruction(
        "begun-one", test="dnscheck", inputs="\n  - https://dns.google/dns-query",
        window=window(-30, 40)))  # fmt: skip
    ledger_repo.write("ledger/instructions/elsewhere-one.yaml", instruction(
        "elsewhere-one", target="\n  countries: [RU]"))  # fmt: skip
    ledger_repo.commit("Several", keys["alice"])
    text = opos("diff", base, "HEAD", "--repo", ledger_repo.path)
    assert text.code == 0
    assert "ADDED everywhere" in text.out and "CHANGED first-one" in text.out and "changed title" in text.out
    assert "a very large target" in text.out and "a very short interval: every 20m" in text.out
    assert "the window has already ended (2026-03-01T00:00:00Z): it will never apply" in text.out
    assert f"the window starts in the past ({stamp(NOW - dt.timedelta(days=30))})" in text.out
    assert ("overlaps first-one: the same test (web_connectivity) for IR (AS197207), from "
            f"{day(UPCOMING[0])} to {day(UPCOMING[1])}") in text.out  # fmt: skip
    assert "overlaps elsewhere-one" not in text.out  # RU and IR do not intersect: no warning
    markdown = opos("diff", base, "HEAD", "--repo", ledger_repo.path, "--format", "markdown").out
    assert markdown.startswith("### OPOS impact preview: 5 instruction(s) changed") and "> **Warning:**" in markdown
    document = json.loads(opos("diff", base, "HEAD", "--repo", ledger_repo.path, "--format", "json").out)
    assert [c["action"] for c in document["changes"]] == ["added", "added", "added", "changed", "added"]
    ledger_repo.write("ledger/instructions/broken-one.yaml", "id: broken-one\n")
    ledger_repo.commit("Broken", keys["alice"])
    broken = opos("diff", base, "HEAD", "--repo", ledger_repo.path)
    assert broken.code == 1 and "broken-one.yaml" in broken.err


def test_signer_and_policy_changes_are_public_events(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path
) -> None:
    alice, bob = (f"{name}@ooni.example {keys[name].public_text}" for name in ("alice", "bob"))
    ledger_repo.signers([alice, bob])
    ledger_repo.commit("Allow bob to sign", keys["alice"])
    ledger_repo.write("ledger/policy.yaml", "min_every: 30m\nmax_inputs: 50\n")
    ledger_repo.commit("Tighten the limits", keys["bob"])
    ledger_repo.signers([bob])
    ledger_repo.commit("Alice leaves", keys["bob"])
    events = json.loads(opos("log", "--repo", ledger_repo.path, "--json").out)["events"]
    ledger_events = [(e["action"], e["signer"]) for e in events if e["instruction"] in ("allowed_signers", "policy")]
    by_alice, by_bob = "alice@ooni.example", "bob@ooni.example"
    assert ledger_events == [("signer-removed", by_bob), ("policy-changed", by_bob),
                             ("signer-added", by_alice), ("signer-added", by_alice)]  # fmt: skip
    removed = events[0]
    assert removed["before"]["principal"] == "alice@ooni.example" and removed["before"]["key"].startswith("SHA256:")
    policy = events[1]
    assert (policy["before"]["min_every"], policy["after"]["min_every"]) == (900, 1800)
    assert policy["after"]["max_inputs"] == 50
    app = create_app({"remote": str(ledger_repo.path), "data_dir": str(tmp_path / "data"),
                      "feed_key": str(feed_key_file), "follow": False})  # fmt: skip
    assert app.extensions["opos"].syncer.sync().outcome == "published"
    client = app.test_client()
    assert client.get("/v1/log.json").json["events"] == events  # the same story in the API
    page = client.get("/log").data.decode()
    assert "alice@ooni.example may no longer sign changes" in page and "the ledger&#39;s limits changed" in page
    atom = client.get("/log.atom").data.decode()
    assert "signer-added: bob@ooni.example may sign changes" in atom
    static = json.loads((tmp_path / "data" / "site" / "v1" / "log.json").read_bytes())
    assert static["events"] == events  # and in every static mirror
    only_ir = client.get("/v1/log.json?country=IR").json["events"]
    assert all(e["instruction"] not in ("allowed_signers", "policy") for e in only_ir)
    text = opos("log", "--repo", ledger_repo.path)
    assert "signer-removed alice@ooni.example may no longer sign changes" in text.out


def test_atom_links_come_from_the_public_url_not_the_host_header(
    ledger_repo: LedgerRepo, tmp_path: Path, feed_key_file: Path
) -> None:
    app = create_app({"remote": str(ledger_repo.path), "data_dir": str(tmp_path / "data"), "follow": False,
                      "feed_key": str(feed_key_file), "public_url": "https://opos.example.org/"})  # fmt: skip
    assert app.extensions["opos"].syncer.sync().outcome == "published"
    atom = app.test_client().get("/log.atom?country=IR", headers={"Host": "evil.example"}).data.decode()
    assert "evil.example" not in atom and "http://" not in atom.replace("http://www.w3.org/2005/Atom", "")
    assert "<id>https://opos.example.org/log.atom?country=IR</id>" in atom
    assert "https://opos.example.org/log/first-one" in atom


def test_an_atom_feed_without_entries_is_not_from_1970(
    ledger_repo: LedgerRepo, tmp_path: Path, feed_key_file: Path
) -> None:
    app = create_app({"remote": str(ledger_repo.path), "data_dir": str(tmp_path / "data"), "follow": False,
                      "feed_key": str(feed_key_file)})  # fmt: skip
    assert app.extensions["opos"].syncer.sync().outcome == "published"
    atom = app.test_client().get("/log.atom?country=JP").data.decode()
    assert "<entry>" not in atom and "1970" not in atom


def test_the_audit_says_when_a_mirror_is_behind_or_expiring_and_exits_2_without_a_verdict(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key_file: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    assert opos("render", "--repo", ledger_repo.path, "--key", feed_key_file, "--out", site, "--head-ttl",
                "2h").code == 0  # fmt: skip
    for number in range(2):
        ledger_repo.write(f"ledger/instructions/later-{number}.yaml", instruction(f"later-{number}"))
        ledger_repo.commit(f"Later {number}", keys["alice"])
    mirror = StaticMirror.of_site(site)
    try:
        audited = opos("audit", mirror.url, "--key", f"{feed_key_file}.pub", "--repo", ledger_repo.path)
        assert audited.code == 0 and "byte for byte" in audited.out
        assert "behind by 2 commit(s)" in audited.out
        assert "warning: the mirror's head expires at" in audited.err and "(in 2.0 h)" in audited.err
    finally:
        mirror.stop()
    missing = opos("audit", site / "v1" / "feed.json", "--key", tmp_path / "missing.pub", "--repo", ledger_repo.path)
    assert missing.code == 2 and "--key: cannot read the key" in missing.err
    helped = subprocess.run([str(Path(sys.executable).parent / "opos"), "audit", "--help"], capture_output=True,
                            text=True, check=True)  # fmt: skip
    assert "2 when no verdict could be had" in " ".join(helped.stdout.split())


def test_a_country_that_iso_does_not_know_is_refused_everywhere_with_what_was_meant(
    story: dict[str, Any], tmp_path: Path, feed_key_file: Path
) -> None:
    """ "UK" was caught only by opos new: the log and the probe took it and found nothing."""
    client = story["client"]
    for path in ("/v1/log.json?country=UK", "/log.atom?country=UK"):
        answer = client.get(path)
        assert answer.status_code == 400 and "did you mean 'GB'" in answer.json["detail"], path
    page = client.get("/log?country=UK")
    assert page.status_code == 400 and "did you mean &#39;GB&#39;" in page.text
    assert client.get("/v1/log.json?country=gb").status_code == 200
    logged = opos("log", "--repo", story["repo"].path, "--country", "UK")
    assert logged.code == 2 and "did you mean 'GB'" in logged.err
    probed = opos("probe", "--mirror", "http://127.0.0.1:9", "--key", f"{feed_key_file}.pub", "--state",
                  tmp_path / "probe", "--country", "UK", "--network", "AS1")  # fmt: skip
    assert probed.code == 2 and "did you mean 'GB'" in probed.err
