"""One verified history: the attacks that shaped merge commits, shared keys and clocks to change what probes
follow without k staff signatures, each mounted with the real git (`git commit-tree`, `git commit -S`) and
refused by every entry point: `opos verify --since`, `opos render` onto a published site, the service under
gunicorn (it keeps serving what it served and /healthz names the refused commit) and `opos auditor cosign`.

The stories:
- `main_story`: T (alice, bob, carol, mallory allowed; no review) → S1 (review: 2, adds `dangerous`) →
  S2 (removes `dangerous` and mallory; alice + bob) → CUR (removes `risky`, adds `inst-c`; carol + bob),
  published at sequence 3; `topic-x` (inst-x by alice, approved by bob) forked at S2 and never merged.
- `handover`: one key under alice@old (valid before 2026-12-01) and alice@new (valid after), review 2.
- `expired`: alice's key valid before 2026-12-01; later she backdates a commit to before its parent.
- `keys_story`: key documents 1 and 2 committed; a signed commit deletes 2.json.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given, settings
from hypothesis import strategies as st
from test_history_rules import ALICE, BOB, MemoryLedger, TwoSigners, signer_line

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.instructions import rules
from opos.model import KeyFingerprint, Signer
from opos.publish import render
from opos.signing import keys as feed_keys
from opos.signing.documents import FeedEntry
from opos.trust.gitrepo import GitLedger
from opos.trust.history import Verifier, distinct_people
from opos.trust.verdicts import CommitInfo
from servers import AuditorProcess, GitDaemon, Service

SECRET = "s3cret"
MALLORY = ed25519.Ed25519PrivateKey.from_private_bytes(bytes([3]) * 32)  # not in allowed_signers
REVIEW = "min_every: 15m\nreview:\n  signers: 2\n"


@dataclass
class Story:
    repo: LedgerRepo
    commits: dict[str, str]  # the honest history's named commits; "cur" is the one published
    attacks: dict[str, str] = field(default_factory=dict)  # name -> the commit an attacker makes main point to
    feed_key: Path = Path()
    site: Path = Path()  # rendered at "cur"
    auditor_key: Path = Path()
    auditor_state: Path = Path()  # has cosigned "cur"

    @property
    def cur(self) -> str:
        return self.commits["cur"]


def signing(key: SshKey) -> list[str]:
    return ["-c", "gpg.format=ssh", "-c", f"user.signingkey={key.private}"]


def commit_tree(repo: LedgerRepo, tree: str, *parents: str, key: SshKey | None = None, date: str | None = None) -> str:
    """A commit made with plumbing, as an attacker would: any tree, any parents, signed or not."""
    args = [*(signing(key) if key else []), "commit-tree", *[x for p in parents for x in ("-p", p)]]
    env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {}
    return repo.git(*args, *(["-S"] if key else []), "-m", "Merge branch 'main'", tree, env=env)


def tree_with(repo: LedgerRepo, base: str, path: str, text: str) -> str:
    """The tree of `base` with one more file, written without touching the work tree."""
    index = repo.path.parent / "attack-index"
    env = {"GIT_INDEX_FILE": str(index)}
    repo.git("read-tree", f"{base}^{{tree}}", env=env)
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=repo.path, input=text, text=True,
                          capture_output=True, check=True).stdout.strip()  # fmt: skip
    repo.git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}", env=env)
    tree = repo.git("write-tree", env=env)
    index.unlink()
    return tree


def merge_button(repo: LedgerRepo, branch: str, date: str | None = None) -> str:
    """What the hosting site's merge button makes: an unsigned merge commit whose tree is the branch's."""
    repo.git("checkout", "-q", "main")
    env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {}
    repo.git("-c", "commit.gpgsign=false", "merge", "-q", "--no-ff", "--no-edit", branch, env=env)
    return repo.head()


def reviewed_step(repo: LedgerRepo, author: SshKey, reviewer: SshKey, change: Callable[[], None], branch: str) -> str:
    """A change on `branch` signed by its author, approved by a reviewer, landed with the merge button."""
    repo.git("checkout", "-q", "-B", branch, "main")
    change()
    repo.commit(f"Change on {branch}", author)
    repo.commit(f"Approve {branch}", reviewer)
    return merge_button(repo, branch)


def publish_and_cosign(story: Story, tmp: Path, feed_key: Path | None = None) -> None:
    """Render the site at CUR and have an auditor cosign it: what the attacks then try to move."""
    story.feed_key, story.site = feed_key or tmp / "feed-key", tmp / "site"
    story.auditor_key, story.auditor_state = tmp / "auditor-key", tmp / "auditor-state"
    assert feed_key is not None or opos("keygen", "--out", story.feed_key).code == 0
    assert opos("keygen", "--out", story.auditor_key).code == 0
    rendered = opos(
        "render", "--repo", story.repo.path, "--rev", story.cur, "--key", story.feed_key, "--out", story.site
    )
    assert rendered.code == 0, rendered.err
    cosigned = auditor_cosign(story, story.site / "v1" / "feed" / f"{story.cur}.json", story.cur, story.auditor_state)
    assert cosigned.code == 0, cosigned.err


def auditor_cosign(story: Story, feed: Path, tip: str, state: Path) -> object:
    story.repo.git("update-ref", "refs/heads/public", tip)  # the auditor's clone sees main at `tip`
    return opos("auditor", "cosign", feed, "--key", story.auditor_key, "--feed-key", f"{story.feed_key}.pub",
                "--repo", story.repo.path, "--state", state, "--branch", "public")  # fmt: skip


def feed_signed_for(story: Story, commit: str, out: Path) -> Path:
    """The feed a publisher without the first-parent rule signed for `commit`: what the auditor is asked to cosign."""
    with GitLedger(story.repo.path) as ledger:
        info = ledger.commit(ledger.resolve(commit))
        checked = rules.check_ledger(ledger.ledger_files(info))
        entries = [FeedEntry(i, info.id, None) for i in checked.instructions.values()]
        committed = dt.datetime.fromtimestamp(info.committed, dt.UTC)
    sequence = int(story.repo.git("rev-list", "--first-parent", "--count", commit)) - 1
    payload = render.feed_payload(info.id, sequence, committed, entries)
    out.write_bytes(render.sign("feed", payload, feed_keys.load_private(story.feed_key)))
    return out


def refused_everywhere_but_the_service(story: Story, name: str, tmp: Path, reason: str) -> None:
    attack = story.attacks[name]
    verified = opos("verify", "--repo", story.repo.path, "--rev", attack, "--since", story.cur)
    assert verified.code == 1 and reason in verified.out, (name, verified.out, verified.err)
    assert story.cur in verified.err and f"The last accepted commit is {story.cur}" in verified.err
    site = tmp / f"site-{name}"
    shutil.copytree(story.site, site)
    head = (site / "v1" / "head.json").read_bytes()
    rendered = opos("render", "--repo", story.repo.path, "--rev", attack, "--key", story.feed_key, "--out", site)
    assert rendered.code == 1 and "Traceback" not in rendered.err, (name, rendered.err)
    assert (site / "v1" / "head.json").read_bytes() == head and not (site / "v1" / "feed" / f"{attack}.json").exists()
    state = tmp / f"auditor-{name}"
    shutil.copytree(story.auditor_state, state)
    log = (state / "cosigned.jsonl").read_bytes()
    feed = feed_signed_for(story, attack, tmp / f"feed-{name}.json")
    cosigned = auditor_cosign(story, feed, attack, state)
    assert cosigned.code in (1, 3), (name, cosigned.code, cosigned.err)  # type: ignore[attr-defined]
    assert (state / "cosigned.jsonl").read_bytes() == log
    audited = opos("audit", feed, "--key", f"{story.feed_key}.pub", "--repo", story.repo.path, "--since", story.cur)
    assert audited.code == 1 and "Traceback" not in audited.err and attack in audited.err, (name, audited.err)


def service_refuses(story: Story, start_service: Callable[..., Service], daemon: GitDaemon) -> None:
    """The service follows the story's bare repository: it publishes CUR, then refuses each attack pushed to main
    (it keeps serving CUR and /healthz names the refused commit), and serves CUR again once main is back."""
    bare = daemon.base / f"{story.repo.path.name}.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    story.repo.git("push", "-q", "--force", str(bare), f"{story.cur}:refs/heads/main")
    service = start_service(daemon.url(bare.name), feed_key=str(story.feed_key), min_sync_interval_seconds="0.01")
    service.wait_for(lambda: service.served_commit() == story.cur, 30, "CUR served")
    for name, attack in story.attacks.items():
        story.repo.git("push", "-q", "--force", str(bare), f"{attack}:refs/heads/main")
        assert service.webhook(SECRET).status in (200, 202)
        problem = service.wait_for(lambda a=attack: a in str(service.get("/healthz").json().get("problem")), 30,
                                   f"{name} refused")  # fmt: skip
        assert service.served_commit() == story.cur, (name, problem)
        assert service.get("/healthz").status == 503
    story.repo.git("push", "-q", "--force", str(bare), f"{story.cur}:refs/heads/main")
    assert service.webhook(SECRET).status in (200, 202)
    service.wait_for(lambda: service.get("/healthz").status == 200, 30, "healthy again on CUR")


@pytest.fixture(scope="module")
def main_story(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> Story:
    tmp = tmp_path_factory.mktemp("main-story")
    repo = LedgerRepo(tmp / "ledger-repo")
    repo.git("config", "user.name", "Staff")
    repo.git("config", "user.email", "staff@ooni.example")
    everyone = [f"{name}@ooni.example {keys[name].public_text}" for name in ("alice", "bob", "carol", "mallory")]
    repo.signers(everyone)
    repo.write("ledger/policy.yaml", "min_every: 15m\n")
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    repo.write("ledger/instructions/risky.yaml", instruction("risky"))
    commits = {"t": repo.commit("Trust root", keys["alice"])}
    repo.write("ledger/policy.yaml", REVIEW)
    repo.write("ledger/instructions/dangerous.yaml", instruction("dangerous"))
    commits["s1"] = repo.commit("Two signers from now on; dangerous", keys["alice"])

    def without_dangerous() -> None:
        repo.remove("ledger/instructions/dangerous.yaml")
        repo.signers(everyone[:3])

    commits["s2"] = reviewed_step(repo, keys["alice"], keys["bob"], without_dangerous, "s2")
    repo.git("checkout", "-q", "-B", "topic-x", commits["s2"])
    repo.write("ledger/instructions/inst-x.yaml", instruction("inst-x"))
    repo.commit("Add inst-x", keys["alice"])
    commits["topic-x"] = repo.commit("Approve inst-x", keys["bob"])
    repo.git("checkout", "-q", "main")

    def remove_risky() -> None:
        repo.remove("ledger/instructions/risky.yaml")
        repo.write("ledger/instructions/inst-c.yaml", instruction("inst-c"))

    commits["cur"] = reviewed_step(repo, keys["carol"], keys["bob"], remove_risky, "cur")
    story = Story(repo, commits)
    # H1: the ledger of S1 again, on a chain of unsigned no-op commits, merged with CUR as its second parent
    chain = commits["s1"]
    for _ in range(3):
        chain = commit_tree(repo, f"{commits['s1']}^{{tree}}", chain)
    story.attacks["h1"] = commit_tree(repo, f"{commits['s1']}^{{tree}}", chain, commits["cur"])
    # H1b: CUR's ledger with the trust root (then CUR's own first parent) as first parent: a lower or equal sequence
    story.attacks["h1b-root"] = commit_tree(repo, f"{commits['cur']}^{{tree}}", commits["t"], commits["cur"])
    story.attacks["h1b-same"] = commit_tree(repo, f"{commits['cur']}^{{tree}}", f"{commits['cur']}^", commits["cur"])
    # H2: mallory, allowed at T, signs a merge of an unsigned chain off T with CUR, adding evil
    chain = commit_tree(repo, f"{commits['t']}^{{tree}}", commits["t"])
    evil = tree_with(repo, commits["cur"], "ledger/instructions/evil.yaml", instruction("evil"))
    story.attacks["h2"] = commit_tree(repo, evil, chain, commits["cur"], key=keys["mallory"])
    # H3: the stale approved branch topic-x merged unsigned onto CUR: risky comes back, inst-c goes
    story.attacks["h3"] = commit_tree(repo, f"{commits['topic-x']}^{{tree}}", commits["cur"], commits["topic-x"])
    publish_and_cosign(story, tmp)
    return story


@pytest.mark.parametrize(
    ("name", "reason"),
    [("h1", "history rewritten"), ("h1b-root", "history rewritten"), ("h1b-same", "history rewritten"),
     ("h2", "history rewritten"), ("h3", "merge of a branch that does not contain")],
)  # fmt: skip
def test_each_merge_graph_attack_is_refused_by_verify_render_and_the_auditor(
    main_story: Story, name: str, reason: str, tmp_path: Path
) -> None:
    refused_everywhere_but_the_service(main_story, name, tmp_path, reason)


def test_seen_from_the_trust_root_alone_h1_and_h2_are_a_valid_fork_which_memory_refuses(main_story: Story) -> None:
    """What refuses H1 and H2 is whoever remembers CUR: without --since they verify (docs/security.md says why)."""
    for name in ("h1", "h2", "h1b-same"):
        assert opos("verify", "--repo", main_story.repo.path, "--rev", main_story.attacks[name]).code == 0, name
    assert opos("verify", "--repo", main_story.repo.path, "--rev", main_story.attacks["h3"]).code == 1


@pytest.mark.slow
def test_the_service_refuses_every_merge_graph_attack(
    main_story: Story, start_service: Callable[..., Service], git_daemon: GitDaemon
) -> None:
    service_refuses(main_story, start_service, git_daemon)


@pytest.mark.slow
def test_a_served_auditor_refuses_every_merge_graph_attack(main_story: Story, tmp_path: Path) -> None:
    """`opos auditor serve` (gunicorn) cosigned CUR; each attack on its remote gets 409 or 422, its log unchanged."""
    bare = tmp_path / "public.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    main_story.repo.git("push", "-q", "--force", str(bare), f"{main_story.cur}:refs/heads/main")
    env = {"OPOS_AUDITOR_KEY": str(main_story.auditor_key), "OPOS_AUDITOR_FEED_KEYS": f"{main_story.feed_key}.pub",
           "OPOS_AUDITOR_STATE": str(tmp_path / "state"), "OPOS_AUDITOR_REMOTE": str(bare)}  # fmt: skip
    auditor = AuditorProcess(env, tmp_path / "auditor.log")
    try:
        first = auditor.cosign((main_story.site / "v1" / "feed" / f"{main_story.cur}.json").read_bytes())
        assert first.status == 200, first.body
        log = (tmp_path / "state" / "cosigned.jsonl").read_bytes()
        expected = {"h1": 409, "h1b-root": 409, "h1b-same": 409, "h2": 409, "h3": 422}
        for name, status in expected.items():
            attack = main_story.attacks[name]
            main_story.repo.git("push", "-q", "--force", str(bare), f"{attack}:refs/heads/main")
            answer = auditor.cosign(feed_signed_for(main_story, attack, tmp_path / f"{name}.json").read_bytes())
            assert answer.status == status, (name, answer.status, answer.body)
        assert (tmp_path / "state" / "cosigned.jsonl").read_bytes() == log
    finally:
        auditor.stop()


@pytest.fixture(scope="module")
def handover(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> Story:
    """M1: one key, two principals (a hand-over), under review 2: alice alone authors and "approves"."""
    tmp = tmp_path_factory.mktemp("handover")
    repo = LedgerRepo(tmp / "ledger-repo")
    alice = keys["alice"].public_text
    repo.signers([f'alice@old.example valid-before="20261201" {alice}', f'alice@new.example valid-after="20261201" '
                  f"{alice}", f"bob@ooni.example {keys['bob'].public_text}"])  # fmt: skip
    repo.write("ledger/policy.yaml", REVIEW)
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    commits = {"t": repo.commit("Trust root", keys["alice"], "2026-11-01T10:00:00Z")}
    commits["cur"] = commits["t"]
    repo.git("checkout", "-q", "-b", "topic")
    repo.write("ledger/instructions/alone.yaml", instruction("alone"))
    repo.commit("Add alone", keys["alice"], "2026-11-20T10:00:00Z")
    repo.commit("Approve alone", keys["alice"], "2026-12-02T10:00:00Z")
    story = Story(repo, commits, {"m1": merge_button(repo, "topic", "2026-12-02T11:00:00Z")})
    publish_and_cosign(story, tmp)
    return story


def test_one_key_under_two_principals_is_one_person(handover: Story, tmp_path: Path) -> None:
    refused_everywhere_but_the_service(handover, "m1", tmp_path, "needs 2 signers, has 1 (alice@")
    check = opos("check", "--repo", handover.repo.path)
    assert "alice@old.example and alice@new.example" in check.out + check.err and "one key" in check.out + check.err


@pytest.fixture(scope="module")
def expired(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> Story:
    """L2: alice's key stops at 2026-12-01; after bob's change of 2026-12-02 she signs one dated 2026-11-25."""
    tmp = tmp_path_factory.mktemp("expired")
    repo = LedgerRepo(tmp / "ledger-repo")
    repo.signers([f'alice@ooni.example valid-before="20261201" {keys["alice"].public_text}',
                  f"bob@ooni.example {keys['bob'].public_text}"])  # fmt: skip
    repo.write("ledger/policy.yaml", "min_every: 15m\n")
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    commits = {"t": repo.commit("Trust root", keys["bob"], "2026-11-01T10:00:00Z")}
    repo.write("ledger/instructions/by-bob.yaml", instruction("by-bob"))
    commits["cur"] = repo.commit("By bob", keys["bob"], "2026-12-02T10:00:00Z")
    repo.write("ledger/instructions/late.yaml", instruction("late"))
    story = Story(repo, commits, {"l2": repo.commit("Backdated", keys["alice"], "2026-11-25T10:00:00Z")})
    repo.git("reset", "-q", "--hard", commits["cur"])
    publish_and_cosign(story, tmp)
    return story


def test_a_key_past_its_validity_cannot_sign_by_backdating(expired: Story, tmp_path: Path) -> None:
    refused_everywhere_but_the_service(expired, "l2", tmp_path, "backdated: committed at 2026-11-25T10:00:00Z")


@pytest.fixture(scope="module")
def keys_story(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, SshKey]) -> Story:
    """L3: key documents 1 and 2 are committed; then a signed commit deletes keys/2.json."""
    tmp = tmp_path_factory.mktemp("keys-story")
    made = {}
    for name in ("root", "feed-a", "feed-b"):
        made[name] = tmp / name
        assert opos("keygen", "--out", made[name]).code == 0
    repo = LedgerRepo(tmp / "ledger-repo")
    repo.signers([f"alice@ooni.example {keys['alice'].public_text}"])
    repo.write("ledger/policy.yaml", "min_every: 15m\n")
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    ledger = repo.path / "ledger"
    assert opos("keys", "init", "--root", made["root"], "--root-threshold", "1", "--feed-key",
                f"{made['feed-a']}.pub", "--ledger", ledger).code == 0  # fmt: skip
    commits = {"t": repo.commit("Trust root with key document 1", keys["alice"])}
    assert opos("keys", "rotate", "--root", made["root"], "--add-feed-key", f"{made['feed-b']}.pub",
                "--ledger", ledger).code == 0  # fmt: skip
    commits["cur"] = repo.commit("Key document 2", keys["alice"])
    repo.remove("ledger/keys/2.json")
    story = Story(repo, commits, {"l3": repo.commit("Back to version 1", keys["alice"])})
    repo.git("reset", "-q", "--hard", commits["cur"])
    publish_and_cosign(story, tmp, made["feed-a"])  # a feed key the documents list
    return story


def test_a_key_document_removed_is_refused_by_every_entry_point(keys_story: Story, tmp_path: Path) -> None:
    refused_everywhere_but_the_service(keys_story, "l3", tmp_path, "keys/2.json was changed or removed")
    verified = opos("verify", "--repo", keys_story.repo.path, "--rev", keys_story.attacks["l3"])
    assert f"The last accepted commit is {keys_story.cur}" in verified.err  # never the refused commit itself


@pytest.mark.slow
@pytest.mark.parametrize("story_name", ["handover", "expired", "keys_story"])
def test_the_service_refuses_a_shared_key_a_backdated_signature_and_a_removed_key_document(
    story_name: str, request: pytest.FixtureRequest, start_service: Callable[..., Service], git_daemon: GitDaemon
) -> None:
    service_refuses(request.getfixturevalue(story_name), start_service, git_daemon)


# The positive cases: what staff do every day still lands.


@pytest.fixture
def reviewed(tmp_path: Path, keys: dict[str, SshKey]) -> LedgerRepo:
    repo = LedgerRepo(tmp_path / "reviewed")
    repo.signers([f"{name}@ooni.example {keys[name].public_text}" for name in ("alice", "bob", "carol")])
    repo.write("ledger/policy.yaml", REVIEW)
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    repo.commit("Trust root", keys["alice"])
    repo.git("config", "user.name", "Staff")
    repo.git("config", "user.email", "staff@ooni.example")
    return repo


def lands(repo: LedgerRepo, before: str) -> None:
    result = opos("verify", "--repo", repo.path, "--since", before)
    assert result.code == 0, result.out + result.err


def behind_main(repo: LedgerRepo, keys: dict[str, SshKey], on_topic: str, on_main: str) -> str:
    """A branch `topic` whose signed change (first-one's title) is behind main, where another reviewed change
    landed since (a change of first-one too when both titles are given: a conflict); checked out on topic.
    Returns the commit main is at."""
    repo.git("checkout", "-q", "-b", "topic")
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one", title=on_topic))
    repo.commit("Change on topic", keys["alice"])
    repo.git("checkout", "-q", "main")
    before = repo.head()
    path = "ledger/instructions/" + ("first-one.yaml" if on_main else "other-one.yaml")
    text = instruction("first-one", title=on_main) if on_main else instruction("other-one")
    landed = reviewed_step(repo, keys["bob"], keys["carol"], lambda: repo.write(path, text), "meanwhile")
    lands(repo, before)
    repo.git("checkout", "-q", "topic")
    return landed


def test_a_branch_updated_with_a_signed_merge_of_main_then_approved_lands(
    reviewed: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    landed = behind_main(reviewed, keys, "From the branch", "")
    reviewed.git(*signing(keys["alice"]), "merge", "-q", "-S", "--no-edit", "main")  # the branch brought up to date
    reviewed.commit("Approve on-topic", keys["bob"])
    merge_button(reviewed, "topic")
    lands(reviewed, landed)


def test_a_fast_forward_of_signed_commits_lands_without_review(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    base = ledger_repo.head()
    ledger_repo.git("checkout", "-q", "-b", "topic")
    for name in ("one-more", "two-more"):
        ledger_repo.write(f"ledger/instructions/{name}.yaml", instruction(name))
        ledger_repo.commit(f"Add {name}", keys["alice"])
    ledger_repo.git("checkout", "-q", "main")
    ledger_repo.git("merge", "-q", "--ff-only", "topic")
    lands(ledger_repo, base)


def test_an_approval_after_a_rebase_lands(reviewed: LedgerRepo, keys: dict[str, SshKey]) -> None:
    landed = behind_main(reviewed, keys, "From the branch", "")
    reviewed.git(*signing(keys["alice"]), "rebase", "-q", "-S", "main")
    reviewed.commit("Approve rebased", keys["carol"])
    merge_button(reviewed, "topic")
    lands(reviewed, landed)


def test_a_signed_merge_that_resolves_a_conflict_and_is_approved_lands(
    reviewed: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    landed = behind_main(reviewed, keys, "From the branch", "From main")
    reviewed.git("merge", "-q", "main", check=False)  # a conflict in first-one.yaml
    assert "CONFLICT" in reviewed.git("status") or "Unmerged" in reviewed.git("status")
    reviewed.write("ledger/instructions/first-one.yaml", instruction("first-one", title="Resolved"))
    reviewed.git("add", "-A")
    reviewed.git(*signing(keys["alice"]), "commit", "-q", "-S", "--no-edit")
    reviewed.commit("Approve the resolution", keys["bob"])
    merge_button(reviewed, "topic")
    lands(reviewed, landed)


def test_a_branch_merged_up_to_date_with_the_merge_button_lands_and_a_stale_one_does_not(
    reviewed: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    base = reviewed.head()
    landed = reviewed_step(reviewed, keys["alice"], keys["bob"], lambda: reviewed.write(
        "ledger/instructions/fresh.yaml", instruction("fresh")), "fresh")  # fmt: skip
    lands(reviewed, base)
    reviewed.git("checkout", "-q", "-b", "stale", base)  # forked before `fresh` landed, never updated
    reviewed.write("ledger/instructions/stale.yaml", instruction("stale"))
    reviewed.commit("Add stale", keys["alice"])
    reviewed.commit("Approve stale", keys["bob"])
    reviewed.git("checkout", "-q", "main")
    stale = commit_tree(reviewed, "stale^{tree}", landed, "stale")  # what a merge 'taking theirs' would make
    result = opos("verify", "--repo", reviewed.path, "--rev", stale, "--since", landed)
    assert result.code == 1 and "does not contain" in result.out


def test_a_stale_branch_cannot_be_made_to_contain_its_base_with_an_unsigned_no_op_merge(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    """H3 again, without a review and through one more commit (found by the property test): an unsigned merge of P
    into the stale branch that keeps the branch's ledger "contains" P, so the merge button's rule alone would land
    the stale ledger; no signed commit that contains P holds it, so it is refused."""
    base = ledger_repo.head()
    ledger_repo.git("checkout", "-q", "-b", "stale")
    ledger_repo.write("ledger/instructions/stale.yaml", instruction("stale"))
    stale = ledger_repo.commit("Add stale", keys["alice"])
    ledger_repo.git("checkout", "-q", "main")
    ledger_repo.remove("ledger/instructions/first-one.yaml")
    landed = ledger_repo.commit("Remove first-one", keys["alice"])
    lands(ledger_repo, base)
    contains = commit_tree(ledger_repo, f"{stale}^{{tree}}", stale, landed)  # no-op for the branch
    attack = commit_tree(ledger_repo, f"{stale}^{{tree}}", landed, contains)  # first-one back, unsigned
    result = opos("verify", "--repo", ledger_repo.path, "--rev", attack, "--since", landed)
    assert result.code == 1 and "none of whose signed commits contains" in result.out


# Who is a person: keys and principals.


def test_distinct_people_joins_shared_keys_and_shared_principals() -> None:
    def signer(principal: str, key: str) -> Signer:
        return Signer(principal, KeyFingerprint(f"SHA256:{key}"))

    same_key = [signer("alice@old", "K1"), signer("alice@new", "K1")]
    same_person = [signer("bob", "K2"), signer("bob", "K3")]
    chained = [signer("carol", "K4"), signer("carol,dave", "K5"), signer("dave", "K6")]
    assert distinct_people(same_key) == ("alice@new",)
    assert distinct_people(same_person) == ("bob",)
    assert distinct_people(chained) == ("carol",)
    assert len(distinct_people([*same_key, *same_person])) == 2


# The property: whatever the merge graph, an accepted head's ledger changed only by what k people signed.


@st.composite
def merge_graphs(draw: st.DrawFn) -> tuple[MemoryLedger, list[str]]:
    source = MemoryLedger()
    signers = {"allowed_signers": (signer_line("alice", ALICE) + signer_line("bob", BOB)).encode()}
    commits = [source.add({**signers, "a.yaml": b"0"}, key=ALICE)]
    for _ in range(draw(st.integers(1, 12))):
        first = draw(st.sampled_from(commits[-3:]))  # mostly a line of work, with branches off anywhere
        second = draw(st.none() | st.sampled_from(commits))
        parents = (first,) if second is None or second == first else (first, second)
        content = draw(st.sampled_from(["first", "second", "new"]))
        tree_of = source.ledger_tree(source.commit(parents[-1] if content == "second" else first))
        ledger = dict(source.ledgers[tree_of]) if tree_of else {}
        if content == "new":
            ledger["a.yaml"] = str(draw(st.integers(0, 2))).encode()
        key = draw(st.sampled_from([None, ALICE, BOB, MALLORY]))
        commits.append(source.add(ledger, parents, key))
    return source, commits


def justified(source: MemoryLedger, step: CommitInfo, parent: CommitInfo, needed: int) -> bool:
    """The brute-force rule: the commits that bring the step's ledger, contain its parent and are signed by an
    allowed key (alice or bob; mallory is not) are by at least `needed` people."""
    ancestors = _ancestry(source)
    brought = ancestors[step.id] - ancestors[parent.id]
    people = set()
    for commit in brought:
        info = source.commit(commit)
        if info.tree != step.tree or parent.id not in ancestors[commit]:
            continue
        people.update(name for name, key in (("alice", ALICE), ("bob", BOB)) if source.signed_by.get(commit) is key)
    return len(people) >= needed


def _ancestry(source: MemoryLedger) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for commit, info in source.commits.items():  # parents were added first
        found[commit] = {commit}.union(*(found[p] for p in info.parents))
    return found


@settings(max_examples=600, deadline=None)
@given(merge_graphs(), st.sampled_from([1, 2]))
def test_no_merge_graph_changes_an_accepted_ledger_without_its_signatures(
    graph: tuple[MemoryLedger, list[str]], needed: int
) -> None:
    source, commits = graph
    root = commits[0]
    review = TwoSigners() if needed == 2 else None
    verifier = Verifier(source, root, review=review)
    accepted = [c for c in commits if verifier.verify(c).ok]
    for head in accepted:
        for since in accepted:
            if not verifier.on_chain(head, since):
                continue
            step = source.commit(head)
            while step.id != since:  # every first-parent step from `since` up to `head`
                parent = source.commit(step.parents[0])
                if step.tree != parent.tree:
                    assert justified(source, step, parent, needed), (since, head, step.id)
                step = parent
