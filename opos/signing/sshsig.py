"""OpenSSH signatures (PROTOCOL.sshsig) and git's allowed-signers file, verified in-process.

This is what `ssh-keygen -Y find-principals` and `-Y verify` do for `git verify-commit`, without a
process per commit: parse the armoured SSHSIG, check that its namespace is `git`, find the
allowed-signers lines that hold its key and are valid at the commit's time and for the namespace,
and verify the signature with `cryptography`. Keys: ssh-ed25519, ecdsa-sha2-nistp256/384/521, and
RSA with rsa-sha2-256/512 (never SHA-1 `ssh-rsa` signatures).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import fnmatch
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from opos.errors import Problem, SignatureInvalid, SignerNotValid, SignerUnknown
from opos.model import KeyFingerprint, Signer, format_time

MAGIC = b"SSHSIG"
ARMOR_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
ARMOR_END = b"-----END SSH SIGNATURE-----"
KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
_MESSAGE_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}


class _Reader:
    """SSH wire format (RFC 4251): uint32 lengths in front of strings."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def string(self) -> bytes:
        if self.offset + 4 > len(self.data):
            raise ValueError("truncated")
        (length,) = struct.unpack_from(">I", self.data, self.offset)
        start = self.offset + 4
        if start + length > len(self.data):
            raise ValueError("truncated")
        self.offset = start + length
        return self.data[start : self.offset]

    def uint32(self) -> int:
        if self.offset + 4 > len(self.data):
            raise ValueError("truncated")
        (value,) = struct.unpack_from(">I", self.data, self.offset)
        self.offset += 4
        return int(value)

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def done(self) -> bool:
        return self.offset == len(self.data)


def ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def fingerprint(key_blob: bytes) -> KeyFingerprint:
    """`SHA256:…` as `ssh-keygen -lf` prints it."""
    digest = base64.b64encode(hashlib.sha256(key_blob).digest()).decode().rstrip("=")
    return KeyFingerprint(f"SHA256:{digest}")


@dataclass(frozen=True)
class SshSignature:
    public_key: bytes  # the signer's key, SSH wire format
    namespace: str
    hash_algorithm: str
    signature: bytes  # SSH signature blob: string type, string bytes


def parse_armored(armored: bytes) -> SshSignature:
    """Parse `-----BEGIN SSH SIGNATURE-----`…. Raises SignatureInvalid."""
    text = armored.strip()
    if not (text.startswith(ARMOR_BEGIN) and text.endswith(ARMOR_END)):
        raise SignatureInvalid("not an SSH signature (no BEGIN/END SSH SIGNATURE lines)")
    body = b"".join(text[len(ARMOR_BEGIN) : -len(ARMOR_END)].split())
    try:
        blob = base64.b64decode(body, validate=True)
        if not blob.startswith(MAGIC):
            raise ValueError("no SSHSIG preamble")
        reader = _Reader(blob[len(MAGIC) :])
        version = reader.uint32()
        if version != 1:
            raise ValueError(f"version {version} (only 1 is defined)")
        public_key, namespace = reader.string(), reader.string()
        reader.string()  # reserved
        hash_algorithm, signature = reader.string(), reader.string()
        if not reader.done():
            raise ValueError("trailing bytes")
        return SshSignature(public_key, namespace.decode(), hash_algorithm.decode(), signature)
    except (ValueError, binascii.Error, UnicodeDecodeError) as err:
        raise SignatureInvalid(f"malformed SSH signature: {err}") from None


def signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = _MESSAGE_HASHES[hash_algorithm](message).digest()
    return MAGIC + b"".join(ssh_string(p) for p in (namespace.encode(), b"", hash_algorithm.encode(), digest))


def key_type(key_blob: bytes) -> str:
    try:
        return _Reader(key_blob).string().decode()
    except (ValueError, UnicodeDecodeError):
        return "?"


def verify_blob(key_blob: bytes, signature_blob: bytes, data: bytes) -> None:
    """Check an SSH signature blob over `data` with an SSH public key. Raises SignatureInvalid."""
    try:
        key = _Reader(key_blob)
        kind = key.string().decode()
        sig = _Reader(signature_blob)
        sig_kind, sig_bytes = sig.string().decode(), sig.string()
        if kind == "ssh-ed25519":
            if sig_kind != kind:
                raise SignatureInvalid(f"a {sig_kind} signature for an {kind} key")
            ed25519.Ed25519PublicKey.from_public_bytes(key.string()).verify(sig_bytes, data)
        elif kind.startswith("ecdsa-sha2-"):
            curve_name = key.string().decode()
            if curve_name not in _CURVES or kind != f"ecdsa-sha2-{curve_name}" or sig_kind != kind:
                raise SignatureInvalid(f"unsupported ECDSA key or signature ({kind}, {sig_kind})")
            curve, algorithm = _CURVES[curve_name]
            point = ec.EllipticCurvePublicKey.from_encoded_point(curve, key.string())
            rs = _Reader(sig_bytes)
            point.verify(encode_dss_signature(rs.mpint(), rs.mpint()), data, ec.ECDSA(algorithm))
        elif kind == "ssh-rsa":
            algorithms = {"rsa-sha2-256": hashes.SHA256(), "rsa-sha2-512": hashes.SHA512()}
            if sig_kind not in algorithms:
                raise SignatureInvalid(f"RSA signatures must be rsa-sha2-256 or rsa-sha2-512, not {sig_kind}")
            exponent, modulus = key.mpint(), key.mpint()
            public = rsa.RSAPublicNumbers(exponent, modulus).public_key()
            public.verify(sig_bytes, data, padding.PKCS1v15(), algorithms[sig_kind])
        else:
            raise SignatureInvalid(f"unsupported key type {kind}")
    except InvalidSignature:
        raise SignatureInvalid("the signature does not match the signed data") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise SignatureInvalid(f"malformed key or signature: {err}") from None


def sign_ed25519(private_key: ed25519.Ed25519PrivateKey, message: bytes, namespace: str = "git") -> bytes:
    """An armoured SSHSIG over `message`, as `ssh-keygen -Y sign` makes it (sha512)."""
    public = private_key.public_key().public_bytes_raw()
    key_blob = ssh_string(b"ssh-ed25519") + ssh_string(public)
    raw = private_key.sign(signed_data(namespace, "sha512", message))
    signature_blob = ssh_string(b"ssh-ed25519") + ssh_string(raw)
    blob = MAGIC + struct.pack(">I", 1)
    blob += b"".join(ssh_string(p) for p in (key_blob, namespace.encode(), b"", b"sha512", signature_blob))
    encoded = base64.b64encode(blob)
    lines = [encoded[i : i + 70] for i in range(0, len(encoded), 70)]
    return b"\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + b"\n"


# --- git's allowed-signers file (ssh-keygen(1), ALLOWED SIGNERS) ---


@dataclass(frozen=True)
class AllowedSigner:
    principals: str
    key_blob: bytes
    line: int
    namespaces: str | None = None
    valid_after: dt.datetime | None = None
    valid_before: dt.datetime | None = None
    cert_authority: bool = False

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or _match_pattern_list(namespace, self.namespaces)

    def valid_at(self, moment: dt.datetime) -> bool:
        if self.valid_after is not None and moment < self.valid_after:
            return False
        return not (self.valid_before is not None and moment > self.valid_before)


def _match_pattern_list(word: str, patterns: str) -> bool:
    """OpenSSH's match_pattern_list: comma-separated globs, `!` negates and wins."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if fnmatch.fnmatchcase(word, pattern.lstrip("!")):
            if negated:
                return False
            matched = True
    return matched


_TOKEN = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\S+)')


def _parse_time(text: str) -> dt.datetime:
    """ssh-keygen's YYYYMMDD[HHMM[SS]][Z]. Without Z OpenSSH reads local time; we read UTC, as CI does."""
    text = text.removesuffix("Z").removesuffix("z")
    if not text.isdigit() or len(text) not in (8, 12, 14):
        raise ValueError(f"{text!r} is not YYYYMMDD[HHMM[SS]][Z]")
    text = text.ljust(14, "0")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%S").replace(tzinfo=dt.UTC)


def _split_options(text: str) -> dict[str, str | None]:
    options: dict[str, str | None] = {}
    for match in re.finditer(r'([A-Za-z-]+)(?:="((?:[^"\\]|\\.)*)")?(?:,|$)', text):
        if match.group(0):
            options[match.group(1).lower()] = match.group(2)
    rebuilt = ",".join(f'{k}="{v}"' if v is not None else k for k, v in options.items())
    if len(rebuilt) != len(text.rstrip(",")):
        raise ValueError(f"cannot read the options {text!r}")
    return options


def parse_allowed_signers(data: bytes, path: str = "allowed_signers") -> tuple[list[AllowedSigner], list[Problem]]:
    """Every usable line, and a Problem for each line that ssh-keygen would skip."""
    signers: list[AllowedSigner] = []
    problems: list[Problem] = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_parse_line(line, number))
        except ValueError as err:
            problems.append(Problem(path, number, "", f"{err}; ssh-keygen and git skip this line"))
    return signers, problems


def _parse_line(line: str, number: int) -> AllowedSigner:
    tokens = [m.group(1) for m in _TOKEN.finditer(line)]
    if len(tokens) < 3:
        raise ValueError("expected: principals [options] key-type base64-key")
    principals = tokens[0].strip('"')
    options: dict[str, str | None] = {}
    rest = tokens[1:]
    if rest[0] not in KEY_TYPES:
        options = _split_options(rest[0])
        rest = rest[1:]
    if len(rest) < 2 or rest[0] not in KEY_TYPES:
        raise ValueError(f"unknown key type {rest[0] if rest else ''!r}; expected one of {', '.join(KEY_TYPES)}")
    try:
        key_blob = base64.b64decode(rest[1], validate=True)
    except binascii.Error:
        raise ValueError("the key is not valid base64") from None
    if key_type(key_blob) != rest[0]:
        raise ValueError(f"the key is not a {rest[0]} key")
    unknown = set(options) - {"cert-authority", "namespaces", "valid-after", "valid-before"}
    if unknown:
        raise ValueError(f"unknown option {sorted(unknown)[0]!r}")
    return AllowedSigner(
        principals=principals,
        key_blob=key_blob,
        line=number,
        namespaces=options.get("namespaces"),
        valid_after=_parse_time(options["valid-after"] or "") if "valid-after" in options else None,
        valid_before=_parse_time(options["valid-before"] or "") if "valid-before" in options else None,
        cert_authority="cert-authority" in options,
    )


def verify(
    armored: bytes, message: bytes, signers: list[AllowedSigner], moment: dt.datetime, namespace: str = "git"
) -> Signer:
    """Verify an armoured SSHSIG over `message` as `ssh-keygen -Y verify` would for git at `moment`.

    Raises SignatureInvalid (or its subclasses SignerUnknown, SignerNotValid) with the reason.
    """
    signature = parse_armored(armored)
    if signature.namespace != namespace:
        raise SignatureInvalid(f"signed for namespace {signature.namespace!r}, not {namespace!r}")
    if signature.hash_algorithm not in _MESSAGE_HASHES:
        raise SignatureInvalid(f"unsupported hash algorithm {signature.hash_algorithm!r}")
    verify_blob(signature.public_key, signature.signature, signed_data(namespace, signature.hash_algorithm, message))
    key_id = fingerprint(signature.public_key)
    lines = [s for s in signers if s.key_blob == signature.public_key and not s.cert_authority]
    if not lines:
        raise SignerUnknown(f"key {key_id} is not in allowed_signers")
    for line in lines:
        if line.allows_namespace(namespace) and line.valid_at(moment):
            return Signer(line.principals, key_id)
    when = format_time(moment)
    raise SignerNotValid(f"key {key_id} ({lines[0].principals}) is not allowed for {namespace!r} at {when}")
