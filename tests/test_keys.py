"""Feed keys: OpenSSH formats that ssh-keygen reads, fingerprints as it prints them."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

from conftest import SshKey, opos


def test_keygen_writes_openssh_files(tmp_path: Path) -> None:
    key = tmp_path / "feed-key"
    result = opos("keygen", "--out", key)
    assert result.code == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    public = subprocess.run(["ssh-keygen", "-y", "-f", str(key)], capture_output=True, text=True, check=True)
    assert public.stdout.split()[:2] == Path(f"{key}.pub").read_text().split()[:2]
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True, check=True)
    assert f"key id: {fingerprint.stdout.split()[1]}" in result.out


def test_keygen_never_overwrites(tmp_path: Path) -> None:
    key = tmp_path / "feed-key"
    opos("keygen", "--out", key)
    before = key.read_bytes()
    result = opos("keygen", "--out", key)
    assert result.code == 1 and "exists already" in result.err and key.read_bytes() == before


def test_keys_opos_cannot_use(tmp_path: Path, keys: dict[str, SshKey]) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "secret", "-f", str(tmp_path / "locked")], check=True)
    for path, message in [
        (tmp_path / "locked", "passphrase"),
        (keys["dave"].private, "not an Ed25519 key"),
        (keys["dave"].public, "not an Ed25519 key"),
    ]:
        result = opos("verify-feed", tmp_path / "nothing.json", "--key", path)
        assert result.code == 1 and message in result.err, (path, result.err)
