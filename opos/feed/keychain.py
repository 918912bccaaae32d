"""The key documents of a ledger: `<ledger>/keys/<N>.json`, a chain that only grows, copied to every site.

    <out>/v1/keys/<N>.json   every version, as committed (never changed once published)
    <out>/v1/keys.json       the newest

`opos check` judges the files of a working tree, `opos verify` every step of the history that
touched them (a version is only ever added, the next one, following from the one before), and
publishing refuses a ledger whose chain is broken.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.atomic import write_atomically
from opos.errors import LedgerInvalid, OposError, Problem, UntrustedDataError
from opos.feed import keydoc, keys
from opos.model import CommitHash
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification

_NAME = re.compile(r"^([1-9][0-9]{0,8})\.json$")


def documents(files: Mapping[str, bytes | None], shown: str) -> tuple[list[bytes], list[Problem]]:
    """The documents in version order, and what is wrong with the folder's names."""
    problems: list[Problem] = []
    versions: dict[int, bytes] = {}
    for name, data in sorted(files.items()):
        match = _NAME.fullmatch(name)
        if not match or data is None:
            problems.append(Problem(f"{shown}keys/{name}", None, "", "the keys folder holds only <version>.json files "
                                    "made by `opos keys` (1.json, 2.json, …)"))  # fmt: skip
            continue
        versions[int(match.group(1))] = data
    ordered = [versions[n] for n in sorted(versions)]
    if sorted(versions) != list(range(1, len(versions) + 1)):
        missing = sorted(set(range(1, max(versions, default=0) + 1)) - set(versions))
        problems.append(Problem(f"{shown}keys/", None, "", f"versions {', '.join(map(str, missing))} are missing: "
                                "the chain is 1.json, 2.json, … without a gap"))  # fmt: skip
    return ordered, problems


def check(files: Mapping[str, bytes | None], shown: str) -> tuple[list[bytes], list[Problem]]:
    """The documents in version order when they form a chain; else the problems (no keys/: none)."""
    ordered, problems = documents(files, shown)
    if problems or not ordered:
        return [], problems
    try:
        keydoc.chain(ordered)
    except UntrustedDataError as err:
        return [], [Problem(f"{shown}keys/", None, "", f"the key documents do not form a chain: {err}")]
    return ordered, []


def at(ledger: GitLedger, commit: CommitHash) -> list[bytes]:
    """The chain at a verified commit, checked. Raises LedgerInvalid."""
    ordered, problems = check(ledger.key_files(ledger.commit(commit)), ledger.ledger_prefix)
    if problems:
        raise LedgerInvalid(problems)
    return ordered


def history_failures(verification: Verification, revision: CommitHash) -> list[tuple[str, str]]:
    """Every first-parent step from the trust root to `revision` that broke the chain: a version changed
    or removed once committed, or one added that does not follow. (commit, reason), oldest first.

    The last revision found sound is kept in the state directory, so each step is judged once.
    """
    ledger, trust_root = verification.ledger, verification.trust_root
    memo = ledger.state.path / f"keys-checked-{verification.scope}"
    try:
        sound = memo.read_text().strip()
    except OSError:
        sound = ""
    failures: list[tuple[str, str]] = []
    commit: CommitHash | None = revision
    while commit is not None and commit != trust_root and commit != sound:
        info = ledger.commit(commit)
        parent = ledger.commit(info.parents[0]) if info.parents else None
        if parent is None or ledger.keys_tree(info) != ledger.keys_tree(parent):
            reason = _step_problem(ledger, parent.id if parent else None, commit)
            if reason:
                failures.append((commit, reason))
        commit = parent.id if parent else None
    if commit == trust_root:
        _, problems = check(ledger.key_files(ledger.commit(trust_root)), ledger.ledger_prefix)
        failures.extend((trust_root, str(p)) for p in problems)
    if not failures:
        write_atomically(memo, f"{revision}\n".encode())
    return list(reversed(failures))


def _step_problem(ledger: GitLedger, parent: CommitHash | None, commit: CommitHash) -> str | None:
    now = ledger.key_files(ledger.commit(commit))
    before = ledger.key_files(ledger.commit(parent)) if parent else {}
    for name, data in before.items():
        if now.get(name) != data:
            return (f"{ledger.ledger_prefix}keys/{name} was changed or removed: a key document is never changed "
                    "once committed; add the next version with `opos keys rotate` instead")  # fmt: skip
    _, problems = check(now, ledger.ledger_prefix)
    return "; ".join(p.message for p in problems) or None


def require_listed(ordered: list[bytes], feed_key: ed25519.Ed25519PublicKey) -> None:
    """With key documents, the feed key must be one the newest lists: probes that follow them accept no other."""
    if not ordered:
        return
    newest = keydoc.read(ordered[-1])[1]
    keyid = keys.key_id(feed_key)
    if keyid not in {k.keyid for k in newest.feed_keys}:
        raise OposError(f"the feed key {keyid} is not in key document version {newest.version} (it lists "
                        f"{', '.join(k.keyid for k in newest.feed_keys)}): probes that pin the root keys would refuse "
                        "every head it signs; add it with `opos keys rotate --add-feed-key` first")  # fmt: skip


def publish(ordered: list[bytes], out: Path) -> None:
    """Write every version to `out/v1/keys/<N>.json` and the newest to `out/v1/keys.json`. Raises LedgerInvalid
    when a version already published there differs: probes that fetched it would be forked."""
    folder = out / "v1" / "keys"
    for version, data in enumerate(ordered, 1):
        path = folder / f"{version}.json"
        try:
            published = path.read_bytes()
        except FileNotFoundError:
            published = None
        if published is not None and published != data:
            raise LedgerInvalid([Problem(f"keys/{version}.json", None, "", "differs from the version this site "
                                         "published: a published key document is never changed")])  # fmt: skip
        if published is None:
            write_atomically(path, data)
    if ordered:
        write_atomically(out / "v1" / "keys.json", ordered[-1])
