"""Fixtures that build real ledgers: real `git`, real `ssh-keygen` keys, real `git commit -S`.

Every git command runs in a hermetic environment (no user or system config, fixed time zone), as
dulwich's own tests do, so a developer's configuration cannot leak in.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from opos.cli import run
from opos.signing.keys import load_public
from servers import POSTGRES_URL, AuditorProcess, GitDaemon, Service

# The suite's one clock: midnight (UTC) of the day it runs. Every window a fixture writes is placed
# relative to it, never at a fixed date, so the suite gives the same answers whatever the day (fixed
# December 2026 windows once failed five client tests on the day they opened).
TODAY = dt.datetime.now(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def day(offset: int) -> str:
    """Midnight `offset` days from TODAY, as instruction files write times."""
    return f"{TODAY + dt.timedelta(days=offset):%Y-%m-%dT%H:%M:%SZ}"


def window(start: int, end: int) -> str:
    """An instruction's window from `start` to `end` days from TODAY (the YAML of the field's value)."""
    return f"\n  start: {day(start)}\n  end: {day(end)}"


# The default window of `instruction`: upcoming, so that a probe of the fixtures runs none of them
# unless a test gives its own window.
UPCOMING = (7, 21)

IDENTITY = {
    "GIT_AUTHOR_NAME": "OONI Staff",
    "GIT_AUTHOR_EMAIL": "staff@ooni.example",
    "GIT_COMMITTER_NAME": "OONI Staff",
    "GIT_COMMITTER_EMAIL": "staff@ooni.example",
}


@pytest.fixture(autouse=True, scope="session")
def hermetic_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    home = tmp_path_factory.mktemp("home")
    saved = dict(os.environ)
    for name in list(os.environ):
        if name.startswith(("GIT_", "OPOS_", "SSH_AUTH")):
            del os.environ[name]
    os.environ.update(
        HOME=str(home),
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=str(home / "gitconfig"),
        TZ="UTC",
        OPOS_OONIRUN_AUTHOR="bridge@ooni.example",  # the OONI Run bridge is on by default and needs its author
        **IDENTITY,
    )
    (home / "gitconfig").write_text("[init]\n\tdefaultBranch = main\n[gc]\n\tauto = 0\n")
    yield
    os.environ.clear()
    os.environ.update(saved)


@dataclass(frozen=True)
class SshKey:
    private: Path
    public: Path

    @property
    def public_text(self) -> str:
        return " ".join(self.public.read_text().split()[:2])


def make_key(folder: Path, name: str, kind: str = "ed25519", bits: str | None = None) -> SshKey:
    path = folder / name
    command = ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@ooni.example", "-f", str(path)]
    if bits:
        command[4:4] = ["-b", bits]
    subprocess.run(command, check=True)
    return SshKey(path, Path(f"{path}.pub"))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SshKey]:
    folder = tmp_path_factory.mktemp("keys")
    return {
        "alice": make_key(folder, "alice"),
        "bob": make_key(folder, "bob"),
        "carol": make_key(folder, "carol", "ecdsa", "256"),
        "dave": make_key(folder, "dave", "rsa", "2048"),
        "mallory": make_key(folder, "mallory"),
    }


class LedgerRepo:
    """A ledger repository driven with the real git, as staff would."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.git("init", "-q", "-b", "main")

    @classmethod
    def existing(cls, path: Path) -> LedgerRepo:
        """A repository made elsewhere (by `opos init`, say), driven the same way."""
        repo = cls.__new__(cls)
        repo.path = path
        return repo

    def git(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> str:
        result = subprocess.run(
            ["git", *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
        )
        if check and result.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed: {result.stderr}")
        return result.stdout.strip()

    def write(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def remove(self, relative: str) -> None:
        self.git("rm", "-q", relative)

    def signers(self, lines: list[str]) -> None:
        self.write("ledger/allowed_signers", "".join(f"{line}\n" for line in lines))

    def commit(self, message: str, key: SshKey | None, date: str | None = None, *extra: str) -> str:
        self.git("add", "-A")
        env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {}
        if key is None:
            self.git("-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", message, *extra, env=env)
        else:
            self.git(
                "-c",
                "gpg.format=ssh",
                "-c",
                f"user.signingkey={key.private}",
                "commit",
                "-q",
                "-S",
                "--allow-empty",
                "-m",
                message,
                *extra,
                env=env,
            )
        return self.head()

    def head(self, rev: str = "HEAD") -> str:
        return self.git("rev-parse", rev)

    def git_verifies(self, commit: str, signers_from: str) -> bool:
        """What `git verify-commit` says, given allowed_signers as it stands in `signers_from`."""
        signers = self.path.parent / f"signers-{signers_from}"
        signers.write_text(self.git("show", f"{signers_from}:ledger/allowed_signers") + "\n")
        result = subprocess.run(
            ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", commit],
            cwd=self.path,
            capture_output=True,
            text=True,
        )
        return result.returncode == 0


def instruction(ident: str, **overrides: str) -> str:
    """A valid instruction file's text; keyword arguments replace whole top-level fields."""
    fields = {
        "id": ident,
        "kind": "run",
        "title": f"Measure {ident}",
        "reason": "Reports of blocking.",
        "test": "web_connectivity",
        "inputs": "\n  - https://example.org/",
        "target": "\n  countries: [IR]\n  networks: [AS197207]",
        "window": window(*UPCOMING),
    }
    fields.update(overrides)
    return "".join(f"{name}: {value}\n" for name, value in fields.items() if value is not None)


def push(repo: LedgerRepo, *extra: str) -> str:
    """Push main to origin (extra arguments such as --force first); the pushed commit."""
    repo.git("push", "-q", *extra, "origin", "main")
    return repo.head()


def add_signed(repo: LedgerRepo, key: SshKey, ident: str, **fields: str) -> str:
    """Add a valid instruction in a commit signed with `key`, and push it."""
    repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, **fields))
    repo.commit(f"Add {ident}", key)
    return push(repo)


@pytest.fixture
def ledger_repo(tmp_path: Path, keys: dict[str, SshKey]) -> LedgerRepo:
    """A repository whose trust root allows alice, with one instruction."""
    repo = LedgerRepo(tmp_path / "ledger-repo")
    repo.signers([f"alice@ooni.example {keys['alice'].public_text}"])
    repo.write("ledger/policy.yaml", "min_every: 15m\n")
    repo.write("ledger/instructions/first-one.yaml", instruction("first-one"))
    repo.commit("Trust root", keys["alice"], "2026-11-01T10:00:00Z")
    return repo


@dataclass
class Outcome:
    code: int
    out: str
    err: str


def opos(*args: str | Path) -> Outcome:
    """Run the `opos` command in-process."""
    out, err = io.StringIO(), io.StringIO()
    code = run([str(a) for a in args], out, err)
    return Outcome(code, out.getvalue(), err.getvalue())


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[GitDaemon]:
    base = tmp_path / "daemon"
    base.mkdir()
    daemon = GitDaemon(base)
    yield daemon
    daemon.stop()


@pytest.fixture
def published_ledger(ledger_repo: LedgerRepo, git_daemon: GitDaemon) -> tuple[LedgerRepo, str]:
    """The ledger_repo pushed to a bare repository served by git daemon: (staff clone, git:// URL)."""
    bare = git_daemon.base / "ledger.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    url = git_daemon.url("ledger.git")
    ledger_repo.git("remote", "add", "origin", url)
    ledger_repo.git("push", "-q", "origin", "main")
    return ledger_repo, url


@pytest.fixture
def feed_key_file(tmp_path: Path) -> Path:
    path = tmp_path / "feed-key"
    assert opos("keygen", "--out", path).code == 0
    return path


@pytest.fixture
def start_service(tmp_path: Path, feed_key_file: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(remote: str, workers: int = 3, gunicorn_args: str = "", **settings: str) -> Service:
        data_dir = tmp_path / f"data-{len(started)}"
        env = {
            "OPOS_REMOTE": remote,
            "OPOS_DATA_DIR": str(data_dir),
            "OPOS_FEED_KEY": str(feed_key_file),
            "OPOS_WEBHOOK_SECRET": "s3cret",
            "OPOS_POLL_SECONDS": "3600",
            **{f"OPOS_{k.upper()}": v for k, v in settings.items()},
        }
        if gunicorn_args:
            env["GUNICORN_CMD_ARGS"] = gunicorn_args
        service = Service(env, workers)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


class Auditor(AuditorProcess):
    key_file: Path
    state: Path

    @property
    def public(self) -> Any:
        return load_public(Path(f"{self.key_file}.pub"))


@pytest.fixture
def start_auditor(tmp_path: Path, published_ledger: tuple[LedgerRepo, str], feed_key_file: Path) -> Iterator[Any]:
    """Auditors under gunicorn (webhook/auditor.conf.py) following the published ledger, stopped afterwards."""
    _, url = published_ledger
    started: list[Auditor] = []

    def start(
        name: str = "one", remote: str | None = None, root: Path | None = None, state: Path | None = None,
        **settings: str,
    ) -> Auditor:  # fmt: skip
        """An auditor that pins the feed key, or with `root`, follows the key documents from that root key;
        `settings` are OPOS_* variables (auditor_fetch_bytes="…" is OPOS_AUDITOR_FETCH_BYTES)."""
        key = tmp_path / f"auditor-{name}"
        if not key.exists():
            assert opos("keygen", "--out", key).code == 0
        state = state or tmp_path / f"auditor-{name}-state"
        pinned = (
            {"OPOS_AUDITOR_ROOT_KEYS": f"{root}.pub"} if root else {"OPOS_AUDITOR_FEED_KEYS": f"{feed_key_file}.pub"}
        )
        env = {"OPOS_AUDITOR_KEY": str(key), **pinned, "OPOS_AUDITOR_STATE": str(state),
               "OPOS_AUDITOR_REMOTE": remote or url,
               **{f"OPOS_{setting.upper()}": value for setting, value in settings.items()}}  # fmt: skip
        auditor = Auditor(env, tmp_path / f"auditor-{name}.log")
        auditor.key_file, auditor.state = key, state
        started.append(auditor)
        return auditor

    yield start
    for auditor in started:
        auditor.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards. Never a silent skip in CI."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.Error as error:
        message = f"PostgreSQL at {POSTGRES_URL} is unreachable ({error}); set OPOS_TEST_POSTGRES_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    name = f"opos_test_{secrets.token_hex(6)}"
    admin.execute(f"CREATE DATABASE {name}")
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
    admin.close()
