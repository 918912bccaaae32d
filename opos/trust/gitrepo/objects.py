"""Git objects read from their raw bytes: commits as the signature check needs them, trees and blobs with their
sizes read from the object header first (so a huge blob is refused before it is read)."""

from __future__ import annotations

import contextlib
import os
import re
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from dulwich.errors import NotGitRepository, ObjectFormatException
from dulwich.objects import ObjectID, parse_tree
from dulwich.objectspec import parse_commit
from dulwich.pack import UnpackedObjectIterator
from dulwich.repo import Repo

from opos.errors import BlobTooLarge, RepositoryDamaged, RepositoryError
from opos.limits import MAX_LEDGER_FILE_BYTES
from opos.lru import LRU
from opos.model import CommitHash
from opos.trust import _objectsize
from opos.trust.verdicts import CommitInfo

TREE_MODE = 0o040000
LINK_MODE = 0o120000
FILE_MODES = (0o100644, 0o100755)
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
        close_repo(self.repo)

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

    def tree_bytes(self, tree_id: str) -> bytes:
        """A tree's raw bytes, unparsed (see rawtree)."""
        return self._raw(tree_id, _TREE, "tree")

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
                return _objectsize.packed_size(self._pack_file(pack._data_path), offset)
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

    def blobs(self, blob_ids: Iterable[str], max_bytes: int) -> dict[str, bytes]:
        """Many files at once: each pack's objects inflated once, along their delta chains (as `git index-pack`
        does), instead of each chain again per file. A file larger than `max_bytes` (told from its header) or
        not in a pack is left out: `blob` reads (or refuses) it when it is asked for."""
        wanted = set(blob_ids)
        found: dict[str, bytes] = {}
        try:
            for pack in self.repo.object_store.packs:
                fd = self._pack_file(pack._data_path)
                at: dict[int, str] = {}
                for blob_id in wanted - found.keys():
                    try:
                        offset = pack.index.object_offset(ObjectID(blob_id.encode()))
                    except KeyError:
                        continue
                    if _objectsize.packed_size(fd, offset) <= max_bytes:
                        at[offset] = blob_id
                subset = [ObjectID(blob_id.encode()) for blob_id in at.values()]
                for unpacked in UnpackedObjectIterator.for_pack_subset(pack, subset):
                    inflated = at.get(unpacked.offset if unpacked.offset is not None else -1)
                    if inflated is not None and unpacked.obj_type_num == _BLOB:
                        found[inflated] = b"".join(unpacked.obj_chunks or ())
        except (OSError, ValueError, IndexError, KeyError, AssertionError, zlib.error, ObjectFormatException):
            return found  # what is missing is read one by one, which says what is wrong with it
        return found

    def _pack_file(self, path: str) -> int:
        fd = self._pack_files.get(path)
        if fd is None:
            fd = self._pack_files[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        return fd

    def subtree(self, tree_id: str, parts: Iterable[str]) -> str | None:
        """The id of the tree at `parts` below `tree_id`, or None when there is no such folder."""
        for part in parts:
            mode, sha = self.tree(tree_id).get(part.encode(), (0, ""))
            if mode != TREE_MODE:
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

    def read_many(self, names: Iterable[str]) -> dict[str, bytes]:
        """The files of `names` that can be read at once (GitObjects.blobs); the others are left out."""
        ids = {self._ids[name]: name for name in names}
        return {ids[blob_id]: data for blob_id, data in self._objects.blobs(ids, MAX_LEDGER_FILE_BYTES).items()}

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


def close_repo(repo: Repo) -> None:
    # A pack whose mmap is still referenced (by the traceback of a damaged read) cannot be unmapped
    # yet: the garbage collector does it once the references are gone.
    with contextlib.suppress(BufferError):
        repo.close()
