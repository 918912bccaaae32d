"""What the command groups share: the parser class, common options, and opening the ledger named by them."""

from __future__ import annotations

import argparse
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeAlias

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from opos.errors import OposError, UsageError
from opos.model import parse_timestamp
from opos.signing import keydoc, keys
from opos.trust.gitrepo import GitLedger, normalise_ledger_dir

Handler = Callable[[argparse.Namespace, TextIO, TextIO], int]

LEDGER_DIR_HELP = "the ledger directory inside the repository (default: $OPOS_LEDGER_DIR or 'ledger'; '.' for the top)"


class Parser(argparse.ArgumentParser):
    """Usage errors become UsageError (exit 2 with a hint), never argparse's own exit."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}\n{self.format_usage().strip()}\nSee `{self.prog} --help`.")


# the object `add_subparsers` returns: each group adds its commands to it
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def add_command(
    commands: Commands, name: str, handler: Handler, help: str, description: str
) -> argparse.ArgumentParser:
    """A subcommand whose handler is registered with it (`args.handler`)."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(handler=handler)
    return parser


def add_group(commands: Commands, name: str, help: str, description: str) -> Commands:
    """A command with subcommands (`opos NAME COMMAND …`): NAME alone is a usage error that lists them."""
    parser: argparse.ArgumentParser = commands.add_parser(name, help=help, description=description)

    def usage(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
        raise UsageError(f"{parser.format_usage().strip()}\nSee `opos {name} --help` for its commands.")

    parser.set_defaults(handler=usage)
    return parser.add_subparsers(dest=f"{name}_command", metavar="COMMAND", parser_class=Parser)


def auditors_required(args: argparse.Namespace) -> int:
    """--auditors-required, by default every --auditor given; more than were given could never be met."""
    given = len(args.auditors)
    required: int = given if args.auditors_required is None else args.auditors_required
    if not 0 <= required <= given:
        raise UsageError(f"--auditors-required {required}: between 0 and the {given} --auditor(s) given; no head "
                         "could ever be accepted otherwise")  # fmt: skip
    return required


def repository_root(text: str) -> Path:
    """The top of the git repository that holds `text`, as git finds it (walking up); else `text` itself."""
    start = Path(text).resolve()
    for folder in (start, *start.parents):
        if (folder / ".git").exists() or ((folder / "HEAD").is_file() and (folder / "objects").is_dir()):
            return folder
    return Path(text)


def add_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--repo", type=repository_root, default=".",
        help="the ledger's git repository, or any folder inside it (default: the one around the current folder)",
    )  # fmt: skip
    add_ledger_dir(parser)


def add_ledger_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger-dir", default=os.environ.get("OPOS_LEDGER_DIR", "ledger"), help=LEDGER_DIR_HELP)


def add_trust(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-root",
        default=os.environ.get("OPOS_TRUST_ROOT"),
        metavar="C",
        help="the pinned trust-root commit (default: $OPOS_TRUST_ROOT, else the history's single root commit)",
    )


def open_ledger(args: argparse.Namespace) -> GitLedger:
    """The repository named by --repo and --ledger-dir; use it with `with`."""
    return GitLedger(args.repo, args.ledger_dir)


def ledger_path(repo: Path, ledger_dir: str) -> tuple[Path, str]:
    """The ledger directory in a working tree, and its path as shown in messages ("ledger/")."""
    parts = normalise_ledger_dir(ledger_dir)
    return repo.joinpath(*parts), "".join(f"{p}/" for p in parts)


def moment(flag: str, text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return parse_timestamp(text)
    except ValueError:
        raise UsageError(f"{flag} {text!r}: a date (2026-11-01) or a time with a zone (2026-11-01T00:00:00Z)") from None


def pinned_keys(
    feed_key_files: list[Path], root_key_files: list[Path], feed_flag: str
) -> tuple[list[Ed25519PublicKey], tuple[keydoc.Key, ...]]:
    """The pinned feed keys and root keys (at least one of either), loaded. Raises UsageError."""
    if not feed_key_files and not root_key_files:
        raise UsageError(f"give the feed key ({feed_flag} FILE.pub) or the root keys (--root-key FILE.pub), or both")
    loaded = []
    for flag, files in ((feed_flag, feed_key_files), ("--root-key", root_key_files)):
        try:
            loaded.append([keys.load_public(path) for path in files])
        except OposError as error:
            raise UsageError(f"{flag}: {error.diagnostics()}") from None
    return loaded[0], tuple(keydoc.Key.of(key) for key in loaded[1])
