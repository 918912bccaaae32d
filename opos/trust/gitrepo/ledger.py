"""A ledger repository as the rules see it: the ledger directory's tree, allowed_signers, policy.yaml, the
instruction files and key documents of a commit, and the default trust root."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from opos.atomic import write_atomically
from opos.errors import BlobTooLarge, RepositoryError
from opos.instructions.rules import LedgerFiles
from opos.limits import MAX_KEY_FILE_BYTES, MAX_KEY_FILES, MAX_LEDGER_FILE_BYTES
from opos.lru import LRU
from opos.model import CommitHash
from opos.trust.gitrepo.objects import (
    FILE_MODES,
    LINK_MODE,
    TREE_MODE,
    GitObjects,
    _Blobs,
    normalise_ledger_dir,
)
from opos.trust.gitrepo.rawtree import RawTree
from opos.trust.statedir import StateDir
from opos.trust.verdicts import CommitInfo


class GitLedger:
    """The ledger directory of a repository: a `CommitSource` for `history`, and the ledger's files.

    A context manager that closes the repository on exit (or by `close`); open it with `with`.
    """

    def __init__(self, path: str | os.PathLike[str], ledger_dir: str = "ledger") -> None:
        self.ledger_parts = normalise_ledger_dir(ledger_dir)
        self.ledger_prefix = "".join(f"{p}/" for p in self.ledger_parts)
        self.objects = GitObjects(path)
        self.path = self.objects.path
        self._ledger_trees: LRU[str, str | None] = LRU(100_000)
        self._small_files: LRU[str, bytes] = LRU(64)  # allowed_signers and policy.yaml, by blob id
        # instructions tree id -> file name -> mode:blob, bounded by entries as the parsed trees are
        self._entries: LRU[str, dict[str, str]] = LRU(GitObjects.TREE_ENTRIES_KEPT, len)
        self._layouts: LRU[str, RawTree | None] = LRU(8)  # instructions trees as raw bytes (rawtree), the last few
        self._state: StateDir | None = None

    def __enter__(self) -> GitLedger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.objects.close()

    def resolve(self, revision: str) -> CommitHash:
        return self.objects.resolve(revision)

    def commit(self, commit_id: CommitHash) -> CommitInfo:
        return self.objects.commit(commit_id)

    # --- CommitSource ---

    def ledger_tree(self, commit: CommitInfo) -> str | None:
        found = self._ledger_trees.get(commit.tree)
        if found is None and commit.tree not in self._ledger_trees:
            found = self.objects.subtree(commit.tree, self.ledger_parts)
            self._ledger_trees.put(commit.tree, found)
        return found

    def _ledger_file(self, commit: CommitInfo, name: str) -> bytes | None:
        # the same few versions of allowed_signers and policy.yaml stand in thousands of commits, and
        # every step looks at its first parent's: read each version once
        ledger = self.ledger_tree(commit)
        if ledger is None:
            return None
        mode, sha = self.objects.tree(ledger).get(name.encode(), (0, ""))
        if mode not in FILE_MODES:
            return None
        data = self._small_files.get(sha)
        if data is None:
            data = self.objects.blob(sha, MAX_LEDGER_FILE_BYTES)
            self._small_files.put(sha, data)
        return data

    def allowed_signers(self, commit: CommitInfo) -> bytes | None:
        return self._ledger_file(commit, "allowed_signers")

    # --- ledger contents ---

    def instructions_tree(self, commit: CommitInfo) -> str | None:
        ledger = self.ledger_tree(commit)
        return None if ledger is None else self.objects.subtree(ledger, ["instructions"])

    def keys_tree(self, commit: CommitInfo) -> str | None:
        """The id of `<ledger>/keys/`, where the key documents are, or None when there is none."""
        ledger = self.ledger_tree(commit)
        return None if ledger is None else self.objects.subtree(ledger, ["keys"])

    def key_files(self, commit: CommitInfo) -> dict[str, bytes | None]:
        """`<ledger>/keys/` at a commit: name → contents (None for what is not a small file)."""
        tree_id = self.keys_tree(commit)
        if tree_id is None:
            return {}
        files: dict[str, bytes | None] = {}
        for name, (mode, sha) in sorted(self.objects.tree(tree_id).items())[:MAX_KEY_FILES]:
            try:
                data = self.objects.blob(sha, MAX_KEY_FILE_BYTES) if mode in FILE_MODES else None
            except BlobTooLarge:
                data = None
            files[name.decode("utf-8", "replace")] = data
        return files

    def instruction_entries(self, commit: CommitInfo) -> Mapping[str, str]:
        """File name under instructions/ → blob id (mode included, so a mode change is a change)."""
        tree_id = self.instructions_tree(commit)
        if tree_id is None:
            return {}
        entries = self._entries.get(tree_id)
        if entries is None:
            entries = {
                name.decode("utf-8", "replace"): f"{mode:o}:{sha}"
                for name, (mode, sha) in self.objects.tree(tree_id).items()
            }
            self._entries.put(tree_id, entries)
        return entries

    def instruction_entry(self, commit: CommitInfo, name: str) -> str | None:
        """One file's `mode:blob id` under instructions/ (in octal, as instruction_entries), or None."""
        tree_id = self.instructions_tree(commit)
        if tree_id is None:
            return None
        layout = self._layouts.get(tree_id)  # a tree a step just compared: its entry without parsing it
        found = layout.entry(name.encode()) if layout is not None else self.objects.tree(tree_id).get(name.encode())
        return f"{found[0]:o}:{found[1]}" if found else None

    def changed_instructions(self, commit: CommitInfo, parent: CommitInfo | None) -> set[str]:
        """Names under instructions/ added, removed or changed (contents or mode) from `parent` to `commit`.

        From the bytes where the two trees differ (rawtree), else a set difference of the two parsed
        trees: no per-file work for the files that did not change.
        """
        mine_id, theirs_id = self.instructions_tree(commit), self.instructions_tree(parent) if parent else None
        if mine_id == theirs_id:
            return set()
        if mine_id is not None and theirs_id is not None:
            found = self._changed_bytes(mine_id, theirs_id)
            if found is not None:
                return found
        mine = self.objects.tree(mine_id).items() if mine_id else {}.items()
        theirs = self.objects.tree(theirs_id).items() if theirs_id else {}.items()
        return {name.decode("utf-8", "replace") for name, _ in mine ^ theirs}

    def _changed_bytes(self, mine_id: str, theirs_id: str) -> set[str] | None:
        if theirs_id not in self._layouts:
            self._layouts.put(theirs_id, RawTree.scan(self.objects.tree_bytes(theirs_id)))
        old = self._layouts.get(theirs_id)
        found = old.changed(self.objects.tree_bytes(mine_id)) if old is not None else None
        if found is None:
            return None
        names, layout = found
        self._layouts.put(mine_id, layout)
        return {name.decode("utf-8", "replace") for name in names}

    def instruction_blob(self, blob_id: str) -> bytes:
        return self.objects.blob(blob_id, MAX_LEDGER_FILE_BYTES)

    def policy_file(self, commit: CommitInfo) -> bytes | None:
        return self._ledger_file(commit, "policy.yaml")

    def ledger_files(self, commit: CommitInfo) -> LedgerFiles:
        """The ledger at a commit; instruction files are read only when the checker asks for them."""
        tree_id = self.instructions_tree(commit)
        ids: dict[str, str] = {}
        not_files: list[str] = []
        oversized: dict[str, int] = {}
        for name, (mode, sha) in (self.objects.tree(tree_id) if tree_id else {}).items():
            text = name.decode("utf-8", "replace")
            if mode in FILE_MODES:
                ids[text] = sha
            else:
                not_files.append(text)
        files = _Blobs(self.objects, ids)
        try:
            policy = self._ledger_file(commit, "policy.yaml")
        except BlobTooLarge as err:
            policy, oversized["policy.yaml"] = None, err.size
        ledger = self.ledger_tree(commit)
        links = tuple(self._links(ledger)) if ledger else ()
        return LedgerFiles(self.ledger_prefix, files, policy, tuple(not_files), links, oversized, ids)

    def _links(self, tree_id: str, prefix: str = "", budget: list[int] | None = None) -> list[str]:
        """Paths of the symbolic links below a tree (its subtrees included, a bounded number of entries)."""
        budget = budget if budget is not None else [100_000]
        found = []
        for name, (mode, sha) in sorted(self.objects.tree(tree_id).items()):
            budget[0] -= 1
            if budget[0] < 0:
                break
            path = prefix + name.decode("utf-8", "replace")
            if mode == LINK_MODE:
                found.append(path)
            elif mode == TREE_MODE:
                found.extend(self._links(sha, f"{path}/", budget))
        return found

    # --- local state kept beside the repository ---

    @property
    def state(self) -> StateDir:
        if self._state is None:
            self._state = StateDir(Path(self.objects.repo.controldir()) / "opos")
        return self._state

    def default_trust_root(self, revision: CommitHash) -> CommitHash:
        """The single root commit of the revision's history (remembered, so a long history is walked once)."""
        remembered = self.state.trust_root_file
        if remembered.exists():
            candidate = CommitHash(remembered.read_text().strip())
            try:
                if len(candidate) == 40 and not self.commit(candidate).parents:
                    return candidate
            except RepositoryError:
                pass
        roots = self.objects.root_commits(revision)
        if len(roots) != 1:
            listed = ", ".join(roots)
            raise RepositoryError(f"the history has {len(roots)} root commits ({listed}): pin one with --trust-root")
        write_atomically(remembered, roots[0].encode() + b"\n")
        return roots[0]
