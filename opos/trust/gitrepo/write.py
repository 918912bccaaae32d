"""Writing and fetching: a new repository, its config, a commit of edits (the CLI's `opos new`/`init` and the
demo), and fetching one branch from a remote (the service and auditors)."""

from __future__ import annotations

import functools
import re
import tempfile
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dulwich.client import get_transport_and_path
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository, ObjectFormatException
from dulwich.file import FileLocked
from dulwich.objects import Blob, Commit, ObjectID, Tree
from dulwich.refs import Ref
from dulwich.repo import Repo

from opos.errors import RepositoryDamaged, RepositoryError
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


_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def check_out(path: Path) -> None:
    """Write HEAD's files and index into the working tree of the repository at `path`, so that one made commit
    by commit with write_commit (the demo's) reads as clean to `git status`."""
    repo = Repo(str(path))
    try:
        repo.get_worktree().reset_index()
    finally:
        close_repo(repo)


def redact(text: str) -> str:
    """`text` with the user name and password of every URL in it replaced by `***` (tokens in remotes)."""
    return _USERINFO.sub(lambda match: f"{match.group('scheme')}***@", text)


@dataclass(frozen=True)
class FetchLimits:
    """How much a fetch may bring and how long it may take while data arrives (an auditor's remote may be anyone's)."""

    max_bytes: int = 256 * 1024 * 1024
    seconds: float = 120.0


def fetch_branch(local: Path, remote: str, branch: str, limits: FetchLimits | None = None) -> CommitHash:
    """Fetch `branch` from `remote` (a path, file://, git://, https://…) into the bare repository `local`.

    Creates `local` when missing. The remote's commit is recorded as refs/heads/<branch> of the
    mirror and returned; nothing in it is trusted until `history` has verified it. With `limits`, a
    pack larger than `max_bytes`, or one still arriving after `seconds`, is refused (RepositoryError)
    and nothing of it is kept; a remote that sends nothing at all is the caller's deadline to bound.
    """
    if not (local / "HEAD").exists():
        local.mkdir(parents=True, exist_ok=True)
        Repo.init_bare(str(local)).close()
    repo = Repo(str(local))
    wanted = Ref(f"refs/heads/{branch}".encode())
    try:
        client, path = get_transport_and_path(remote)

        def determine_wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
            commit = refs.get(wanted)
            return [commit] if commit is not None and commit not in repo.object_store else []

        if limits is None:
            result = client.fetch(path, repo, determine_wants=determine_wants)
        else:
            result = _bounded_fetch(client, path, repo, determine_wants, limits, redact(remote))
        commit = result.refs.get(wanted)
        if commit is None:
            raise RepositoryError(f"{redact(remote)} has no branch {branch!r}")
        # Our clone is a mirror: keeping the commit under refs/heads/ makes it a "have" that the next
        # fetch advertises, so only new objects come over the wire.
        try:
            repo.refs[wanted] = commit
        except FileLocked:
            # Fetches into one clone are serialised by their callers (the service's sync lock, the auditor's
            # log lock): a lock file here is what a fetch killed mid-write left, and would wedge every sync.
            for stale in (local / f"{wanted.decode()}.lock", local / "packed-refs.lock"):
                stale.unlink(missing_ok=True)
            repo.refs[wanted] = commit
        return CommitHash(commit.decode())
    except RepositoryError:
        raise
    except (OSError, GitProtocolError, HangupException, NotGitRepository, ValueError) as err:
        raise RepositoryError(redact(f"cannot fetch {branch!r} from {remote}: {err}")) from err
    except (zlib.error, ObjectFormatException, BufferError, KeyError, AssertionError) as err:
        # the negotiation reads our own objects: these say that they are damaged, not the remote
        raise RepositoryDamaged(f"the local clone {local} is damaged ({type(err).__name__}: {err})") from err
    finally:
        close_repo(repo)


def _bounded_fetch(client: Any, path: str, repo: Repo, determine_wants: Any, limits: FetchLimits, where: str) -> Any:
    """dulwich's fetch, with the pack counted and timed as it arrives, and added only once it is whole."""
    received = 0
    ends = time.monotonic() + limits.seconds
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, dir=str(repo.object_store.path)) as spool:

        def write(data: bytes) -> int:
            nonlocal received
            received += len(data)
            if received > limits.max_bytes:
                raise RepositoryError(f"{where} sends more than {limits.max_bytes} bytes: refused "
                                      "(OPOS_AUDITOR_FETCH_BYTES)")  # fmt: skip
            if time.monotonic() > ends:
                raise RepositoryError(f"{where} took longer than {limits.seconds:g} s to send its objects: "
                                      f"refused after {received} bytes (OPOS_AUDITOR_FETCH_SECONDS)")  # fmt: skip
            return spool.write(data)

        result = client.fetch_pack(path, determine_wants, repo.get_graph_walker(), write)
        if spool.tell():
            spool.seek(0)
            repo.object_store.add_thin_pack(spool.read, None)
    return result


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
