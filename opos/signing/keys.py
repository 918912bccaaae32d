"""Feed keys: Ed25519, stored in OpenSSH's formats, named by their OpenSSH fingerprint."""

from __future__ import annotations

import base64
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.atomic import write_atomically
from opos.errors import KeyInvalid
from opos.model import KeyFingerprint
from opos.signing.sshsig import fingerprint as blob_fingerprint
from opos.signing.sshsig import ssh_string


def public_key_blob(public: ed25519.Ed25519PublicKey) -> bytes:
    return ssh_string(b"ssh-ed25519") + ssh_string(public.public_bytes_raw())


def key_id(public: ed25519.Ed25519PublicKey) -> KeyFingerprint:
    """`SHA256:…`, as `ssh-keygen -lf` prints it."""
    return blob_fingerprint(public_key_blob(public))


def public_line(public: ed25519.Ed25519PublicKey, comment: str = "") -> str:
    line = "ssh-ed25519 " + base64.b64encode(public_key_blob(public)).decode()
    return f"{line} {comment}".rstrip() + "\n"


def generate(path: Path, comment: str = "opos feed key") -> ed25519.Ed25519PublicKey:
    """Write a new key to `path` (OpenSSH private key, mode 0600) and `path.pub`."""
    if path.exists():
        raise KeyInvalid(f"{path} exists already: choose another --out, or remove it first")
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    write_atomically(path, private, mode=0o600)
    os.chmod(path, 0o600)
    write_atomically(Path(f"{path}.pub"), public_line(key.public_key(), comment).encode())
    return key.public_key()


def load_private(path: Path) -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key from an OpenSSH (or PEM) file. Raises KeyInvalid."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KeyInvalid(f"cannot read the key {path}: {err.strerror}") from err
    key: object
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError as err:
        raise KeyInvalid(f"{path} is protected by a passphrase: the feed key must load unattended") from err
    except (ValueError, UnsupportedAlgorithm) as err:
        raise KeyInvalid(f"{path} is not a private key OPOS can read ({err}); make one with `opos keygen`") from err
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyInvalid(f"{path} is not an Ed25519 key; make one with `opos keygen`")
    return key


def load_public(path: Path) -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from an OpenSSH `.pub` file (or a private key file). Raises KeyInvalid."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise KeyInvalid(f"cannot read the key {path}: {err.strerror}") from err
    if b"PRIVATE KEY" in data:
        return load_private(path).public_key()
    return parse_public_line(data.decode("ascii", "replace"), str(path))


def parse_public_line(line: str, where: str = "the key") -> ed25519.Ed25519PublicKey:
    """An Ed25519 public key from an OpenSSH line (`ssh-ed25519 AAAA… comment`). Raises KeyInvalid."""
    try:
        key = serialization.load_ssh_public_key(line.strip().encode())
    except (ValueError, UnsupportedAlgorithm) as err:
        raise KeyInvalid(f"{where} is not an OpenSSH public key ({err})") from err
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyInvalid(f"{where} is not an Ed25519 key; OPOS signs with Ed25519")
    return key
