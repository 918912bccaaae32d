"""The key documents of a ledger (`<ledger>/keys/<N>.json`), copied to every site.

    <out>/v1/keys/<N>.json   every version, as committed (never changed once published)
    <out>/v1/keys.json       the newest

The folder's rules are `signing.keydoc`'s, the history's (a version is only ever added, the next
one) `trust.keyhistory`'s, which the verification of every commit that is followed applies.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from opos.atomic import write_atomically
from opos.errors import LedgerInvalid, OposError, Problem
from opos.signing import keydoc, keys


def require_listed(ordered: list[bytes], feed_key: ed25519.Ed25519PublicKey) -> None:
    """With key documents, the feed key must be one the newest lists: probes that follow them accept no other."""
    if not ordered:
        return
    newest = keydoc.read(ordered[-1])[1]
    keyid = keys.key_id(feed_key)
    if keyid not in {k.keyid for k in newest.feed_keys}:
        raise OposError(f"the feed key {keyid} is not in key document version {newest.version} (it lists "
                        f"{', '.join(k.keyid for k in newest.feed_keys)}): probes that pin the root keys would refuse "
                        "every head it signs; add it with `opos keys rotate --add-feed-key` first")  # fmt: skip


def publish(ordered: list[bytes], out: Path) -> None:
    """Write every version to `out/v1/keys/<N>.json` and the newest to `out/v1/keys.json`. Raises LedgerInvalid
    when a version already published there differs: probes that fetched it would be forked."""
    folder = out / "v1" / "keys"
    for version, data in enumerate(ordered, 1):
        path = folder / f"{version}.json"
        try:
            published = path.read_bytes()
        except FileNotFoundError:
            published = None
        if published is not None and published != data:
            raise LedgerInvalid([Problem(f"keys/{version}.json", None, "", "differs from the version this site "
                                         "published: a published key document is never changed")])  # fmt: skip
        if published is None:
            write_atomically(path, data)
    if ordered:
        write_atomically(out / "v1" / "keys.json", ordered[-1])
