"""The key documents along the followed history: `<ledger>/keys/<N>.json` is a chain that only grows.

At every first-parent step a committed version stays byte for byte as it was, none disappears, and
a version added follows from the one before it (`keydoc.chain`): what probes pinned to the root
keys walk forward through is exactly what the history holds.
"""

from __future__ import annotations

from opos.atomic import write_atomically
from opos.errors import LedgerInvalid
from opos.model import CommitHash
from opos.signing import keydoc
from opos.trust.gitrepo import GitLedger


def at(ledger: GitLedger, commit: CommitHash) -> list[bytes]:
    """The chain at a commit, checked, oldest version first. Raises LedgerInvalid."""
    ordered, problems = keydoc.folder_chain(ledger.key_files(ledger.commit(commit)), ledger.ledger_prefix)
    if problems:
        raise LedgerInvalid(problems)
    return ordered


def failures(ledger: GitLedger, trust_root: CommitHash, scope: str, revision: CommitHash) -> list[tuple[str, str]]:
    """Every first-parent step from the trust root to `revision` that broke the chain: a version changed
    or removed once committed, or one added that does not follow. (commit, reason), oldest first.

    The last revision found sound is kept in the state directory, so each step is judged once.
    """
    memo = ledger.state.path / f"keys-checked-{scope}"
    try:
        sound = memo.read_text().strip()
    except OSError:
        sound = ""
    found: list[tuple[str, str]] = []
    commit: CommitHash | None = revision
    while commit is not None and commit != trust_root and commit != sound:
        info = ledger.commit(commit)
        parent = ledger.commit(info.parents[0]) if info.parents else None
        if parent is None or ledger.keys_tree(info) != ledger.keys_tree(parent):
            reason = _step_problem(ledger, parent.id if parent else None, commit)
            if reason:
                found.append((commit, reason))
        commit = parent.id if parent else None
    if commit == trust_root:
        _, problems = keydoc.folder_chain(ledger.key_files(ledger.commit(trust_root)), ledger.ledger_prefix)
        found.extend((trust_root, str(p)) for p in problems)
    if not found:
        write_atomically(memo, f"{revision}\n".encode())
    return list(reversed(found))


def _step_problem(ledger: GitLedger, parent: CommitHash | None, commit: CommitHash) -> str | None:
    now = ledger.key_files(ledger.commit(commit))
    before = ledger.key_files(ledger.commit(parent)) if parent else {}
    for name, data in before.items():
        if now.get(name) != data:
            return (f"{ledger.ledger_prefix}keys/{name} was changed or removed: a key document is never changed "
                    "once committed; add the next version with `opos keys rotate` instead")  # fmt: skip
    _, problems = keydoc.folder_chain(now, ledger.ledger_prefix)
    return "; ".join(p.message for p in problems) or None
