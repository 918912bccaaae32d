"""Fetching one branch of a remote into the local mirror (the service and auditors).

A first fetch is C git's where it is installed: it indexes a pack of 10,000 commits in about a
second, where dulwich's indexer, in Python, takes five. The fetches after it bring a few objects,
which dulwich does in about 17 ms against 60 for a git process. What arrives is only objects, read
and verified through dulwich afterwards like any other. When git is missing, or fails, dulwich's
own fetch runs, and its error says what is wrong: the remote, the branch, or our clone (which the
caller then rebuilds).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess  # nosec B404
import tempfile
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dulwich.client import get_transport_and_path
from dulwich.errors import GitProtocolError, HangupException, NotGitRepository, ObjectFormatException
from dulwich.file import FileLocked
from dulwich.objects import ObjectID
from dulwich.refs import Ref
from dulwich.repo import Repo

from opos.errors import RepositoryDamaged, RepositoryError
from opos.model import CommitHash
from opos.trust.gitrepo.objects import close_repo

logger = logging.getLogger(__name__)

INCOMING = "refs/opos/incoming/"  # where C git writes; refs/heads/<branch> is set once the pack is accepted
PROTOCOLS = "file:git:http:https:ssh"  # what dulwich fetches over too: never ext::, fd:: or a remote helper
POLL_SECONDS = 0.05  # how often a bounded fetch's arriving pack is measured
# where a repository is, and its configuration: an inherited value would point git at another repository
_INHERITED = ("GIT_DIR", "GIT_WORK_TREE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
              "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_QUARANTINE_PATH")  # fmt: skip
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


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
        # C git for a first fetch (a new instance, a new auditor, a clone rebuilt), where it indexes the whole
        # history in C; dulwich for what follows, a few objects, in a third of the time a git process takes
        fetched = _git_fetch(local, remote, branch, limits) if wanted not in repo.refs else None
        commit = fetched if fetched is not None else _dulwich_fetch(repo, remote, wanted, limits)
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


def _dulwich_fetch(repo: Repo, remote: str, wanted: Ref, limits: FetchLimits | None) -> ObjectID:
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
        raise RepositoryError(f"{redact(remote)} has no branch {wanted.decode().removeprefix('refs/heads/')!r}")
    return ObjectID(commit)


def _bounded_fetch(client: Any, path: str, repo: Repo, determine_wants: Any, limits: FetchLimits, where: str) -> Any:
    """dulwich's fetch, with the pack counted and timed as it arrives, and added only once it is whole."""
    received = 0
    ends = time.monotonic() + limits.seconds
    with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024, dir=str(repo.object_store.path)) as spool:

        def write(data: bytes) -> int:
            nonlocal received
            received += len(data)
            if received > limits.max_bytes:
                raise _too_big(where, limits)
            if time.monotonic() > ends:
                raise RepositoryError(f"{where} took longer than {limits.seconds:g} s to send its objects: "
                                      f"refused after {received} bytes (OPOS_AUDITOR_FETCH_SECONDS)")  # fmt: skip
            return spool.write(data)

        result = client.fetch_pack(path, determine_wants, repo.get_graph_walker(), write)
        if spool.tell():
            spool.seek(0)
            repo.object_store.add_thin_pack(spool.read, None)
    return result


def _too_big(where: str, limits: FetchLimits) -> RepositoryError:
    return RepositoryError(f"{where} sends more than {limits.max_bytes} bytes: refused (OPOS_AUDITOR_FETCH_BYTES)")


# --- C git ---


def _git_fetch(local: Path, remote: str, branch: str, limits: FetchLimits | None) -> ObjectID | None:
    """The fetched commit, by C git into refs/opos/incoming/<branch>; None when git is missing or fails.

    Every fetch is kept as one pack (`fetch.unpackLimit=1`), as dulwich's are, so that what arrives
    can be measured while it arrives; a refused pack is removed with the incoming ref.
    """
    git = git_binary()
    if git is None:
        return None
    incoming = f"{INCOMING}{branch}"
    packs = local / "objects" / "pack"
    before = _pack_files(packs)
    # over git://, protocol v2 waits about 40 ms on a delayed acknowledgement at every fetch: a push reaches
    # probes that much later (the benchmark's push → served); v1 asks in one exchange, as dulwich does
    version = ["-c", "protocol.version=1"] if remote.startswith("git://") else []
    command = [git, *version, "-c", "fetch.unpackLimit=1", "-c", "gc.auto=0", "-c", "maintenance.auto=false",
               f"--git-dir={local}", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
               "--no-recurse-submodules", "--end-of-options", remote, f"+refs/heads/{branch}:{incoming}"]  # fmt: skip
    with tempfile.TemporaryFile() as errors:
        # its own session, so that what git starts (index-pack, ssh, a remote helper) is stopped with it
        process = subprocess.Popen(  # nosec B603
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=_environment(),
            start_new_session=True,
        )  # fmt: skip
        try:
            _watch(process, packs, before, limits, redact(remote))
        except RepositoryError:
            _stop(process)
            _forget(local, incoming, packs, before)
            raise
        finally:
            _stop(process)
        if process.returncode != 0:
            errors.seek(0)
            said = errors.read(2000).decode("utf-8", "replace").strip().replace("\n", "; ")
            logger.info("git fetch from %s failed (%s): fetching with dulwich", redact(remote), redact(said))
            _forget(local, None, packs, before)
            return None
    repo = Repo(str(local))
    try:
        return repo.refs[Ref(incoming.encode())]
    except KeyError:
        return None
    finally:
        close_repo(repo)


def git_binary() -> str | None:
    """The `git` that fetches, or None: dulwich does."""
    return shutil.which("git")


def _watch(process: subprocess.Popen[bytes], packs: Path, before: set[str], limits: FetchLimits | None,
           where: str) -> None:  # fmt: skip
    """Wait for git; with limits, refuse a pack that grows past them or is still arriving after their time."""
    if limits is None:
        process.wait()
        return
    ends = time.monotonic() + limits.seconds
    while True:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=POLL_SECONDS)
        if _arrived(packs, before) > limits.max_bytes:
            raise _too_big(where, limits)
        if process.returncode is not None:
            return
        if time.monotonic() > ends:
            raise RepositoryError(f"{where} did not send the ledger within {limits.seconds:g} s: refused "
                                  "(OPOS_AUDITOR_FETCH_SECONDS)")  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    """git and what it started (index-pack, ssh, a remote helper), if still running."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _pack_files(packs: Path) -> set[str]:
    try:
        return set(os.listdir(packs))
    except OSError:
        return set()


def _arrived(packs: Path, before: set[str]) -> int:
    """Bytes of the packs (whole or still arriving) that were not there before this fetch."""
    total = 0
    for name in _pack_files(packs) - before:
        if name.startswith("tmp_") or name.endswith(".pack"):
            with contextlib.suppress(OSError):
                total += (packs / name).stat().st_size
    return total


def _forget(local: Path, incoming: str | None, packs: Path, before: set[str]) -> None:
    """Remove what a refused or failed fetch left: its packs, and the incoming ref that may name them."""
    for name in _pack_files(packs) - before:
        with contextlib.suppress(OSError):
            (packs / name).unlink()
    if incoming is not None:
        repo = Repo(str(local))
        try:
            with contextlib.suppress(KeyError, FileLocked, OSError):
                del repo.refs[Ref(incoming.encode())]
        finally:
            close_repo(repo)


def _environment() -> dict[str, str]:
    """Ours, without what would point git at another repository or configuration; no prompt, few protocols."""
    env = {k: v for k, v in os.environ.items() if k not in _INHERITED and not k.startswith("GIT_CONFIG")}
    env.update(GIT_ALLOW_PROTOCOL=PROTOCOLS, GIT_TERMINAL_PROMPT="0")
    return env
