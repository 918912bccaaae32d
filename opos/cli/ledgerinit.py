"""`opos init`: a new ledger repository with the template ledger, one allowed signer and the hosting site's files."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
from pathlib import Path
from typing import TextIO

from opos.cli._common import Commands, add_command, add_ledger_dir, ledger_path
from opos.errors import KeyInvalid, RepositoryError, UsageError
from opos.instructions import resources
from opos.signing import sshsig
from opos.trust.gitrepo import GitObjects, init_repository, set_config


def register(commands: Commands) -> None:
    init_parser = add_command(
        commands, "init", init,
        help="create a new ledger repository",
        description="Create a git repository at DIR with the template ledger and one allowed signer, and print "
        "the `git commit -S` command that makes the signed trust-root commit (pin its hash).",
    )  # fmt: skip
    init_parser.add_argument("dir", type=Path)
    init_parser.add_argument("--signer", required=True, help="the signer's principal, usually an e-mail address")
    init_parser.add_argument("--key", type=Path, required=True, help="the signer's SSH public key file (.pub)")
    add_ledger_dir(init_parser)
    init_parser.add_argument("--examples", action="store_true", help="also copy the example instructions")
    init_parser.add_argument(
        "--opos-ref", metavar="COMMIT",
        help="the full commit hash of the OPOS that the ledger's workflow installs (default: the commit of this "
        "OPOS, when it was installed from git or runs from a checkout)",
    )  # fmt: skip
    init_parser.add_argument(
        "--opos-repository", metavar="URL", help="where the workflow installs OPOS from (default: where this one came "
        "from, else https://github.com/ooni/opos)",
    )  # fmt: skip


def init(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    target: Path = args.dir
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not empty: choose a new directory")
    if not PRINCIPAL.fullmatch(args.signer):
        raise UsageError(
            f"--signer {args.signer!r}: a principal is one word, usually an e-mail address (alice@ooni.example); "
            "git and ssh-keygen split allowed_signers lines at white space, so nobody could sign as it"
        )
    if args.opos_ref is not None and not re.fullmatch(r"[0-9a-f]{40}", args.opos_ref):
        raise UsageError(f"--opos-ref {args.opos_ref!r}: the full, 40-character commit hash of OPOS")
    found_ref, found_repository = _this_opos()
    opos_ref = args.opos_ref or found_ref
    opos_repository = args.opos_repository or found_repository or DEFAULT_OPOS_REPOSITORY
    key_text = _read_signer_key(args.key)
    init_repository(target).close()
    folder, shown = ledger_path(target, args.ledger_dir)
    _copy_template(folder, args.examples, f'{args.signer} namespaces="git" {key_text}\n')
    _install_hosting_files(target, opos_ref, opos_repository)
    settings = _configure(target, folder, args.key)
    _tell(args.signer, target, shown, settings, opos_ref, opos_repository, out, err)
    return 0


def _copy_template(folder: Path, examples: bool, signer_line: str) -> None:
    """The template ledger (with the example instructions when asked), allowed_signers naming the one signer."""
    template = resources.data_dir("ledger")
    for source in sorted(template.rglob("*")):
        relative = source.relative_to(template)
        if source.is_dir() or relative.name == "allowed_signers":
            continue
        if relative.parts[0] == "instructions" and not examples and relative.suffix == ".yaml":
            continue
        if relative.parts[0] == "templates":
            continue  # installed at the repository's top by _install_hosting_files
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, folder / relative)
    (folder / "instructions").mkdir(parents=True, exist_ok=True)
    (folder / "instructions" / ".gitkeep").touch()
    header = "".join(
        line
        for line in (template / "allowed_signers").read_text(encoding="utf-8").splitlines(keepends=True)
        if line.startswith("#")
    )
    (folder / "allowed_signers").write_text(header + signer_line, encoding="utf-8")


def _configure(target: Path, folder: Path, key: Path) -> dict[str, str]:
    """The schemas beside the ledger, and the repository's git configuration: every commit signed with `key`."""
    schemas = target / "schemas"
    schemas.mkdir(exist_ok=True)
    for name in ("instruction.schema.json", "policy.schema.json"):
        shutil.copyfile(resources.data_dir("schemas") / name, schemas / name)
    private = key.with_suffix("") if key.suffix == ".pub" else key
    signing_key = private if private.exists() else key
    settings = {
        "gpg.format": "ssh",
        "gpg.ssh.allowedSignersFile": str((folder / "allowed_signers").resolve()),
        "user.signingkey": str(signing_key.resolve()),
        "commit.gpgsign": "true",
    }
    set_config(target, settings)
    return settings


def _tell(
    signer: str, target: Path, shown: str, settings: dict[str, str], opos_ref: str | None, opos_repository: str,
    out: TextIO, err: TextIO,
) -> None:  # fmt: skip
    """What was made, and the commands that make the signed trust-root commit."""
    print(f"Created the ledger repository {target} with {signer} as its signer ({shown or './'}).", file=out)
    print("Set in its git configuration (.git/config), so that every commit is signed with your key:", file=out)
    for name, value in settings.items():
        print(f"  {name} = {value}", file=out)
    if opos_ref:
        print(f"The ledger workflow installs OPOS {opos_ref} from {opos_repository}.", file=out)
    else:
        unpinned = (
            "The ledger workflow does not yet name the OPOS it installs: set OPOS_REF in "
            ".github/workflows/ledger.yml to the full commit hash you trust (or rerun with --opos-ref)."
        )
        print(unpinned, file=err)
    protect = (
        "On the hosting site, protect the main branch: require signed commits, allow merge commits only "
        "(no squash, no rebase: their commits are not signed by staff), and restrict who may push."
    )
    print(protect, file=out)
    print("Make the signed trust-root commit, and pin its hash:", file=out)
    print(f"  cd {target}", file=out)
    print("  git add -A", file=out)
    print(f'  git commit -S -m "Start the ledger: trust root, signer {signer}"', file=out)
    print("  git rev-parse HEAD   # the trust root: give it as --trust-root / OPOS_TRUST_ROOT", file=out)


DEFAULT_OPOS_REPOSITORY = "https://github.com/ooni/opos"
PRINCIPAL = re.compile(r"[^\s,\"'#*?!]+")


def _this_opos() -> tuple[str | None, str | None]:
    """(commit, repository URL) of the running OPOS, when it can be told: a git install's record, or a checkout."""
    try:
        record = importlib.metadata.distribution("opos").read_text("direct_url.json")
        direct = json.loads(record) if record else {}
    except (importlib.metadata.PackageNotFoundError, ValueError):
        direct = {}
    commit = direct.get("vcs_info", {}).get("commit_id") if isinstance(direct, dict) else None
    if isinstance(commit, str) and re.fullmatch(r"[0-9a-f]{40}", commit):
        url = str(direct.get("url", "")).removeprefix("git+") or None
        return commit, url
    checkout = resources.data_dir("ledger").parent
    if (checkout / ".git").exists():
        try:
            with GitObjects(checkout) as objects:
                return objects.resolve("HEAD"), None
        except RepositoryError:
            return None, None
    return None, None


def _install_hosting_files(target: Path, opos_ref: str | None, opos_repository: str) -> None:
    """The pull-request template, a CODEOWNERS example and the ledger workflow, where the hosting site reads them."""
    hosting = target / ".github"
    (hosting / "workflows").mkdir(parents=True, exist_ok=True)
    templates = resources.data_dir("ledger") / "templates"
    for name in ("pull_request_template.md", "CODEOWNERS"):
        shutil.copyfile(templates / name, hosting / name)
    workflow = (resources.data_dir(".github/workflows") / "ledger.yml").read_text(encoding="utf-8")
    workflow = workflow.replace('OPOS_REF: "."', f'OPOS_REF: "{opos_ref or ""}"')
    workflow = workflow.replace(
        f'OPOS_REPOSITORY: "{DEFAULT_OPOS_REPOSITORY}"', f'OPOS_REPOSITORY: "{opos_repository}"'
    )
    (hosting / "workflows" / "ledger.yml").write_text(workflow, encoding="utf-8")


def _read_signer_key(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise KeyInvalid(f"cannot read the signer's public key {path}: {error}") from None
    parts = text.split()
    if "PRIVATE KEY" in text:
        raise KeyInvalid(f"{path} is a private key: give the public one ({path}.pub)")
    if len(parts) < 2 or parts[0] not in sshsig.KEY_TYPES:
        raise KeyInvalid(f"{path} is not an SSH public key (expected: {' | '.join(sshsig.KEY_TYPES)} AAAA…)")
    problems = sshsig.parse_allowed_signers(f"x {parts[0]} {parts[1]}".encode())[1]
    if problems:
        raise KeyInvalid(f"{path}: {problems[0].message.split(';')[0]}")
    return f"{parts[0]} {parts[1]}"
