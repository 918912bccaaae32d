"""`opos keys`: the key documents, made offline on a staff machine with the root keys.

    opos keys init --root ROOT_KEY [--root …] --root-threshold K --feed-key FEED.pub [--feed-key …]
                   [--auditor A.pub …] [--auditors-required M] [--expires 365d] --ledger DIR
    opos keys rotate --root ROOT_KEY [--root …] [--add-feed-key F.pub] [--remove-feed-key KEYID] [--add-root R.pub]
                   [--remove-root KEYID] [--root-threshold K] [--add-auditor A.pub] [--remove-auditor KEYID]
                   [--auditors-required M] [--expires 365d] --ledger DIR
    opos keys sign --root ROOT_KEY --ledger DIR        a second root holder signs the newest version

Each writes `DIR/keys/<N>.json`; commit it with `git commit -S` like any change to the ledger.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.atomic import write_atomically
from opos.cli._common import Commands, add_group
from opos.errors import OposError, UntrustedDataError, UsageError
from opos.instructions.worktree import read_key_files
from opos.model import format_time, parse_duration
from opos.signing import keydoc, keys


def register(commands: Commands) -> None:
    sub = add_group(
        commands, "keys",
        help="the key documents: which feed keys and auditors are current, signed by offline root keys",
        description="Probes that pin root keys (opos probe --root-key) learn the current feed keys and auditors from "
        "the ledger's key documents, <ledger>/keys/<N>.json: version 1 signed by a threshold of its own root keys, "
        "each later one by a threshold of the previous version's root keys and of its own. Run these offline, "
        "on a staff machine that holds the root keys, then commit the new file with `git commit -S`.",
    )  # fmt: skip
    init = sub.add_parser("init", help="write version 1", description="Write <ledger>/keys/1.json, signed by the "
                          "root keys given.")  # fmt: skip
    init.set_defaults(handler=init_command)
    _roots(init)
    init.add_argument(
        "--root-threshold", type=int, required=True, metavar="K", help="root signatures each version needs"
    )
    init.add_argument("--feed-key", type=Path, action="append", required=True, dest="feed_keys", metavar="FEED.pub")
    init.add_argument("--auditor", type=Path, action="append", default=[], dest="auditors", metavar="A.pub")
    init.add_argument("--auditors-required", type=int, default=0, metavar="M")
    _common(init)

    rotate = sub.add_parser("rotate", help="write the next version", description="Write <ledger>/keys/<N+1>.json from "
                            "the newest version with the changes given, signed by the root keys given (old roots for "
                            "the previous version's threshold, new ones for its own).")  # fmt: skip
    rotate.set_defaults(handler=rotate_command)
    _roots(rotate)
    for name, what in (("feed-key", "a feed key"), ("root", "a root key"), ("auditor", "an auditor")):
        flag = "root" if name == "root" else name
        rotate.add_argument(f"--add-{flag}", type=Path, action="append", default=[], metavar="KEY.pub",
                            help=f"add {what} (repeat)")  # fmt: skip
        rotate.add_argument(f"--remove-{flag}", action="append", default=[], metavar="KEYID",
                            help=f"remove {what}, by its SHA256:… fingerprint (repeat)")  # fmt: skip
    rotate.add_argument("--root-threshold", type=int, metavar="K")
    rotate.add_argument("--auditors-required", type=int, metavar="M")
    _common(rotate)

    sign = sub.add_parser(
        "sign",
        help="add a root holder's signature to the newest version",
        description="Add the signature of each --root key to the newest <ledger>/keys/<N>.json.",
    )
    sign.set_defaults(handler=sign_command)
    _roots(sign)
    sign.add_argument("--ledger", type=Path, required=True, help="the ledger directory (./ledger)")


def _roots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, action="append", required=True, dest="roots", metavar="ROOT_KEY",
                        help="a root private key (from `opos keygen`) to sign with; repeat")  # fmt: skip


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--expires", default="365d", help="how long the version is valid (default: 365d)")
    parser.add_argument("--ledger", type=Path, required=True, help="the ledger directory (./ledger)")


def _private(paths: list[Path]) -> list[ed25519.Ed25519PrivateKey]:
    try:
        return [keys.load_private(path) for path in paths]
    except OposError as err:
        raise UsageError(err.diagnostics()) from None


def _public(paths: list[Path]) -> list[keydoc.Key]:
    try:
        return [keydoc.Key.of(keys.load_public(path)) for path in paths]
    except OposError as err:
        raise UsageError(err.diagnostics()) from None


def _expires(text: str) -> dt.datetime:
    try:
        seconds = parse_duration(text)
    except ValueError as err:
        raise UsageError(f"--expires {text}: {err}") from None
    return dt.datetime.now(dt.UTC).replace(microsecond=0) + dt.timedelta(seconds=seconds)


def _chain(ledger: Path) -> list[bytes]:
    ordered, problems = keydoc.folder_documents(read_key_files(ledger), "")
    if problems:
        raise UsageError("; ".join(str(p) for p in problems))
    return ordered


def _write(ledger: Path, version: int, data: bytes, out: TextIO, err: TextIO) -> int:
    path = ledger / "keys" / f"{version}.json"
    write_atomically(path, data + b"\n")
    print(f"wrote {path}", file=out)
    try:
        newest = keydoc.chain(_chain(ledger))
    except UntrustedDataError as problem:
        print(f"not complete yet: {problem}. Each other root holder adds theirs with `opos keys sign --root "
              f"ROOT_KEY --ledger {ledger}`; commit it once the chain holds.", file=err)  # fmt: skip
        return 0
    feed = ", ".join(k.keyid for k in newest.feed_keys)
    print(f"the chain holds: version {newest.version}, feed keys {feed}, expires "
          f"{format_time(newest.expires)}. Commit it: git add {path} && git commit -S", file=out)  # fmt: skip
    return 0


def init_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if _chain(args.ledger):
        raise UsageError(f"{args.ledger / 'keys'} already has a chain: `opos keys rotate` writes the next version")
    roots = _private(args.roots)
    document = keydoc.KeyDocument(
        1, _expires(args.expires), tuple(keydoc.Key.of(k.public_key()) for k in roots), args.root_threshold,
        tuple(_public(args.feed_keys)), tuple(_public(args.auditors)), args.auditors_required,
    )  # fmt: skip
    data = keydoc.sign(document, roots)
    _validate(data)
    return _write(args.ledger, 1, data, out, err)


def rotate_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    chain = _chain(args.ledger)
    if not chain:
        raise UsageError(f"{args.ledger / 'keys'} has no version yet: `opos keys init` writes version 1")
    _, newest = keydoc.read(chain[-1])
    document = replace(
        newest, version=newest.version + 1, expires=_expires(args.expires),
        root_keys=_changed(newest.root_keys, args.add_root, args.remove_root, "root"),
        feed_keys=_changed(newest.feed_keys, args.add_feed_key, args.remove_feed_key, "feed key"),
        auditors=_changed(newest.auditors, args.add_auditor, args.remove_auditor, "auditor"),
    )  # fmt: skip
    if args.root_threshold is not None:
        document = replace(document, root_threshold=args.root_threshold)
    if args.auditors_required is not None:
        document = replace(document, auditors_required=args.auditors_required)
    data = keydoc.sign(document, _private(args.roots))
    _validate(data)
    return _write(args.ledger, document.version, data, out, err)


def _changed(current: tuple[keydoc.Key, ...], add: list[Path], remove: list[str], what: str) -> tuple[keydoc.Key, ...]:
    known = {k.keyid for k in current}
    for keyid in remove:
        if keyid not in known:
            raise UsageError(f"--remove: no {what} {keyid} in the newest version ({', '.join(sorted(known))})")
    kept = [k for k in current if k.keyid not in remove]
    return tuple(kept + [k for k in _public(add) if k.keyid not in {c.keyid for c in kept}])


def _validate(data: bytes) -> None:
    try:
        keydoc.read(data)
    except UntrustedDataError as err:
        raise UsageError(str(err)) from None


def sign_command(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    chain = _chain(args.ledger)
    if not chain:
        raise UsageError(f"{args.ledger / 'keys'} has no version to sign")
    data = chain[-1]
    for key in _private(args.roots):
        data = keydoc.add_signature(data, key)
    return _write(args.ledger, len(chain), data, out, err)
