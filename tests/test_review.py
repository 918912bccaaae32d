"""The two-person rule against the real git: real ssh-keygen keys, `git commit -S`, merges, `opos verify`.

The ledger's trust root allows alice (with a second key, her laptop's), bob, carol and dave, and
asks two signers for every change and three for one that can reach Iran.
"""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import LedgerRepo, SshKey, instruction, make_key, opos
from opos.instructions import resources
from opos.trust.gitrepo import FileCache, GitLedger
from opos.trust.verification import Verification
from servers import GitDaemon

REVIEW = "review:\n  signers: 2\n  rules:\n    - countries: [IR, CN]\n      signers: 3\n"
GERMANY = "\n  countries: [DE]"
IRAN = "\n  countries: [IR]"


@pytest.fixture
def staff(tmp_path: Path, keys: dict[str, SshKey]) -> dict[str, SshKey]:
    return {**keys, "alice-laptop": make_key(tmp_path, "alice-laptop")}


@pytest.fixture
def reviewed(tmp_path: Path, staff: dict[str, SshKey]) -> LedgerRepo:
    repo = LedgerRepo(tmp_path / "reviewed")
    lines = [f"{name}@ooni.example {staff[name].public_text}" for name in ("alice", "bob", "carol", "dave")]
    repo.signers([*lines, f"alice@ooni.example,alice.laptop@ooni.example {staff['alice-laptop'].public_text}"])
    repo.write("ledger/policy.yaml", "min_every: 15m\n" + REVIEW)
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one", target=GERMANY))
    repo.commit("Trust root", staff["alice"], "2026-11-01T10:00:00Z")
    repo.git("config", "user.name", "Staff")
    repo.git("config", "user.email", "staff@ooni.example")
    return repo


def verify(repo: LedgerRepo) -> tuple[int, dict[str, str]]:
    result = opos("verify", "--repo", repo.path)
    assert "Traceback" not in result.err
    return result.code, {line[:40]: line[41:] for line in result.out.splitlines()}


def propose(repo: LedgerRepo, key: SshKey, target: str = GERMANY, ident: str = "second-one") -> str:
    """A change on the branch `topic`, signed by its author."""
    repo.git("checkout", "-q", "-B", "topic", "main")
    repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, target=target))
    return repo.commit(f"Add {ident}", key)


def approve(repo: LedgerRepo, key: SshKey) -> str:
    return repo.commit("Approve: the change on topic", key)


def merge_button(repo: LedgerRepo) -> str:
    """What the hosting site's merge button makes: an unsigned merge commit whose tree is the branch's."""
    repo.git("checkout", "-q", "main")
    repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "--no-edit", "topic")
    return repo.head()


def accepted(repo: LedgerRepo, commit: str) -> tuple[str, ...]:
    with GitLedger(repo.path) as ledger:
        found = Verification.open(ledger, ledger.resolve(commit), None).require(ledger.resolve(commit))
    return found.accepted.approvers


def test_one_signer_when_two_are_needed_is_rejected(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    reviewed.write("ledger/instructions/second-one.yaml", instruction("second-one", target=GERMANY))
    alone = reviewed.commit("Add second-one", staff["alice"])
    code, failures = verify(reviewed)
    assert code == 1 and list(failures) == [alone]
    assert failures[alone].startswith("needs 2 signers, has 1 (alice@ooni.example)")
    assert "opos approve" in failures[alone]


def test_author_and_reviewer_are_accepted_through_the_merge_button(
    reviewed: LedgerRepo, staff: dict[str, SshKey]
) -> None:
    propose(reviewed, staff["alice"])
    approve(reviewed, staff["bob"])
    merge = merge_button(reviewed)
    assert verify(reviewed) == (0, {})
    assert accepted(reviewed, merge) == ("alice@ooni.example", "bob@ooni.example")


def test_a_reviewers_signed_merge_is_accepted(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"])
    reviewed.git("checkout", "-q", "main")
    reviewed.git("-c", "gpg.format=ssh", "-c", f"user.signingkey={staff['bob'].private}",
                 "merge", "-q", "--no-ff", "-S", "--no-edit", "topic")  # fmt: skip
    assert verify(reviewed) == (0, {})
    assert accepted(reviewed, "HEAD") == ("alice@ooni.example", "bob@ooni.example")


def test_one_person_with_two_keys_counts_once(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"])
    approve(reviewed, staff["alice-laptop"])
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1 and failures[merge].startswith("needs 2 signers, has 1 (alice@ooni.example)")


def test_an_approval_of_an_earlier_tree_does_not_count(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"])
    approve(reviewed, staff["bob"])
    reviewed.write("ledger/instructions/second-one.yaml", instruction("second-one", target=GERMANY, title="Other"))
    reviewed.commit("Change it after the review", staff["alice"])
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1 and failures[merge].startswith("needs 2 signers, has 1 (alice@ooni.example)")


def test_a_country_rule_asks_three_for_iran(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"], target=IRAN)
    approve(reviewed, staff["bob"])
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1
    assert failures[merge].startswith("needs 3 signers, has 2 (alice@ooni.example, bob@ooni.example)")
    assert "instructions/second-one.yaml: its target can take probes in IR" in failures[merge]
    reviewed.git("reset", "-q", "--hard", "HEAD~1")
    reviewed.git("checkout", "-q", "topic")
    approve(reviewed, staff["carol"])
    merge = merge_button(reviewed)
    assert verify(reviewed) == (0, {})
    assert accepted(reviewed, merge) == ("alice@ooni.example", "bob@ooni.example", "carol@ooni.example")


def test_moving_an_instruction_away_from_iran_counts_its_old_target(
    reviewed: LedgerRepo, staff: dict[str, SshKey]
) -> None:
    propose(reviewed, staff["alice"], target=IRAN)
    approve(reviewed, staff["bob"])
    approve(reviewed, staff["carol"])
    merge_button(reviewed)
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    reviewed.write("ledger/instructions/second-one.yaml", instruction("second-one", target=GERMANY))
    reviewed.commit("Move it to Germany", staff["alice"])
    approve(reviewed, staff["bob"])
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1 and failures[merge].startswith("needs 3 signers, has 2")


def test_a_global_instruction_can_reach_iran(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"], target='\n  countries: ["*"]')
    approve(reviewed, staff["bob"])
    merge = merge_button(reviewed)
    assert verify(reviewed)[1][merge].startswith("needs 3 signers, has 2")


def test_lowering_the_count_needs_the_largest_count_in_force(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    reviewed.write("ledger/policy.yaml", "min_every: 15m\n")
    reviewed.commit("Drop the review", staff["alice"])
    approve(reviewed, staff["bob"])
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1
    assert failures[merge].startswith("needs 3 signers, has 2") and "it changes policy.yaml" in failures[merge]
    reviewed.git("reset", "-q", "--hard", "HEAD~1")
    reviewed.git("checkout", "-q", "topic")
    approve(reviewed, staff["dave"])
    merge_button(reviewed)
    assert verify(reviewed) == (0, {})
    reviewed.write("ledger/instructions/second-one.yaml", instruction("second-one", target=IRAN))
    reviewed.commit("One signer is enough again", staff["alice"])
    assert verify(reviewed) == (0, {})


def propose_mallory(repo: LedgerRepo, staff: dict[str, SshKey]) -> None:
    """alice proposes a new signer, and bob approves."""
    repo.git("checkout", "-q", "-B", "topic", "main")
    signers = (repo.path / "ledger" / "allowed_signers").read_text()
    repo.write("ledger/allowed_signers", signers + f"mallory@ooni.example {staff['mallory'].public_text}\n")
    repo.commit("Add mallory", staff["alice"])
    approve(repo, staff["bob"])


def test_changing_allowed_signers_needs_the_largest_count(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose_mallory(reviewed, staff)
    merge = merge_button(reviewed)
    code, failures = verify(reviewed)
    assert code == 1 and "it changes allowed_signers" in failures[merge]
    assert failures[merge].startswith("needs 3 signers, has 2")


def test_a_new_signer_cannot_approve_their_own_admission(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose_mallory(reviewed, staff)
    approve(reviewed, staff["mallory"])  # valid only as of the branch, not as of main
    merge = merge_button(reviewed)
    assert verify(reviewed)[1][merge].startswith("needs 3 signers, has 2")


def test_a_policy_change_never_re_judges_accepted_history(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"])
    approve(reviewed, staff["bob"])
    two = merge_button(reviewed)
    assert verify(reviewed) == (0, {})
    verdicts = next((reviewed.path / ".git" / "opos").glob("verified-*"))
    before = verdicts.read_text()
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    reviewed.write("ledger/policy.yaml", "min_every: 15m\nreview:\n  signers: 3\n")
    reviewed.commit("Three signers for everything", staff["alice"])
    approve(reviewed, staff["bob"])
    approve(reviewed, staff["carol"])
    merge_button(reviewed)
    assert verify(reviewed) == (0, {})
    after = verdicts.read_text()
    assert after.startswith(before)  # appended to, never rewritten
    commits = [line.split("\t")[0] for line in after.splitlines()]
    assert len(commits) == len(set(commits))
    assert FileCache(verdicts).get(two) is not None and FileCache(verdicts).entries[two].approvers == (
        "alice@ooni.example", "bob@ooni.example",
    )  # fmt: skip
    verdicts.unlink()  # judged again from scratch: the same verdicts, under the policy each step had
    assert verify(reviewed) == (0, {})
    assert verdicts.read_text().splitlines()[-1] == after.splitlines()[-1]


def test_opos_approve_signs_an_empty_commit(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    propose(reviewed, staff["alice"])
    reviewed.git("config", "gpg.format", "ssh")
    reviewed.git("config", "user.signingkey", str(staff["bob"].private))
    result = opos("approve", "--repo", reviewed.path)
    assert result.code == 0, result.err
    assert "second-one" in result.out and "Approve" in reviewed.git("log", "-1", "--format=%s")
    assert reviewed.git("diff", "HEAD~1", "HEAD") == ""
    merge_button(reviewed)
    assert verify(reviewed) == (0, {})


def test_check_refuses_a_review_nobody_can_meet(reviewed: LedgerRepo, staff: dict[str, SshKey]) -> None:
    reviewed.write("ledger/policy.yaml", "review:\n  signers: 5\n  rules:\n    - countries: [UK]\n      signers: 2\n")
    result = opos("check", "--repo", reviewed.path, "--format", "json")
    assert result.code == 1
    messages = [p["message"] for p in json.loads(result.out)["problems"]]
    assert any("did you mean 'GB'" in m for m in messages)
    assert any("is not more than review.signers (5)" in m for m in messages)
    assert any("allowed_signers names 4 people" in m for m in messages)


def test_diff_and_verify_of_a_proposal_say_where_the_approvals_stand(
    reviewed: LedgerRepo, staff: dict[str, SshKey]
) -> None:
    propose(reviewed, staff["alice"], target=IRAN)
    approve(reviewed, staff["bob"])
    result = opos("diff", "main", "topic", "--repo", reviewed.path, "--format", "json")
    assert result.code == 0, result.err
    approvals = json.loads(result.out)["approvals"]
    assert approvals["approvers"] == ["alice@ooni.example", "bob@ooni.example"]
    assert (approvals["needed"], approvals["missing"]) == (3, 1)
    assert "its target can take probes in IR" in approvals["why"]
    markdown = opos("diff", "main", "topic", "--repo", reviewed.path, "--format", "markdown").out
    assert "**Approvals:** 2 of 3 needed (alice@ooni.example, bob@ooni.example)" in markdown
    assert "Needs another signer" in markdown
    assert opos("verify", "--repo", reviewed.path, "--rev", "topic").code == 1
    assert opos("verify", "--repo", reviewed.path, "--rev", "topic", "--proposal", "--since", "main").code == 0


@pytest.mark.slow
def test_the_service_serves_only_approved_steps_and_shows_who_approved(
    reviewed: LedgerRepo, staff: dict[str, SshKey], git_daemon: GitDaemon, start_service: Any
) -> None:
    bare = git_daemon.base / "reviewed.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    reviewed.git("remote", "add", "origin", git_daemon.url("reviewed.git"))
    reviewed.git("push", "-q", "origin", "main")
    service = start_service(git_daemon.url("reviewed.git"), workers=2)
    good = service.wait_for(service.served_commit, what="the first sync")

    reviewed.write("ledger/instructions/second-one.yaml", instruction("second-one", target=GERMANY))
    alone = reviewed.commit("Add second-one without review", staff["alice"])
    reviewed.git("push", "-q", "origin", "main")
    service.webhook("s3cret")
    problem = service.wait_for(lambda: service.get("/healthz").json()["problem"], what="the refusal")
    assert alone in problem and "needs 2 signers, has 1 (alice@ooni.example)" in problem
    assert service.served_commit() == good

    reviewed.git("reset", "-q", "--hard", good)
    propose(reviewed, staff["alice"])
    approve(reviewed, staff["bob"])
    merged = merge_button(reviewed)
    reviewed.git("push", "-q", "--force", "origin", "main")
    service.webhook("s3cret")
    service.wait_for(lambda: service.served_commit() == merged, what="the approved merge")

    feed = json.loads(base64.b64decode(service.get("/v1/feed.json").json()["payload"]))
    entries = {entry["id"]: entry for entry in feed["instructions"]}
    assert entries["second-one"]["signer"] == "alice@ooni.example"
    assert entries["second-one"]["approvers"] == ["bob@ooni.example"]
    assert "approvers" not in entries["first-one"]  # the pinned trust root: nobody else signed it
    jsonschema.validate(feed, resources.schema_document("feed.schema"))

    page = service.get("/log/second-one").body.decode()
    assert "signed by alice@ooni.example" in page and "approved by bob@ooni.example" in page
    events = service.get("/v1/log.json").json()["events"]
    added = next(e for e in events if e["instruction"] == "second-one")
    assert added["approvers"] == ["bob@ooni.example"] and added["commit"] == merged
    atom = service.get("/log.atom").body.decode()
    assert "<contributor><name>bob@ooni.example</name></contributor>" in atom
    log = opos("log", "--repo", reviewed.path)
    assert "signed by alice@ooni.example, approved by bob@ooni.example" in log.out


def test_a_tidy_branch_that_lowers_the_review_and_adds_a_signer_says_so_in_diff_and_approve(
    reviewed: LedgerRepo, staff: dict[str, SshKey]
) -> None:
    """Committed as "tidy", it printed "No instruction changes", and the approval signed that sentence."""
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    signers = (reviewed.path / "ledger" / "allowed_signers").read_text()
    reviewed.write("ledger/allowed_signers", signers + f"mallory@ooni.example {staff['mallory'].public_text}\n")
    reviewed.write("ledger/policy.yaml", "min_every: 15m\nreview:\n  signers: 1\n")
    reviewed.commit("tidy", staff["carol"])
    text = opos("diff", "main", "topic", "--repo", reviewed.path)
    assert text.code == 0, text.err
    lines = text.out.splitlines()
    assert lines[0].startswith("WARNING: this change LOWERS THE REVIEW: 2 signers everywhere, 3 for CN, IR → "
                               "1 signer everywhere")  # fmt: skip
    assert lines[1].startswith("WARNING: this change ADDS A SIGNER: mallory@ooni.example (SHA256:")
    assert "+ may sign: mallory@ooni.example SHA256:" in text.out
    assert "review: 2 signers everywhere, 3 for CN, IR → 1 signer everywhere" in text.out
    markdown = opos("diff", "main", "topic", "--repo", reviewed.path, "--format", "markdown").out
    assert markdown.startswith("> **WARNING: this change LOWERS THE REVIEW")
    document = json.loads(opos("diff", "main", "topic", "--repo", reviewed.path, "--format", "json").out)
    assert [s["principal"] for s in document["signers"]["added"]] == ["mallory@ooni.example"]
    assert document["policy"]["before"]["review"]["signers"] == 2 and document["policy"]["after"]["review"] == {
        "signers": 1, "rules": []}  # fmt: skip
    assert document["keys"] == [] and len(document["warnings"]) == 2
    reviewed.git("config", "gpg.format", "ssh")
    reviewed.git("config", "user.signingkey", str(staff["dave"].private))
    approved = opos("approve", "--repo", reviewed.path)
    assert approved.code == 0, approved.err
    message = reviewed.git("log", "-1", "--format=%B")
    assert "WARNING: this change LOWERS THE REVIEW" in message and "+ may sign: mallory@ooni.example" in message
    assert "WARNING: this change ADDS A SIGNER" in approved.out


def test_a_key_document_rotation_is_shown_before_and_after(
    reviewed: LedgerRepo, staff: dict[str, SshKey], tmp_path: Path
) -> None:
    made = {}
    for name in ("root", "feed-a", "feed-b", "auditor"):
        made[name] = tmp_path / name
        assert opos("keygen", "--out", made[name]).code == 0
    ledger = reviewed.path / "ledger"
    assert opos("keys", "init", "--root", made["root"], "--root-threshold", "1", "--feed-key",
                f"{made['feed-a']}.pub", "--ledger", ledger).code == 0  # fmt: skip
    reviewed.commit("Keys: version 1", staff["alice"])
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    rotated = opos("keys", "rotate", "--root", made["root"], "--add-feed-key", f"{made['feed-b']}.pub",
                   "--remove-feed-key", feed_id(made["feed-a"]), "--ledger", ledger)  # fmt: skip
    assert rotated.code == 0, rotated.err
    reviewed.commit("Rotate the feed key", staff["carol"])
    text = opos("diff", "main", "topic", "--repo", reviewed.path).out
    ids = {name: feed_id(made[name]) for name in ("feed-a", "feed-b")}
    assert text.splitlines()[0] == "WARNING: this change CHANGES THE KEYS: key document version 2"
    assert f"feed_keys: {ids['feed-a']} → {ids['feed-b']}" in text
    keys = json.loads(opos("diff", "main", "topic", "--repo", reviewed.path, "--format", "json").out)["keys"]
    assert keys[0]["before"]["version"] == 1 and keys[0]["after"]["feed_keys"] == [ids["feed-b"]]


def feed_id(path: Path) -> str:
    from opos.signing import keys as feed_keys

    return feed_keys.key_id(feed_keys.load_public(Path(f"{path}.pub")))


def test_approving_ones_own_change_is_refused_and_says_who_could(
    reviewed: LedgerRepo, staff: dict[str, SshKey]
) -> None:
    """It said "Approved as carol" (exit 0) and added nothing; only verify later said a signer was missing."""
    propose(reviewed, staff["carol"])
    before = reviewed.head()
    reviewed.git("config", "gpg.format", "ssh")
    reviewed.git("config", "user.signingkey", str(staff["carol"].private))
    refused = opos("approve", "--repo", reviewed.path)
    assert refused.code == 1 and "you (carol@ooni.example) signed this change already" in refused.err
    assert "Ask alice@ooni.example, bob@ooni.example, dave@ooni.example to run `opos approve`" in refused.err
    assert reviewed.head() == before  # nothing was committed
    reviewed.git("config", "user.signingkey", str(staff["dave"].private))
    assert opos("approve", "--repo", reviewed.path).code == 0


def test_a_key_document_is_credited_to_its_author_and_approved_by_the_others(
    reviewed: LedgerRepo, staff: dict[str, SshKey], tmp_path: Path
) -> None:
    """keys-rotated said "signer: dave, approvers: carol" when carol wrote the document and dave merged it."""
    root, feed = tmp_path / "root", tmp_path / "feed"
    for path in (root, feed):
        assert opos("keygen", "--out", path).code == 0
    reviewed.git("checkout", "-q", "-B", "topic", "main")
    assert opos("keys", "init", "--root", root, "--root-threshold", "1", "--feed-key", f"{feed}.pub", "--ledger",
                reviewed.path / "ledger").code == 0  # fmt: skip
    reviewed.commit("Keys: version 1", staff["carol"])
    approve(reviewed, staff["bob"])
    approve(reviewed, staff["dave"])
    reviewed.git("checkout", "-q", "main")
    reviewed.git("-c", f"user.signingkey={staff['dave'].private}", "-c", "gpg.format=ssh", "merge", "-q", "--no-ff",
                 "-S", "--no-edit", "topic")  # fmt: skip
    assert verify(reviewed) == (0, {})
    events = json.loads(opos("log", "--repo", reviewed.path, "--json").out)["events"]
    rotated = next(e for e in events if e["action"] == "keys-rotated")
    assert rotated["signer"] == "carol@ooni.example", rotated
    assert set(rotated["approvers"]) == {"bob@ooni.example", "dave@ooni.example"}
