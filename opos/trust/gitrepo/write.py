"""Writing: a new repository, its config, a commit of edits (the CLI's `opos new`/`init`, the demo, benchmarks
and test fixtures), and a work tree checked out."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from opos.model import CommitHash
from opos.trust.gitrepo.ledger import GitLedger
from opos.trust.gitrepo.objects import TREE_MODE, GitObjects, close_repo


def init_repository(path: Path, branch: str = "main") -> GitLedger:
    """A new, empty repository at `path` (created if missing) on `branch`."""
    path.mkdir(parents=True, exist_ok=True)
    Repo.init(str(path), default_branch=branch.encode()).close()
    return GitLedger(path)


def set_config(path: Path, values: Mapping[str, str]) -> None:
    """Set `section.name` (or `section.sub.name`) values in the repository's own config."""
    repo = Repo(str(path))
    try:
        config = repo.get_config()
        for dotted, value in values.items():
            section, _, name = dotted.rpartition(".")
            first, _, sub = section.partition(".")
            key = (first.encode(), sub.encode()) if sub else (first.encode(),)
            config.set(key, name.encode(), value.encode())
        config.write_to_path()
    finally:
        repo.close()


def write_commit(
    ledger: GitLedger,
    changes: Mapping[str, bytes | None],
    message: str,
    identity: str,
    when: int,
    parents: tuple[CommitHash, ...] = (),
    sign: Callable[[bytes], bytes] | None = None,
    branch: str = "main",
) -> CommitHash:
    """Commit the first parent's tree with `changes` (path → contents, None to delete) on `branch`.

    For the demo, benchmarks and test fixtures, which make ledgers without a `git` binary. With
    `sign`, the commit carries `sign(payload)` as its gpgsig header: an ordinary SSHSIG over the
    commit without that header, exactly what `git commit -S` makes. Only the trees on changed
    paths are rewritten, so long histories are cheap to build.
    """
    store = ledger.objects.repo.object_store
    nested: dict[str, Any] = {}
    for path, data in changes.items():
        folder = nested
        *dirs, name = path.split("/")
        for part in dirs:
            folder = folder.setdefault(part, {})
        folder[name] = data
    build = functools.partial(_build_tree, ledger.objects, store)
    base = ledger.commit(parents[0]).tree if parents else None
    root = build(base, nested)
    if root is None:
        empty = Tree()
        store.add_object(empty)
        root = empty.id
    commit = Commit()
    commit.tree = root
    commit.parents = [ObjectID(p.encode()) for p in parents]
    commit.author = commit.committer = identity.encode()
    commit.author_time = commit.commit_time = when
    commit.author_timezone = commit.commit_timezone = 0
    commit.message = message.encode()
    if sign is not None:
        commit.gpgsig = sign(commit.as_raw_string())
    store.add_object(commit)
    ledger.objects.repo.refs[Ref(f"refs/heads/{branch}".encode())] = commit.id
    return CommitHash(commit.id.decode())


def check_out(path: Path) -> None:
    """Write HEAD's files and index into the working tree of the repository at `path`, so that one made commit
    by commit with write_commit (the demo's) reads as clean to `git status`."""
    repo = Repo(str(path))
    try:
        repo.get_worktree().reset_index()
    finally:
        close_repo(repo)


def _build_tree(objects: GitObjects, store: Any, tree_id: str | None, edits: dict[str, Any]) -> ObjectID | None:
    """The tree `tree_id` with `edits` (name → contents, None to delete, or a dict for a folder), stored; None
    when nothing is left in it. Only the trees on changed paths are rewritten."""
    entries = dict(objects.tree(tree_id)) if tree_id else {}
    for name, value in edits.items():
        key = name.encode()
        if isinstance(value, dict):
            mode, sha = entries.get(key, (0, ""))
            subtree = _build_tree(objects, store, sha if mode == TREE_MODE else None, value)
            if subtree is None:
                entries.pop(key, None)
            else:
                entries[key] = (TREE_MODE, subtree.decode())
        elif value is None:
            entries.pop(key, None)
        else:
            blob = Blob.from_string(value)
            store.add_object(blob)
            entries[key] = (0o100644, blob.id.decode())
    if not entries:
        return None
    tree = Tree()
    for key, (mode, sha) in entries.items():
        tree.add(key, mode, ObjectID(sha.encode()))
    store.add_object(tree)
    return tree.id
