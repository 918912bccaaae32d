"""The demo's ledger: staff keys, signed commits, reviewed changes and key documents, made without a `git` binary."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.model import CommitHash, format_time
from opos.signing import keydoc, keys, sshsig
from opos.trust.gitrepo import GitLedger, check_out, init_repository, write_commit


def _staff_key(folder: Path, name: str) -> tuple[ed25519.Ed25519PrivateKey, str]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    (folder / name).write_bytes(private)
    (folder / name).chmod(0o600)
    line = keys.public_line(key.public_key(), f"{name}@ooni.example")
    (folder / f"{name}.pub").write_text(line)
    return key, " ".join(line.split()[:2])


def _signer(key: ed25519.Ed25519PrivateKey) -> Callable[[bytes], bytes]:
    return lambda payload: sshsig.sign_ed25519(key, payload)


def _instruction(ident: str, body: str) -> bytes:
    return f"id: {ident}\n{body}".encode()


def land_reviewed(
    ledger: GitLedger,
    base: CommitHash,
    changes: dict[str, bytes | None],
    message: str,
    author: ed25519.Ed25519PrivateKey,
    reviewer: ed25519.Ed25519PrivateKey,
    when: int,
) -> tuple[CommitHash, list[CommitHash]]:
    """A pull request under the two-person rule: the author's commit on a branch, the reviewer's empty
    approval on top (what `opos approve` makes), and the reviewer's signed merge commit on main.

    Returns the merge and the branch's commits.
    """
    staff = "OONI staff <staff@ooni.example>"
    authored = write_commit(ledger, changes, f"{message}\n", staff, when, (base,), _signer(author), "topic")
    approved = write_commit(ledger, {}, f"Approve: {message}\n", staff, when + 10, (authored,), _signer(reviewer),
                            "topic")  # fmt: skip
    # the merge holds the branch's ledger: the base's tree with the branch's changes
    merge = write_commit(ledger, changes, "Merge branch 'topic'\n", staff, when + 20, (base, approved),
                         _signer(reviewer))  # fmt: skip
    return merge, [authored, approved]


def build_demo_ledger(folder: Path, now: dt.datetime) -> tuple[Path, list[str]]:
    """A ledger repository with signed commits by two staff members, the later changes approved by the
    other one (policy.yaml asks two signers from the fourth commit on), and key documents signed by an
    offline root key: version 1 names the feed key `feed-key-old`, version 2 rotates it to `feed-key` and
    names the demo's auditor (`auditor-key`), whose cosignature every head then needs.
    Returns the repository's path and its log."""
    root = _private_key(folder / "root-key", "opos demo root key")
    old_feed = _private_key(folder / "feed-key-old", "opos demo feed key, rotated out")
    feed = _private_key(folder / "feed-key", "opos demo feed key")
    auditor = _private_key(folder / "auditor-key", "opos demo auditor")
    expires = now.replace(microsecond=0) + dt.timedelta(days=365)
    root_key = keydoc.Key.of(root.public_key())
    first_keys = keydoc.KeyDocument(1, expires, (root_key,), 1, (keydoc.Key.of(old_feed.public_key()),))
    rotated = replace(first_keys, version=2, feed_keys=(keydoc.Key.of(feed.public_key()),),
                      auditors=(keydoc.Key.of(auditor.public_key()),), auditors_required=1)  # fmt: skip
    keys_dir = folder / "staff-keys"
    keys_dir.mkdir(parents=True)
    alice, alice_pub = _staff_key(keys_dir, "alice")
    bob, bob_pub = _staff_key(keys_dir, "bob")
    repo_path = folder / "ledger-repo"
    ledger = init_repository(repo_path)
    start = now.replace(microsecond=0) - dt.timedelta(hours=1)
    window = f"window:\n  start: {format_time(start)}\n  end: {format_time(start + dt.timedelta(days=14))}\n"
    files: dict[str, bytes | None] = {
        "ledger/allowed_signers": f"alice@ooni.example {alice_pub}\n".encode(),
        "ledger/policy.yaml": POLICY,
        "ledger/instructions/.gitkeep": b"",
        "ledger/keys/1.json": keydoc.sign(first_keys, [root]),
    }
    ir = (
        "kind: run\ntitle: Measure news sites in Iran\nreason: Reports of blocking on mobile networks.\n"
        "test: web_connectivity\ninputs:\n  - https://www.bbc.com/persian\n"
        "target:\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5\n" + window
    )
    ru = (
        "kind: schedule\ntitle: Test Telegram in Russia every six hours\nreason: Throttling is reported again.\n"
        "test: telegram\nevery: 6h\ntarget:\n  countries: [RU]\n" + window
    )
    direct: list[tuple[str, ed25519.Ed25519PrivateKey, dict[str, bytes | None]]] = [
        ("Start the ledger: trust root, signer alice", alice, {}),
        (
            "Measure news sites in Iran",
            alice,
            {"ledger/instructions/ir-news-sites.yaml": _instruction("ir-news-sites", ir)},
        ),
        (
            "Allow bob to sign",
            alice,
            {"ledger/allowed_signers": f"alice@ooni.example {alice_pub}\nbob@ooni.example {bob_pub}\n".encode()},
        ),
        ("Two signers for every change from now on", alice, {"ledger/policy.yaml": POLICY + REVIEW}),
    ]
    reviewed: list[tuple[str, ed25519.Ed25519PrivateKey, ed25519.Ed25519PrivateKey, dict[str, bytes | None]]] = [
        (
            "Test Telegram in Russia every 6h",
            bob,
            alice,
            {"ledger/instructions/ru-telegram.yaml": _instruction("ru-telegram", ru)},
        ),
        (
            "Add a second Iranian news site",
            alice,
            bob,
            {
                "ledger/instructions/ir-news-sites.yaml": _instruction(
                    "ir-news-sites", ir.replace("persian\n", "persian\n  - https://www.radiofarda.com/\n")
                )
            },
        ),
        (
            "Rotate the feed key and name the auditor (key document version 2)",
            alice,
            bob,
            {"ledger/keys/2.json": keydoc.sign(rotated, [root])},
        ),
    ]
    parents: tuple[CommitHash, ...] = ()
    log = []
    when = int((now - dt.timedelta(minutes=len(direct) + len(reviewed))).timestamp())
    for index, (message, key, changes) in enumerate(direct):
        files.update(changes)  # the trust root commits them all; later steps only their changes
        commit = write_commit(
            ledger,
            files if index == 0 else changes,
            message + "\n",
            "OONI staff <staff@ooni.example>",
            when + index * 60,
            parents,
            _signer(key),
        )
        parents = (commit,)
        log.append(f"{commit} {message}")
    for index, (message, author, reviewer, changes) in enumerate(reviewed, len(direct)):
        merge, branch = land_reviewed(ledger, parents[0], changes, message, author, reviewer, when + index * 60)
        parents = (merge,)
        log.append(f"{merge} {message}: by {_name(author, alice)}, approved by {_name(reviewer, alice)} in "
                   f"{branch[-1][:12]}, merged")  # fmt: skip
    ledger.close()
    check_out(repo_path)  # its working tree and index as HEAD has them: `git status` is clean
    return repo_path, log


def _private_key(path: Path, comment: str) -> ed25519.Ed25519PrivateKey:
    keys.generate(path, comment)
    return keys.load_private(path)


POLICY = b"min_every: 15m\nmax_window: 90d\n"
REVIEW = b"review:\n  signers: 2\n"


def _name(key: ed25519.Ed25519PrivateKey, alice: ed25519.Ed25519PrivateKey) -> str:
    return "alice" if key is alice else "bob"
