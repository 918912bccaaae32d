"""The shortcuts taken for speed (issue 11) give exactly the answers of the long way round.

The fast schema check never accepts what jsonschema refuses; verdicts saved between runs give
byte-identical feeds and are ignored when damaged; the log index reads on from where it was and
starts again after a rebuild. Durations are the benchmark suite's business, never a test's.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import LedgerRepo, SshKey, instruction, opos, window
from opos.eventlog import logindex
from opos.eventlog.events import Event
from opos.eventlog.logindex import LogIndex, LogQuery, log_document, log_json, select
from opos.instructions import oonirun, resources, rules
from opos.model import CommitHash, Policy
from opos.publish import bridge, render
from opos.signing import dsse, feedread
from opos.signing.documents import Feed, FeedEntry
from opos.trust import checkedfile
from opos.trust.gitrepo import GitLedger
from opos.trust.statedir import StateDir
from opos.trust.verification import Verification

VALID: dict[str, Any] = {
    "id": "check-sites", "kind": "run", "title": "Sites", "reason": "Reports.", "test": "web_connectivity",
    "inputs": ["https://example.org/"], "every": "6h",
    "target": {"countries": ["IR", "cn"], "networks": ["AS1234", 5678], "platforms": ["android"],
               "max_probes": 3, "max_probes_per": "network", "sample": 0.5},
    "window": {"start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
}  # fmt: skip
ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, 2**40, "", "x", "x\n", "AS12\n", "IR\n", "ir", "1h", "0s", "\u202e",
    [], ["x"], [1], {}, {"a": 1}, "2026-12-01", "2026-12-01T00:00:00Z\n", "https://example.org/\n", "a" * 300,
]  # fmt: skip


def _mutations(value: Any, rng: random.Random) -> Any:
    document = copy.deepcopy(value)
    for _ in range(rng.randint(1, 3)):
        holder: Any = document
        path: list[Any] = []
        while isinstance(holder, (dict, list)) and holder and rng.random() < 0.7:
            key = rng.choice(list(holder)) if isinstance(holder, dict) else rng.randrange(len(holder))
            path.append(key)
            if not isinstance(holder[key], (dict, list)):
                break
            holder = holder[key]
        action = rng.random()
        if isinstance(holder, dict) and action < 0.15:
            holder[rng.choice(["extra", "Id", "every", "sample"])] = rng.choice(ODD_VALUES)
        elif isinstance(holder, dict) and holder and action < 0.3:
            del holder[rng.choice(list(holder))]
        elif isinstance(holder, (dict, list)) and holder:
            key = rng.choice(list(holder)) if isinstance(holder, dict) else rng.randrange(len(holder))
            holder[key] = rng.choice(ODD_VALUES)
        elif path:
            document = rng.choice(ODD_VALUES) if rng.random() < 0.05 else document
    return document


def test_the_fast_schema_check_never_accepts_what_jsonschema_refuses() -> None:
    rng = random.Random(11)
    refused = 0
    for _ in range(3000):
        value = _mutations(VALID, rng)
        slow = not any(resources.validator("instruction").iter_errors(value))
        fast = resources.is_valid("instruction", value)
        assert fast <= slow, f"the fast check accepted what jsonschema refuses: {value!r}"
        refused += not slow
    assert refused > 1000  # the mutations do reach the refusals
    for policy in ({"max_inputs": 5}, {"max_inputs": "5"}, {"tests": ["x", 1]}, {"min_every": "1h\n"}, []):
        slow = not any(resources.validator("policy").iter_errors(policy))
        assert resources.is_valid("policy", policy) <= slow


FEED_ENTRY: dict[str, Any] = {
    "id": "check-sites", "kind": "run", "title": "Sites", "reason": "Reports.", "test": "web_connectivity",
    "inputs": ["https://example.org/"], "every": None,
    "target": {"countries": ["IR", "*"], "networks": ["AS1234"], "platforms": ["android"], "max_probes": 3,
               "max_probes_per": "network", "sample": 0.5},
    "window": {"start": "2026-12-01T00:00:00Z", "end": "2027-01-01T00:00:00Z"},
    "revision": "a" * 40, "signer": "alice@ooni.example", "approvers": ["bob@ooni.example"],
}  # fmt: skip


def test_the_one_pass_feed_reader_never_accepts_what_the_reader_schema_refuses() -> None:
    """A probe reads a new feed in one pass (opos.signing.feedread); the reader schema stays the rule."""
    rng = random.Random(12)
    feed = {
        "type": "opos.feed/v1",
        "commit": "b" * 40,
        "sequence": 3,
        "committed": "2026-12-01T10:00:00Z",
        "instructions": [FEED_ENTRY, {**FEED_ENTRY, "id": "other-one", "kind": "later-kind", "every": 3600}],
    }
    accepted = refused = 0
    for _ in range(4000):
        value = _mutations(feed, rng)
        parts = feedread.read_feed(value)
        if not resources.is_readable("feed", value) or any(resources.reader_validator("feed").iter_errors(value)):
            assert parts is None, f"the one-pass reader accepted what the reader schema refuses: {value!r}"
            refused += 1
        elif parts is not None:
            built = Feed(parts[0], parts[1], parts[2], tuple(FeedEntry(*entry) for entry in parts[3]))
            assert built == Feed.from_json(value)
            accepted += 1
    assert refused > 1000 and accepted > 200


def test_a_file_judged_by_blob_id_gets_the_verdict_of_its_contents() -> None:
    memo = rules.new_check_memo()
    data = instruction("by-blob").encode()
    first = rules.check_known(memo, Policy(), "ledger/instructions/by-blob.yaml", "b" * 40, lambda: data)
    again = rules.check_known(memo, Policy(), "ledger/instructions/by-blob.yaml", "b" * 40, lambda: b"never read")
    assert first == again and first[0] is not None


@pytest.fixture
def rendered_twice(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path) -> tuple[Path, Path, Path]:
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Add second", keys["alice"])
    key = tmp_path / "feed-key"
    assert opos("keygen", "--out", key).code == 0
    return ledger_repo.path, key, ledger_repo.path / ".git" / "opos"


def test_saved_verdicts_give_the_same_feed_and_damage_is_ignored(
    rendered_twice: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    repo, key, state = rendered_twice
    outputs = []
    for attempt, damage in enumerate([None, None, b"{not json\n", b'[[1], "x"]\n[0]\n']):
        saved = list(state.glob("checked-*.jsonl"))
        if damage is not None:
            saved[0].write_bytes(damage + saved[0].read_bytes()[:40])  # and a line cut short
        out = tmp_path / f"site-{attempt}"
        result = opos("render", "--repo", repo, "--key", key, "--out", out)
        assert result.code == 0, result.err
        assert "Traceback" not in result.err
        outputs.append(next((out / "v1" / "feed").glob("*.json")).read_bytes())
    assert len(set(outputs)) == 1
    lines = next(state.glob("checked-*.jsonl")).read_bytes().splitlines()
    assert len([json.loads(line) for line in lines[-2:]]) == 2  # judged again after the damage, and appended


def test_verdicts_of_other_rules_are_never_read(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "opos")
    memo = rules.new_check_memo()
    rules.check_known(memo, Policy(), "ledger/instructions/a.yaml", "a" * 40, lambda: instruction("aaa").encode())
    (tmp_path / "opos" / "checked-0000000000000000.jsonl").write_text("[]\n")
    checkedfile.SavedVerdicts(state).save(memo)
    assert [p.name for p in (tmp_path / "opos").glob("checked-*")] == [f"checked-{resources.rules_fingerprint()}.jsonl"]
    loaded = rules.new_check_memo()
    checkedfile.SavedVerdicts(state).load(loaded)
    assert list(loaded.items()) == list(memo.items())


def test_the_journal_appends_only_new_verdicts_and_compacts_when_it_grows(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "opos")
    memo = rules.new_check_memo()
    memo.size = 3  # compacted past twice this
    saved = checkedfile.SavedVerdicts(state)
    for number in range(10):
        rules.check_known(memo, Policy(), f"i/{number}.yaml", f"{number:040}", lambda: instruction("abc").encode())
        saved.save(memo)
        saved.save(memo)  # nothing new: nothing written
        lines = saved.path.read_bytes().splitlines()
        assert len(lines) <= 2 * memo.size
    again = rules.new_check_memo()
    checkedfile.SavedVerdicts(state).load(again)
    assert [key for key, _ in again.items()][-3:] == [key for key, _ in memo.items()]


def test_opos_check_reuses_saved_verdicts_with_the_same_answers(ledger_repo: LedgerRepo) -> None:
    ledger_repo.write("ledger/instructions/broken.yaml", instruction("broken", test="no_such_test"))
    first = opos("check", "--repo", ledger_repo.path)
    second = opos("check", "--repo", ledger_repo.path)
    assert first.code == second.code == 1
    assert first.out == second.out and "no_such_test" in first.out
    assert list((ledger_repo.path / ".git" / "opos").glob("checked-*.jsonl"))


def test_signatures_checked_on_two_threads_give_the_verdicts_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from opos.signing import keys as feed_keys
    from opos.signing import sshsig
    from opos.trust import history
    from opos.trust.gitrepo import init_repository, write_commit

    staff, stranger = ed25519.Ed25519PrivateKey.generate(), ed25519.Ed25519PrivateKey.generate()
    line = f"staff@ooni.example {feed_keys.public_line(staff.public_key()).strip()}\n".encode()
    with init_repository(tmp_path / "repo") as ledger:
        head = write_commit(ledger, {"ledger/allowed_signers": line}, "root\n", "S <s@x>", 1_800_000_000,
                            sign=lambda p: sshsig.sign_ed25519(staff, p))  # fmt: skip
        root = head
        for step in range(history.PARALLEL_FROM + 40):
            signer = stranger if step in (100, 200) else staff
            files = {f"ledger/instructions/i-{step % 7}.yaml": f"v{step}\n".encode()}
            sign = None if step == 150 else (lambda p, k=signer: sshsig.sign_ed25519(k, p))
            head = write_commit(ledger, files, f"step {step}\n", "S <s@x>", 1_800_000_001 + step, (head,), sign)
        parallel = history.Verifier(ledger, root).verify(head)
        monkeypatch.setattr(history, "PARALLEL_FROM", 10**9)
        sequential = history.Verifier(ledger, root).verify(head)
    assert [(f.commit, f.reason) for f in parallel.failures] == [(f.commit, f.reason) for f in sequential.failures]
    assert len(parallel.failures) == 3 and not parallel.ok


def test_claim_counts_are_backfilled_for_existing_claims_and_follow_revocations(tmp_path: Path) -> None:
    import sqlite3

    from webhook.feed_service.claims_store import MIGRATIONS, SqliteStore

    path = tmp_path / "claims.sqlite3"
    with sqlite3.connect(path) as old:  # a store made before the counts existed, holding two claims
        old.execute("CREATE TABLE opos_schema_version (version INTEGER NOT NULL)")
        for number, statement in enumerate(MIGRATIONS[:5], start=1):
            old.execute(statement)
            old.execute("INSERT INTO opos_schema_version VALUES (?)", (number,))
        for probe in ("probe-one-000000", "probe-two-000000"):
            old.execute("INSERT INTO opos_claims (instruction, probe_id, scope) VALUES ('capped', ?, 'IR')", (probe,))
    store = SqliteStore(path)
    try:
        assert not store.claim("capped", "IR", "probe-three-0000", 2).granted  # the two old claims count
        assert store.claim("capped", "IR", "probe-one-000000", 2).granted  # asking again: the same slot
        assert store.revoke("capped", "probe-two-000000") == 1
        third = store.claim("capped", "IR", "probe-three-0000", 2)
        assert third.granted and third.used == 2
        assert not store.claim("capped", "IR", "probe-four-00000", 2).granted
    finally:
        store.close()


def test_a_timeline_extended_commit_by_commit_is_the_timeline_built_whole() -> None:
    from opos.eventlog import logindex
    from opos.eventlog.events import Event

    rng = random.Random(7)
    events: list[Event] = []
    for step in range(300):
        ident = f"item-{rng.randrange(12):02}"
        end = f"2026-12-{rng.randrange(1, 29):02}T00:00:00Z"
        after = {"id": ident, "test": "web_connectivity", "window": {"start": "2026-11-01T00:00:00Z", "end": end},
                 "target": {"countries": ["IR"], "networks": [], "platforms": [], "max_probes": None,
                            "max_probes_per": "target", "sample": None}}  # fmt: skip
        action = rng.choice(["added", "changed", "removed"])
        time = f"2026-{11 + step // 200:02}-{1 + step % 28:02}T{step % 24:02}:00:00Z"
        events.append(Event(action, ident, f"{step:040}", step, time, None, None, "", f"{step:040}",
                            None if action == "removed" else after, after if action != "added" else None))  # fmt: skip
    logindex._timelines.clear()
    for size in range(0, len(events) + 1, 17):
        grown = logindex._timeline(events[:size])
    grown = logindex._timeline(list(events))
    logindex._timelines.clear()
    whole = logindex._timeline(list(events))
    assert [(e.key, e.event) for e in grown.entries] == [(e.key, e.event) for e in whole.entries]
    assert any(e.event.action == "expired" for e in whole.entries)


def test_the_fast_reader_check_never_accepts_what_the_reader_schema_refuses() -> None:
    entry = {**VALID, "every": None, "target": {**VALID["target"], "countries": ["IR"], "networks": ["AS1234"]},
             "revision": "1" * 40, "signer": None}  # fmt: skip
    feed = {"type": "opos.feed/v1", "commit": "1" * 40, "sequence": 3, "committed": "2026-12-01T00:00:00Z",
            "instructions": [entry]}  # fmt: skip
    assert resources.is_readable("feed", {**feed, "later": 1}) and not resources.is_valid("feed", {**feed, "later": 1})
    rng = random.Random(12)
    for _ in range(2000):
        value = _mutations(feed, rng)
        slow = not any(resources.reader_validator("feed").iter_errors(value))
        assert resources.is_readable("feed", value) <= slow, value


@pytest.mark.slow
def test_a_large_first_check_and_render_on_every_core_say_what_one_process_says(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path
) -> None:
    """`python -m opos` judges a first check of 1,000 files or more on two processes (and reads a commit's files
    along their delta chains): the same problems, in the same order, and the same feed as judging them here."""
    for number in range(1_200):
        fields = {"title": ""} if number % 400 == 7 else {"test": "no_such_test"} if number % 500 == 3 else {}
        ledger_repo.write(f"ledger/instructions/many-{number:04d}.yaml", instruction(f"many-{number:04d}", **fields))
    ledger_repo.write("ledger/instructions/oversized.yaml", "reason: " + "x" * (1024 * 1024 + 10) + "\n")
    ledger_repo.commit("Many", keys["alice"])
    command = [sys.executable, "-m", "opos", "check", "--repo", str(ledger_repo.path)]
    in_processes = subprocess.run(command, capture_output=True, text=True, timeout=120)
    shutil.rmtree(ledger_repo.path / ".git" / "opos", ignore_errors=True)
    here = opos("check", "--repo", ledger_repo.path)  # in this (threaded) process: one file after another
    assert (in_processes.returncode, in_processes.stdout) == (here.code, here.out) and here.code == 1
    assert here.out.count("no_such_test") == 3 and "oversized.yaml" in here.out
    ledger_repo.remove("ledger/instructions/oversized.yaml")
    for number in (7, 407, 807, 3, 503, 1003):
        ledger_repo.remove(f"ledger/instructions/many-{number:04d}.yaml")
    ledger_repo.commit("Valid", keys["alice"])
    key = tmp_path / "feed-key"
    assert opos("keygen", "--out", key).code == 0
    sites = []
    for name, how in (("forked", "process"), ("here", "thread")):
        shutil.rmtree(ledger_repo.path / ".git" / "opos", ignore_errors=True)
        site = tmp_path / name
        arguments = ["render", "--repo", str(ledger_repo.path), "--key", str(key), "--out", str(site)]
        if how == "process":
            done = subprocess.run([sys.executable, "-m", "opos", *arguments], capture_output=True, text=True,
                                  timeout=120)  # fmt: skip
            assert done.returncode == 0, done.stderr
        else:
            assert opos(*arguments).code == 0
        sites.append(json.loads((site / "v1" / "feed.json").read_bytes())["payload"])
    assert sites[0] == sites[1]


def test_the_site_log_written_from_events_serialised_once_is_the_log_document_byte_for_byte() -> None:
    events = [Event("added", f"x-{n:03d}", "a" * 40, n, "2026-01-01T00:00:00Z", "alé", None, "m\u202e\"\\", "b" * 40,
                    {"k": [1, "é", None]}, None) for n in range(3)]  # fmt: skip
    for chosen in (events, events[1:], [], events):
        assert log_json(chosen) == json.dumps(log_document(chosen, None), ensure_ascii=False).encode()


def _indexed(ledger_repo: LedgerRepo) -> LogIndex:
    """The log index of the repository's history, verified and brought up to its HEAD."""
    with GitLedger(ledger_repo.path, "ledger") as ledger:
        head = ledger.resolve("HEAD")
        verification = Verification.open(ledger, head, None)
        verification.require(head)
        index = LogIndex.for_verification(verification)
        index.update(verification, head)
        return index


def test_events_a_new_process_reads_from_the_index_give_the_same_site_log_byte_for_byte(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    """The writer and a new process take an event's stored text as its JSON unless that text escapes a character."""
    for ident, title in (("plain-one", "Plain"), ("accented-one", "Sités é"), ("escaped-one", "Back\\u0041slash")):
        ledger_repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, title=json.dumps(title)))
        ledger_repo.commit(f"Add {ident}", keys["alice"])
    index = _indexed(ledger_repo)
    texts = [json.dumps(event.to_json(), ensure_ascii=False) for event in index.events()]
    assert any("é" in text for text in texts) and any("\\\\u0041" in text for text in texts)
    for events in (index.events(), LogIndex(index.path).events()):  # the writer's, and another object's (a process)
        assert log_json(events) == json.dumps(log_document(events, None), ensure_ascii=False).encode()


def test_a_feed_serialised_entry_by_entry_is_its_canonical_json_byte_for_byte() -> None:
    entries = tuple(FeedEntry.from_json({**FEED_ENTRY, "id": f"entry-{n:03d}", "title": "Sités \u202e\"\\"})
                    for n in range(3))  # fmt: skip
    for chosen in (entries, entries[1:], (), entries, (FeedEntry(entries[0].instruction, "c" * 40, None),)):
        feed = Feed(CommitHash("d" * 40), 7, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), chosen)
        assert render.canonical_feed(feed) == dsse.canonical_json(feed.to_json())


def test_the_bridged_file_made_instruction_by_instruction_is_the_whole_document_byte_for_byte() -> None:
    crossing = {
        **FEED_ENTRY,
        "target": {
            "countries": ["IR"],
            "networks": ["AS1234"],
            "platforms": [],
            "max_probes": None,
            "max_probes_per": "target",
            "sample": None,
        },
    }
    entries = tuple(FeedEntry.from_json({**(crossing if n % 2 else FEED_ENTRY), "id": f"entry-{n:03d}",
                                         "title": "Sités \u202e\"\\"}) for n in range(4))  # fmt: skip
    for chosen in (entries, entries[1:], (), entries[:1], entries):
        feed = Feed(CommitHash("d" * 40), 7, dt.datetime(2026, 12, 1, tzinfo=dt.UTC), chosen)
        document = {"commit": feed.commit, "sequence": feed.sequence, "committed": "2026-12-01T00:00:00Z",
                    "instructions": [e.instruction.to_json() for e in chosen if oonirun.not_bridged(e.instruction)
                                     is None]}  # fmt: skip
        assert bridge.bridged_json(feed) == json.dumps(document, ensure_ascii=False).encode()
    assert b"entry-001" in bridge.bridged_json(feed) and b"entry-000" not in bridge.bridged_json(feed)


def test_a_log_query_by_place_walks_only_the_instructions_that_ever_targeted_it_and_finds_the_same(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    moves = [("moving-one", "\n  countries: [IR]\n  networks: [AS1]"), ("staying-one", "\n  countries: ['*']"),
             ("moving-one", "\n  countries: [RU]"), ("other-net", "\n  countries: [IR]\n  networks: [AS2]"),
             ("staying-one", "\n  countries: [DE, IR]")]  # fmt: skip
    for number, (ident, target) in enumerate(moves):
        text = instruction(ident, target=target, window=window(-9, -1 - number))  # ended: expiries too
        ledger_repo.write(f"ledger/instructions/{ident}.yaml", text)
        ledger_repo.commit(f"Move {ident}", keys["alice"])
    events = _indexed(ledger_repo).events()
    now = dt.datetime.now(dt.UTC)
    found = 0
    for country, network in itertools.product(("IR", "RU", "DE", "JP", None), ("AS1", "AS2", "AS3", None)):
        query = LogQuery(country=country, network=network, limit=1000)
        every = [e.event for e in logindex._timeline(events).entries if not (e.event.action == "expired" and
                 e.moment > now) and logindex._matches(e, query, country, network)]  # fmt: skip
        assert select(events, now, query)[0] == every, (country, network)
        found += len(every)
    assert found > 30
