"""The only module that imports dulwich: commits, trees and blobs of a ledger repository, and fetch.

Commits are parsed from their raw bytes, not re-serialised, so that the payload handed to the
signature check is byte for byte what git signed (git's `parse_buffer_signed_by_header` rules).
"""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dulwich.client import get_transport_and_path
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository, ObjectFormatException
from dulwich.objects import Blob, Commit, ObjectID, Tree, parse_tree
from dulwich.objectspec import parse_commit
from dulwich.refs import Ref
from dulwich.repo import Repo

from opos.atomic import write_atomically
from opos.errors import BlobTooLarge, RepositoryDamaged, RepositoryError
from opos.instructions.rules import MAX_KEY_FILE_BYTES, MAX_KEY_FILES, LedgerFiles
from opos.lru import LRU
from opos.model import CommitHash, KeyFingerprint, Signer
from opos.trust import _objectsize
from opos.trust.history import Accepted, CommitInfo
from opos.trust.statedir import StateDir

_TREE_MODE = 0o040000
_LINK_MODE = 0o120000
_FILE_MODES = (0o100644, 0o100755)
_COMMIT, _TREE, _BLOB = 1, 2, 3


def normalise_ledger_dir(ledger_dir: str) -> tuple[str, ...]:
    """`ledger`, `./ledger/`, `.` → path parts inside the repository (none for the top)."""
    parts = tuple(p for p in ledger_dir.replace("\\", "/").split("/") if p not in ("", "."))
    if any(p == ".." for p in parts):
        raise RepositoryError(f"the ledger directory {ledger_dir!r} must be inside the repository")
    return parts


def parse_raw_commit(commit_id: CommitHash, raw: bytes) -> CommitInfo:
    """Split a raw commit into what verification needs; the payload excludes every gpgsig header."""
    parents: list[CommitHash] = []
    tree = ""
    committed = 0
    signature: list[bytes] = []
    payload: list[bytes] = []
    in_signature = other_signature = False
    lines = raw.split(b"\n")
    message = b""
    for index, line in enumerate(lines):
        if line == b"":
            payload.append(b"\n".join(lines[index:]))
            message = b"\n".join(lines[index + 1 :])
            break
        if in_signature and line.startswith(b" "):
            signature.append(line[1:])
            continue
        in_signature = False
        if line.startswith(b"gpgsig "):
            signature.append(line[len(b"gpgsig ") :])
            in_signature, other_signature = True, False
            continue
        if line.startswith(b"gpgsig"):
            other_signature = True  # gpgsig-sha256: not ours, and not part of the payload
            continue
        if other_signature and line.startswith(b" "):
            continue
        other_signature = False
        payload.append(line + b"\n")
        key, _, value = line.partition(b" ")
        if key == b"tree":
            tree = value.decode()
        elif key == b"parent":
            parents.append(CommitHash(value.decode()))
        elif key == b"committer":
            try:
                committed = int(value.rsplit(b" ", 2)[-2])
            except (IndexError, ValueError):
                committed = 0
    armored = b"\n".join(signature) + b"\n" if signature else None
    return CommitInfo(
        id=commit_id,
        parents=tuple(parents),
        tree=tree,
        committed=committed,
        signature=armored,
        payload=b"".join(payload),
        message=message.decode("utf-8", "replace"),
    )


MAX_LEDGER_FILE_BYTES = 1024 * 1024  # any file of the ledger; the rules' own limits are far lower


class GitObjects:
    """Raw object access to one repository: commits, trees and blobs by id, each read once into bounded caches.

    A context manager: the repository's files are closed on exit (or by `close`).
    """

    COMMITS_KEPT = 20_000
    TREE_ENTRIES_KEPT = 200_000  # parsed trees, counted by their entries (a tree of 1,000 files weighs 1,000)

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self.repo = Repo(str(path))
        except (NotGitRepository, FileNotFoundError) as err:
            raise RepositoryError(f"{path} is not a git repository: give the ledger's clone with --repo") from err
        self.path = Path(path)
        self._commits: LRU[CommitHash, CommitInfo] = LRU(self.COMMITS_KEPT)
        self._trees: LRU[str, dict[bytes, tuple[int, str]]] = LRU(self.TREE_ENTRIES_KEPT, len)
        self._pack_files: dict[str, int] = {}  # pack data path -> an open descriptor, to read object headers

    def __enter__(self) -> GitObjects:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for fd in self._pack_files.values():
            os.close(fd)
        self._pack_files.clear()
        _close(self.repo)

    def _raw(self, object_id: str, expected: int, what: str) -> bytes:
        try:
            kind, raw = self.repo.object_store.get_raw(ObjectID(object_id.encode()))
        except KeyError as err:
            raise RepositoryDamaged(f"{what} {object_id} is missing from the repository (fetch it again)") from err
        except (zlib.error, ObjectFormatException, ValueError, OSError) as err:
            raise RepositoryDamaged(f"{what} {object_id} is damaged in {self.path} ({err}): clone it again") from err
        if kind != expected:
            raise RepositoryError(f"{object_id} is not a {what}")
        return bytes(raw)

    def resolve(self, revision: str) -> CommitHash:
        """A branch, tag, `HEAD` or (abbreviated) hash → the full commit hash."""
        match = re.fullmatch(r"(.+?)((?:[~^][0-9]*)*)", revision)
        base, steps = (match.group(1), match.group(2)) if match else (revision, "")
        try:
            commit = CommitHash(parse_commit(self.repo, base.encode()).id.decode())
            for operator, count in re.findall(r"([~^])([0-9]*)", steps):
                number = int(count) if count else 1
                if operator == "~":
                    for _ in range(number):
                        commit = self.commit(commit).parents[0]
                elif number:
                    commit = self.commit(commit).parents[number - 1]
            return commit
        except (KeyError, ValueError, NotImplementedError, IndexError, RepositoryError) as err:
            raise RepositoryError(f"no commit named {revision!r} in {self.path}") from err

    def commit(self, commit_id: CommitHash) -> CommitInfo:
        info = self._commits.get(commit_id)
        if info is None:
            info = parse_raw_commit(commit_id, self._raw(commit_id, _COMMIT, "commit"))
            self._commits.put(commit_id, info)
        return info

    def tree(self, tree_id: str) -> dict[bytes, tuple[int, str]]:
        entries = self._trees.get(tree_id)
        if entries is None:
            raw = self._raw(tree_id, _TREE, "tree")
            entries = {name: (mode, sha.decode()) for name, mode, sha in parse_tree(raw, 20)}
            self._trees.put(tree_id, entries)
        return entries

    def size(self, object_id: str) -> int | None:
        """The object's size from its header, without reading the object; None when it cannot be told."""
        store = self.repo.object_store
        oid = ObjectID(object_id.encode())
        try:
            for pack in store.packs:  # a clone keeps (almost) everything in packs: look there first
                try:
                    offset = pack.index.object_offset(oid)
                except KeyError:
                    continue
                fd = self._pack_files.get(pack._data_path)
                if fd is None:
                    fd = self._pack_files[pack._data_path] = os.open(pack._data_path, os.O_RDONLY | os.O_CLOEXEC)
                return _objectsize.packed_size(fd, offset)
            loose = Path(store._get_shafile_path(oid))
            if loose.exists():
                return _objectsize.loose_size(loose)
        except (OSError, ValueError, IndexError, AttributeError, zlib.error):
            return None
        return None

    def blob(self, blob_id: str, max_bytes: int | None = None) -> bytes:
        """A file's contents; with `max_bytes`, a larger one is refused from its header, before reading it."""
        if max_bytes is not None:
            size = self.size(blob_id)
            if size is not None and size > max_bytes:
                raise BlobTooLarge(blob_id, size, max_bytes)
        return self._raw(blob_id, _BLOB, "file")

    def subtree(self, tree_id: str, parts: Iterable[str]) -> str | None:
        """The id of the tree at `parts` below `tree_id`, or None when there is no such folder."""
        for part in parts:
            mode, sha = self.tree(tree_id).get(part.encode(), (0, ""))
            if mode != _TREE_MODE:
                return None
            tree_id = sha
        return tree_id

    def root_commits(self, revision: CommitHash) -> list[CommitHash]:
        roots: list[CommitHash] = []
        seen: set[CommitHash] = set()
        stack = [revision]
        while stack:
            commit_id = stack.pop()
            if commit_id in seen:
                continue
            seen.add(commit_id)
            info = self.commit(commit_id)
            if not info.parents:
                roots.append(commit_id)
            stack.extend(info.parents)
        return roots


class _Blobs(Mapping[str, bytes]):
    """File name → contents, each blob read when asked for (a checker that knows a blob id skips it).

    A file over MAX_LEDGER_FILE_BYTES raises BlobTooLarge, refused from its header.
    """

    def __init__(self, objects: GitObjects, ids: Mapping[str, str]) -> None:
        self._objects = objects
        self._ids = ids

    def __getitem__(self, name: str) -> bytes:
        return self._objects.blob(self._ids[name], MAX_LEDGER_FILE_BYTES)

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


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
        if mode not in _FILE_MODES:
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
                data = self.objects.blob(sha, MAX_KEY_FILE_BYTES) if mode in _FILE_MODES else None
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
        found = self.objects.tree(tree_id).get(name.encode()) if tree_id else None
        return f"{found[0]:o}:{found[1]}" if found else None

    def changed_instructions(self, commit: CommitInfo, parent: CommitInfo | None) -> set[str]:
        """Names under instructions/ added, removed or changed (contents or mode) from `parent` to `commit`.

        A set difference of the two parsed trees: no per-file work for the files that did not change.
        """
        mine_id, theirs_id = self.instructions_tree(commit), self.instructions_tree(parent) if parent else None
        if mine_id == theirs_id:
            return set()
        mine = self.objects.tree(mine_id).items() if mine_id else {}.items()
        theirs = self.objects.tree(theirs_id).items() if theirs_id else {}.items()
        return {name.decode("utf-8", "replace") for name, _ in mine ^ theirs}

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
            if mode in _FILE_MODES:
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
            if mode == _LINK_MODE:
                found.append(path)
            elif mode == _TREE_MODE:
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


class FileCache:
    """Accepted commits in a tab-separated file, appended as they are verified.

    A line: commit, sequence, key, principals, generation, approvers (comma-separated), the signers
    its step needs, and 1 when its first-parent chain has them all (else 0). Lines of four fields,
    from before the two-person rule, are read as steps that needed one signer.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: dict[CommitHash, Accepted] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            text = ""
        for line in text.splitlines():
            fields = line.split("\t")
            if len(fields) == 4:
                fields += ["", "", "1", "1"]
            if len(fields) != 8 or len(fields[0]) != 40 or not fields[1].isdigit():
                continue  # a torn write: that commit is simply verified again
            commit, sequence, key, principal, generation, approvers, needed, reviewed = fields
            if not (generation.isdigit() or not generation) or not needed.isdigit() or reviewed not in ("0", "1"):
                continue
            signer = Signer(principal, KeyFingerprint(key)) if key else None
            self.entries[CommitHash(commit)] = Accepted(
                CommitHash(commit),
                int(sequence),
                signer,
                tuple(approvers.split(",")) if approvers else (),
                int(generation) if generation else None,
                int(needed),
                reviewed == "1",
            )

    def get(self, commit: CommitHash) -> Accepted | None:
        return self.entries.get(commit)

    def add(self, accepted: Iterable[Accepted]) -> None:
        lines = []
        for entry in accepted:
            if entry.commit in self.entries:
                continue
            self.entries[entry.commit] = entry
            key, principal = (entry.signer.fingerprint, entry.signer.principal) if entry.signer else ("", "")
            generation = "" if entry.generation is None else str(entry.generation)
            approvers = ",".join(entry.approvers)
            verdict = f"{entry.needed}\t{int(entry.reviewed)}"
            lines.append(
                f"{entry.commit}\t{entry.sequence}\t{key}\t{principal}\t{generation}\t{approvers}\t{verdict}\n"
            )
        if lines:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write("".join(lines))


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

    def build(tree_id: str | None, edits: dict[str, Any]) -> ObjectID | None:
        entries = dict(ledger.objects.tree(tree_id)) if tree_id else {}
        for name, value in edits.items():
            key = name.encode()
            if isinstance(value, dict):
                mode, sha = entries.get(key, (0, ""))
                subtree = build(sha if mode == _TREE_MODE else None, value)
                if subtree is None:
                    entries.pop(key, None)
                else:
                    entries[key] = (_TREE_MODE, subtree.decode())
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


def _close(repo: Repo) -> None:
    # A pack whose mmap is still referenced (by the traceback of a damaged read) cannot be unmapped
    # yet: the garbage collector does it once the references are gone.
    with contextlib.suppress(BufferError):
        repo.close()


def redact(text: str) -> str:
    """`text` with the user name and password of every URL in it replaced by `***` (tokens in remotes)."""
    return _USERINFO.sub(lambda match: f"{match.group('scheme')}***@", text)


def fetch_branch(local: Path, remote: str, branch: str) -> CommitHash:
    """Fetch `branch` from `remote` (a path, file://, git://, https://…) into the bare repository `local`.

    Creates `local` when missing. The remote's commit is recorded as refs/heads/<branch> of the
    mirror and returned; nothing in it is trusted until `history` has verified it.
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

        result = client.fetch(path, repo, determine_wants=determine_wants)
        commit = result.refs.get(wanted)
        if commit is None:
            raise RepositoryError(f"{redact(remote)} has no branch {branch!r}")
        # Our clone is a mirror: keeping the commit under refs/heads/ makes it a "have" that the next
        # fetch advertises, so only new objects come over the wire.
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
        _close(repo)
