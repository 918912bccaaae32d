"""Auditors for real: two or three auditors under gunicorn, the service, `git daemon`, probes, on 127.0.0.1.

An auditor cosigns a feed only when it re-renders it byte for byte from the public, staff-signed
history at a commit that extends everything it cosigned; a probe that pins k auditors accepts a
head only with k of their cosignatures. Each attack below is mounted for real.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import SSlibKey

from conftest import Auditor, LedgerRepo, SshKey, add_signed, instruction, opos, push
from opos.audit.auditing import AuditLog
from opos.probe import ClientConfig, Mirror, TrustAnchors, poll
from opos.probe.plan import Plan
from opos.publish import render
from opos.signing import cosignature, keydoc, sshsig
from opos.signing import keys as feed_keys
from opos.trust.gitrepo import GitLedger, write_commit
from servers import Mirror as StaticMirror
from servers import Service, free_port, http

pytestmark = pytest.mark.slow
SECRET = "s3cret"


def pins(*auditors: Auditor) -> str:
    """OPOS_AUDITOR_KEYS for these auditors: the publisher counts cosignatures by these keys."""
    return ",".join(f"{a.key_file}.pub" for a in auditors)


def probe(mirror: str, feed_key_file: Path, state: Path, auditors: list[Auditor], required: int) -> Plan:
    config = ClientConfig(
        mirrors=[Mirror(mirror)], country="IR", network="AS197207", state_dir=state,
        trust=TrustAnchors(keys=(feed_keys.load_public(Path(f"{feed_key_file}.pub")),),
                           auditors=tuple(a.public for a in auditors), auditors_required=required),
    )  # fmt: skip
    return poll(config)


def served_cosignatures(service: Service, commit: str) -> dict[str, Any]:
    answer = service.get(f"/v1/cosignatures/{commit}.json")
    assert answer.status == 200, answer.body
    return json.loads(answer.body)  # type: ignore[no-any-return]


def forged_feed(service: Service, feed_key_file: Path) -> bytes:
    """The served feed with an input added, signed with the real feed key: not what the ledger says."""
    payload = json.loads(base64.b64decode(service.get("/v1/feed.json").json()["payload"]))
    payload["instructions"][0]["inputs"].append("https://evil.example/")
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return render.sign("feed", canonical, feed_keys.load_private(feed_key_file))


def test_a_push_reaches_a_probe_requiring_two_of_two_auditors(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, start_auditor: Any,
    feed_key_file: Path, tmp_path: Path,
) -> None:  # fmt: skip
    repo, url = published_ledger
    one, two = start_auditor("one"), start_auditor("two")
    service = start_service(
        url, auditors=f"{one.url},{two.url}", auditor_keys=pins(one, two), auditors_required="2", poll_seconds="2"
    )
    first = service.wait_for(service.served_commit, 60, "the first cosigned head")
    new = add_signed(repo, keys["alice"], "second-one")
    service.webhook(SECRET)
    service.wait_for(lambda: service.served_commit() == new, 60, "the pushed commit, cosigned")
    document = served_cosignatures(service, new)
    assert len(document["signatures"]) == 2
    sslib_keys = [
        SSlibKey(feed_keys.key_id(a.public), "ed25519", "ed25519", {"public": a.public.public_bytes_raw().hex()})
        for a in (one, two)
    ]
    assert len(SslibEnvelope.from_dict(document).verify(sslib_keys, 2)) == 2
    plan = probe(service.url, feed_key_file, tmp_path / "probe", [one, two], 2)
    assert plan.commit == new, plan.rejected
    for auditor in (one, two):
        cosigned = auditor.get("/v1/cosigned.json").json()["cosigned"]
        assert [(e["sequence"], e["commit"]) for e in cosigned] == [(0, first), (1, new)]
        assert auditor.get(f"/v1/cosigned/{new}.json").status == 200
    health = service.get("/healthz").json()
    assert health["status"] == "ok", health


def test_a_feed_that_is_not_the_ledger_is_refused_by_every_auditor_and_by_probes(
    published_ledger: tuple[LedgerRepo, str], start_service: Any, start_auditor: Any, feed_key_file: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    _, url = published_ledger
    one, two = start_auditor("one"), start_auditor("two")
    service = start_service(
        url, auditors=f"{one.url},{two.url}", auditor_keys=pins(one, two), auditors_required="1", poll_seconds="2"
    )
    commit = service.wait_for(service.served_commit, 60, "the first cosigned head")
    state = tmp_path / "probe"
    assert probe(service.url, feed_key_file, state, [one, two], 1).commit == commit
    forged = forged_feed(service, feed_key_file)
    for auditor in (one, two):
        answer = auditor.cosign(forged)
        assert answer.status == 422, answer.body
        assert "differs from the ledger" in answer.json()["detail"] and "evil.example" in answer.json()["detail"]
    # a mirror serves the forgery with a valid head (the feed key is stolen), and the real cosignatures
    key = feed_keys.load_private(feed_key_file)
    head = render.sign("head", render.head_payload(commit, 0, forged, dt.datetime.now(dt.UTC)), key)
    real = service.get(f"/v1/cosignatures/{commit}.json").body
    evil = StaticMirror(
        {"/v1/head.json": head, f"/v1/feed/{commit}.json": forged, f"/v1/cosignatures/{commit}.json": real}
    )
    try:
        # a probe that never saw the real head: the forged head is refused, it has nothing to run
        fresh = probe(evil.url, feed_key_file, tmp_path / "fresh", [one, two], 1)
        assert fresh.commit is None and "not over the head's commit" in str(fresh.rejected)
        # a probe with the real feed cached: it keeps it (the forgery has the same commit and sequence)
        kept = probe(evil.url, feed_key_file, state, [one, two], 1)
        assert kept.source == "cache" and kept.commit == commit
        assert "cosignatures" in kept.rejected[0].reason
    finally:
        evil.stop()


def test_a_rewritten_branch_is_a_split_view_alarm_and_the_probe_keeps_its_cache(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, start_auditor: Any,
    feed_key_file: Path, tmp_path: Path,
) -> None:  # fmt: skip
    repo, url = published_ledger
    one = start_auditor("one")
    service = start_service(url, auditors=one.url, auditor_keys=pins(one), auditors_required="1", poll_seconds="2")
    service.wait_for(service.served_commit, 60, "the first cosigned head")
    honest = add_signed(repo, keys["alice"], "second-one")
    service.webhook(SECRET)
    service.wait_for(lambda: service.served_commit() == honest, 60, "the pushed commit")
    state = tmp_path / "probe"
    assert probe(service.url, feed_key_file, state, [one], 1).commit == honest
    # the branch is rewritten: another signed commit at sequence 1, shown to a new instance
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.write("ledger/instructions/other-one.yaml", instruction("other-one"))
    repo.commit("Add other-one", keys["alice"])
    other = push(repo, "--force")
    assert other != honest
    second = start_service(url, auditors=one.url, auditor_keys=pins(one), auditors_required="1", poll_seconds="2")
    problem = second.wait_for(lambda: "ALARM" in str(second.get("/healthz").json()["problem"]) and
                              second.get("/healthz").json()["problem"], 60, "the alarm")  # fmt: skip
    assert problem.startswith("SPLIT VIEW ALARM") and "409" in problem, problem
    assert "split view: sequence 1" in problem
    assert honest in second.log.read_text()  # the whole reason, in the log: the auditor names what it cosigned
    metrics = second.get("/metrics").body.decode()
    assert any(line.startswith("opos_split_view_alarms_total") and not line.endswith(" 0.0")
               for line in metrics.splitlines()), metrics  # fmt: skip
    assert second.served_commit() is None  # never published without the cosignature
    kept = probe(second.url, feed_key_file, state, [one], 1)
    assert kept.source == "cache" and kept.commit == honest


def test_one_auditor_down(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, start_auditor: Any,
    feed_key_file: Path, tmp_path: Path,
) -> None:  # fmt: skip
    repo, url = published_ledger
    one, two, three = start_auditor("one"), start_auditor("two"), start_auditor("three")
    service = start_service(url, auditors=f"{one.url},{two.url},{three.url}", auditor_keys=pins(one, two, three),
                            auditors_required="2",
                            poll_seconds="2")  # fmt: skip
    first = service.wait_for(service.served_commit, 60, "the first cosigned head")
    service.wait_for(lambda: len(served_cosignatures(service, first)["signatures"]) == 3, 10, "three cosignatures")
    strict, lenient = tmp_path / "two-of-two", tmp_path / "two-of-three"
    assert probe(service.url, feed_key_file, strict, [one, three], 2).commit == first
    three.stop()
    new = add_signed(repo, keys["alice"], "second-one")
    service.webhook(SECRET)
    service.wait_for(lambda: service.served_commit() == new, 60, "the commit, cosigned by two of three")
    assert len(served_cosignatures(service, new)["signatures"]) == 2
    assert probe(service.url, feed_key_file, lenient, [one, two, three], 2).commit == new
    kept = probe(service.url, feed_key_file, strict, [one, three], 2)
    assert kept.source == "cache" and kept.commit == first
    assert "1 of the 2 auditor cosignatures needed" in str(kept.rejected)


def test_an_auditor_killed_while_cosigning_keeps_its_log_and_never_contradicts_it(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_auditor: Any, feed_key_file: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    repo, _ = published_ledger
    auditor = start_auditor("one")
    alice = feed_keys.load_private(keys["alice"].private)
    with GitLedger(repo.path) as ledger:  # a history worth verifying, so that the kill lands while it works
        parent = ledger.resolve("HEAD")
        start = int(time.time()) - 3000
        for number in range(600):
            text = instruction("step-one", title=f"Step {number}").encode()
            parent = write_commit(ledger, {"ledger/instructions/step-one.yaml": text}, f"Step {number}\n",
                                  "Alice <alice@ooni.example>", start + number, (parent,),
                                  lambda payload: sshsig.sign_ed25519(alice, payload))  # fmt: skip
    repo.git("reset", "-q", "--hard", "main")
    honest = push(repo)
    site = tmp_path / "site"
    assert opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", site).code == 0
    feed = (site / "v1" / "feed.json").read_bytes()
    answers: list[Any] = []
    asking = threading.Thread(target=lambda: answers.append(_quietly(lambda: auditor.cosign(feed))))
    asking.start()
    fetched = auditor.state / "ledger.git" / "refs" / "heads" / "main"
    deadline = time.monotonic() + 30
    while not fetched.exists() and time.monotonic() < deadline:  # it has fetched: now it verifies 600 commits
        time.sleep(0.005)
    auditor.kill()
    asking.join(30)
    assert isinstance(answers[0], Exception), answers  # killed before it could answer
    entries = AuditLog(auditor.state).entries()  # intact: every line parses (a torn last line is dropped)
    assert len(entries) <= 1 and all(e.commit == honest for e in entries)
    auditor.start()
    assert auditor.cosign(feed).status == 200
    assert [e.commit for e in AuditLog(auditor.state).entries()] == [honest]
    # the branch rewritten under it: another commit at the same sequence is never cosigned
    repo.git("reset", "-q", "--hard", "HEAD~1")
    repo.write("ledger/instructions/other-one.yaml", instruction("other-one"))
    repo.commit("Other", keys["alice"])
    push(repo, "--force")
    other_site = tmp_path / "other-site"
    assert opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", other_site).code == 0
    conflict = auditor.cosign((other_site / "v1" / "feed.json").read_bytes())
    assert conflict.status == 409, conflict.body
    assert conflict.json()["latest"] == {"sequence": 600, "commit": honest}


def _quietly(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except Exception as error:  # the connection dies with the auditor, however http.client says so
        return error


def test_the_one_shot_auditor_and_its_exit_codes(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], feed_key_file: Path, tmp_path: Path
) -> None:
    auditor_key = tmp_path / "auditor"
    assert opos("keygen", "--out", auditor_key).code == 0
    site = tmp_path / "site"
    assert opos("render", "--repo", ledger_repo.path, "--key", feed_key_file, "--out", site).code == 0
    feed = site / "v1" / "feed.json"
    state = tmp_path / "state"
    base = ["auditor", "cosign", "--key", auditor_key, "--feed-key", f"{feed_key_file}.pub",
            "--repo", ledger_repo.path, "--state", state]  # fmt: skip
    done = opos(*base[:2], feed, *base[2:])
    assert done.code == 0, done.err
    envelope = json.loads(done.out)
    assert envelope["payloadType"] == "application/vnd.opos.cosignature.v1+json" and len(envelope["signatures"]) == 1
    again = opos(*base[:2], feed, *base[2:])
    assert again.code == 0 and again.out == done.out and "already in the log" in again.err
    assert len((state / "cosigned.jsonl").read_text().splitlines()) == 1
    forged = tmp_path / "forged.json"
    payload = json.loads(base64.b64decode(json.loads(feed.read_bytes())["payload"]))
    payload["instructions"][0]["title"] = "Something else"
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    forged.write_bytes(render.sign("feed", canonical, feed_keys.load_private(feed_key_file)))
    refused = opos(*base[:2], forged, *base[2:])
    assert refused.code == 1 and "differs from the ledger" in refused.err and "Something else" in refused.err
    other_key = tmp_path / "other-feed-key"
    assert opos("keygen", "--out", other_key).code == 0
    unsigned = opos(*base[:2], feed, *base[2:4], "--feed-key", f"{other_key}.pub", *base[6:])
    assert unsigned.code == 1 and "not a feed signed by a pinned feed key" in unsigned.err
    codes = {}
    for name in ("honest-one", "other-one"):  # the branch, then rewritten: another commit at sequence 1
        if name == "other-one":
            ledger_repo.git("reset", "-q", "--hard", "HEAD~1")
        ledger_repo.write(f"ledger/instructions/{name}.yaml", instruction(name))
        ledger_repo.commit(f"Add {name}", keys["alice"])
        out = tmp_path / name
        assert opos("render", "--repo", ledger_repo.path, "--key", feed_key_file, "--out", out).code == 0
        codes[name] = opos(*base[:2], out / "v1" / "feed.json", *base[2:])
    assert codes["honest-one"].code == 0, codes["honest-one"].err
    conflict = codes["other-one"]
    assert conflict.code == 3 and "split view" in conflict.err and "sequence 1" in conflict.err, conflict.err
    assert opos(*base[:2], tmp_path / "missing.json", *base[2:]).code == 2


def test_a_cosign_request_is_size_capped_and_garbage_costs_no_fetch(
    published_ledger: tuple[LedgerRepo, str], start_auditor: Any
) -> None:
    auditor = start_auditor("one")
    too_big = http("POST", f"{auditor.url}/v1/cosign", b"{" + b" " * (5 * 1024 * 1024) + b"}",
                   {"Content-Type": "application/json"})  # fmt: skip
    assert too_big.status == 413
    for body in (
        b"not json",
        b"[" * 100_000,
        json.dumps({"payload": "", "payloadType": "x", "signatures": []}).encode(),
    ):
        answer = auditor.cosign(body)
        assert answer.status == 422, (body[:20], answer.status)
    assert not (auditor.state / "ledger.git").exists()  # nothing was fetched for any of them


def test_an_auditor_fetches_from_a_mirror_of_the_ledger_when_the_ledger_is_unreachable(
    published_ledger: tuple[LedgerRepo, str], start_auditor: Any, feed_key_file: Path, tmp_path: Path
) -> None:
    repo, url = published_ledger
    auditor = start_auditor("one", f"git://127.0.0.1:{free_port()}/ledger.git,{url}")
    site = tmp_path / "site"
    assert opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", site).code == 0
    answer = auditor.cosign((site / "v1" / "feed.json").read_bytes())
    assert answer.status == 200, answer.body


def test_opos_render_asks_auditors_and_publishes_no_head_without_their_cosignatures(
    published_ledger: tuple[LedgerRepo, str], start_auditor: Any, feed_key_file: Path, tmp_path: Path
) -> None:
    repo, _ = published_ledger
    auditor = start_auditor("one")
    site = tmp_path / "pages"
    base = ["render", "--repo", repo.path, "--key", feed_key_file, "--out", site]
    base += ["--auditor-key", f"{auditor.key_file}.pub"]
    down = opos(*base, "--auditor", f"http://127.0.0.1:{free_port()}")
    assert down.code == 1 and "0 of the 1 auditor cosignatures needed" in down.err
    assert not (site / "v1" / "head.json").exists()
    done = opos(
        *base, "--auditor", auditor.url, "--auditor", f"http://127.0.0.1:{free_port()}", "--auditors-required", "1"
    )
    assert done.code == 0, done.err
    commit = repo.head()
    cosigned = (site / "v1" / "cosignatures" / f"{commit}.json").read_bytes()
    statement = cosignature.Statement(commit, 0, hashlib.sha256((site / "v1" / "feed.json").read_bytes()).hexdigest())
    assert cosignature.require(cosigned, statement, [auditor.public], 1)
    assert (site / "v1" / "head.json").exists()


def test_auditors_are_counted_by_key_never_by_url(
    published_ledger: tuple[LedgerRepo, str], start_auditor: Any, start_service: Any, feed_key_file: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    """L5: one auditor under two URLs is one cosignature; an auditor whose key is not pinned counts for nothing."""
    repo, url = published_ledger
    one, two, impostor = start_auditor("one"), start_auditor("two"), start_auditor("impostor")
    twice = f"{one.url},{one.url}/"  # two and its key are pinned, but only one is asked, under two URLs
    service = start_service(url, auditors=twice, auditor_keys=pins(one, two), auditors_required="2", poll_seconds="2")
    problem = service.wait_for(lambda: "1 of the 2" in str(service.get("/healthz").json()["problem"]) and
                               service.get("/healthz").json()["problem"], 90, "the refusal")  # fmt: skip
    assert "1 of the 2 auditor cosignatures needed" in problem and "distinct pinned keys" in problem
    assert service.get("/healthz").status == 503 and service.served_commit() is None
    site = tmp_path / "pages"
    base = [
        "render",
        "--repo",
        repo.path,
        "--key",
        feed_key_file,
        "--out",
        site,
        "--auditor-key",
        f"{one.key_file}.pub",
    ]
    doubled = opos(*base, "--auditor-key", f"{two.key_file}.pub", "--auditor", one.url, "--auditor", f"{one.url}/",
                   "--auditors-required", "2")  # fmt: skip
    assert doubled.code == 1 and "1 of the 2 auditor cosignatures needed" in doubled.err
    unpinned = opos(*base, "--auditor", impostor.url, "--auditors-required", "1")
    assert unpinned.code == 1 and "not a signature by a pinned auditor key" in unpinned.err
    assert not (site / "v1" / "head.json").exists()
    keyless = opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", site, "--auditor", one.url)
    assert keyless.code == 1 and "1 auditor cosignatures are required but 0 auditor key(s) are pinned" in keyless.err
    assert opos(*base, "--auditor", one.url, "--auditor", impostor.url, "--auditors-required", "1").code == 0


def test_concurrent_cosign_requests_to_one_auditor_all_answer(
    published_ledger: tuple[LedgerRepo, str], start_auditor: Any, feed_key_file: Path, tmp_path: Path
) -> None:
    """Several requests at once (a publisher asking one auditor under two URLs, or anyone) used to deadlock a
    gevent worker on the log's file lock, until gunicorn killed it: each now waits its turn."""
    repo, _ = published_ledger
    auditor = start_auditor("one")
    site = tmp_path / "site"
    assert opos("render", "--repo", repo.path, "--key", feed_key_file, "--out", site).code == 0
    envelope = (site / "v1" / "feed.json").read_bytes()
    answers: list[int] = []
    threads = [threading.Thread(target=lambda: answers.append(auditor.cosign(envelope, 20).status)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [200] * 8
    assert "WORKER TIMEOUT" not in auditor.log.read_text()


def test_a_documented_feed_key_rotation_reaches_probes_through_auditors_that_follow_the_root(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_auditor: Any, tmp_path: Path
) -> None:
    """Auditors pinned feed keys: after `opos keys rotate` and a new OPOS_FEED_KEY, every commit was refused
    ("0 of the 2 auditor cosignatures needed … not a feed signed by a pinned feed key")."""
    repo, url = published_ledger
    made = {}
    for name in ("root", "feed-a", "feed-b", "auditor-one", "auditor-two"):
        made[name] = tmp_path / name
        assert opos("keygen", "--out", made[name]).code == 0
    ledger = repo.path / "ledger"
    assert opos("keys", "init", "--root", made["root"], "--root-threshold", "1", "--feed-key",
                f"{made['feed-a']}.pub", "--ledger", ledger).code == 0  # fmt: skip
    assert opos("keys", "rotate", "--root", made["root"], "--add-auditor", f"{made['auditor-one']}.pub",
                "--add-auditor", f"{made['auditor-two']}.pub", "--auditors-required", "2", "--ledger",
                ledger).code == 0  # fmt: skip
    repo.commit("Keys: two auditors required", keys["alice"])
    push(repo)
    one, two = (start_auditor(name, root=made["root"]) for name in ("one", "two"))  # no feed key on their command line
    data = tmp_path / "service-data"
    env = {"OPOS_REMOTE": url, "OPOS_DATA_DIR": str(data), "OPOS_FEED_KEY": str(made["feed-a"]),
           "OPOS_WEBHOOK_SECRET": SECRET, "OPOS_POLL_SECONDS": "3600", "OPOS_AUDITORS": f"{one.url},{two.url}",
           "OPOS_AUDITORS_REQUIRED": "2"}  # fmt: skip
    service = Service(env, workers=2)
    try:
        first = service.wait_for(service.served_commit, 60, "the first cosigned head")
        root = keydoc.Key.of(feed_keys.load_public(Path(f"{made['root']}.pub")))
        config = ClientConfig(mirrors=[Mirror(service.url)], country="IR", network="AS197207",
                              state_dir=tmp_path / "probe", trust=TrustAnchors(root_keys=(root,)))  # fmt: skip
        assert poll(config).commit == first
        # the rotation as docs/security.md says: rotate, merge, point OPOS_FEED_KEY at the new key, restart
        assert opos("keys", "rotate", "--root", made["root"], "--add-feed-key", f"{made['feed-b']}.pub",
                    "--remove-feed-key", feed_keys.key_id(feed_keys.load_public(Path(f"{made['feed-a']}.pub"))),
                    "--ledger", ledger).code == 0  # fmt: skip
        repo.commit("Keys: rotate the feed key", keys["alice"])
        rotated = push(repo)
        service.stop()
        service = Service({**env, "OPOS_FEED_KEY": str(made["feed-b"])}, workers=2)
        service.wait_for(lambda: service.served_commit() == rotated, 60, "the rotated commit, cosigned by both")
        config = dataclasses.replace(config, mirrors=[Mirror(service.url)])  # the restarted service's port
        plan = poll(config)
        assert plan.commit == rotated, plan.rejected  # the probe pins the root only: it followed the rotation
        later = add_signed(repo, keys["alice"], "after-the-rotation")
        service.webhook(SECRET)
        service.wait_for(lambda: service.served_commit() == later, 60, "a commit after the rotation")
        assert poll(config).commit == later
        assert service.get("/healthz").json()["status"] == "ok"
    finally:
        service.stop()
