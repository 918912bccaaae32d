"""SSHSIG and allowed_signers against the real ssh-keygen."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from conftest import SshKey
from opos.errors import SignatureInvalid, SignerNotValid, SignerUnknown
from opos.signing import keys as feed_keys
from opos.signing import sshsig

NOW = dt.datetime(2026, 11, 28, tzinfo=dt.UTC)


def ssh_sign(key: SshKey, message: bytes, tmp_path: Path, namespace: str = "git") -> bytes:
    target = tmp_path / "message"
    target.write_bytes(message)
    subprocess.run(
        ["ssh-keygen", "-q", "-Y", "sign", "-n", namespace, "-f", str(key.private), str(target)],
        check=True,
        capture_output=True,
    )
    return (tmp_path / "message.sig").read_bytes()


def signers_of(*lines: str) -> list[sshsig.AllowedSigner]:
    parsed, problems = sshsig.parse_allowed_signers("\n".join(lines).encode())
    assert problems == []
    return parsed


@pytest.mark.parametrize("name", ["alice", "carol", "dave"])
def test_ssh_keygen_signatures_verify(keys: dict[str, SshKey], tmp_path: Path, name: str) -> None:
    signature = ssh_sign(keys[name], b"payload\n", tmp_path)
    verified = sshsig.verify(signature, b"payload\n", signers_of(f"{name}@x {keys[name].public_text}"), NOW)
    assert verified.principal == f"{name}@x"
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(keys[name].public)], capture_output=True, text=True)
    assert verified.fingerprint == fingerprint.stdout.split()[1]


def test_tampered_message_fails(keys: dict[str, SshKey], tmp_path: Path) -> None:
    signature = ssh_sign(keys["alice"], b"payload\n", tmp_path)
    with pytest.raises(SignatureInvalid, match="does not match"):
        sshsig.verify(signature, b"payload!\n", signers_of(f"a {keys['alice'].public_text}"), NOW)


def test_other_namespace_fails(keys: dict[str, SshKey], tmp_path: Path) -> None:
    signature = ssh_sign(keys["alice"], b"payload\n", tmp_path, namespace="file")
    with pytest.raises(SignatureInvalid, match="namespace 'file'"):
        sshsig.verify(signature, b"payload\n", signers_of(f"a {keys['alice'].public_text}"), NOW)


def test_unknown_and_not_valid(keys: dict[str, SshKey], tmp_path: Path) -> None:
    signature = ssh_sign(keys["alice"], b"m", tmp_path)
    with pytest.raises(SignerUnknown):
        sshsig.verify(signature, b"m", signers_of(f"b {keys['bob'].public_text}"), NOW)
    expired = signers_of(f'a valid-before="20261101" {keys["alice"].public_text}')
    with pytest.raises(SignerNotValid):
        sshsig.verify(signature, b"m", expired, NOW)
    restricted = signers_of(f'a namespaces="file,!git" {keys["alice"].public_text}')
    with pytest.raises(SignerNotValid):
        sshsig.verify(signature, b"m", restricted, NOW)
    later = signers_of(
        f'a valid-before="20261101" {keys["alice"].public_text}',
        f'a2 valid-after="20261101Z" {keys["alice"].public_text}',
    )
    assert sshsig.verify(signature, b"m", later, NOW).principal == "a2"


@pytest.mark.parametrize(
    "garbage",
    [b"", b"-----BEGIN SSH SIGNATURE-----\n!!!\n-----END SSH SIGNATURE-----", b"-----BEGIN PGP SIGNATURE-----"],
)
def test_malformed_signatures(keys: dict[str, SshKey], garbage: bytes) -> None:
    with pytest.raises(SignatureInvalid):
        sshsig.verify(garbage, b"m", signers_of(f"a {keys['alice'].public_text}"), NOW)


def test_our_signatures_verify_with_ssh_keygen(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "message").write_bytes(b"hello\n")
    (tmp_path / "message.sig").write_bytes(sshsig.sign_ed25519(key, b"hello\n"))
    (tmp_path / "allowed").write_text(f"me {feed_keys.public_line(key.public_key())}")
    result = subprocess.run(
        ["ssh-keygen", "-Y", "verify", "-n", "git", "-I", "me", "-f", "allowed", "-s", "message.sig"],
        cwd=tmp_path,
        input=b"hello\n",
        capture_output=True,
    )
    assert result.returncode == 0, result.stderr


def test_allowed_signers_syntax(keys: dict[str, SshKey]) -> None:
    alice = keys["alice"].public_text
    text = "\n".join(
        [
            "# comment",
            "",
            f'"alice@x,a2@x" {alice} comment here',
            f'bob@x cert-authority,namespaces="git" {alice}',
            "broken-line",
            f"carol@x ssh-dss {alice.split()[1]}",
            f'dave@x valid-after="2026" {alice}',
            f"erin@x ssh-rsa {alice.split()[1]}",
        ]
    )
    parsed, problems = sshsig.parse_allowed_signers(text.encode(), "ledger/allowed_signers")
    assert [s.principals for s in parsed] == ["alice@x,a2@x", "bob@x"]
    assert parsed[1].cert_authority and parsed[1].namespaces == "git"
    assert [p.line for p in problems] == [5, 6, 7, 8]
    assert all(str(p).startswith("ledger/allowed_signers:") for p in problems)
