"""The probe's key document: learn the current feed keys and auditors from the pinned root keys.

On each poll, before any head is looked at: ask the mirrors (in the poll's order) for
`v1/keys.json` (conditionally); when it is newer than the trusted version, walk `v1/keys/<N+1>.json`,
`<N+2>` … from the trusted version, each checked by the chain rules (`opos.signing.keydoc`), at most
32 versions a poll and 64 KiB each, saving each as it is trusted. Never a lower version; a mirror
whose copy of the trusted version differs is a fork. The final version must not have expired. Any
failure keeps the last trusted document and reports the mirror with its reason; without a trusted
document, the first one is `v1/keys/1.json`, whose root keys must be exactly the pinned ones.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from opos.errors import FetchFailed, UntrustedDataError
from opos.probe import plan
from opos.probe.errors import Rejected
from opos.probe.state import ProbeState
from opos.signing import keydoc
from opos.transport import Fetcher, Mirror


def trusted(state: ProbeState, roots: Sequence[keydoc.Key]) -> tuple[bytes, keydoc.KeyDocument] | None:
    """The saved document, checked again for form and for its own roots' threshold (its version is a pin)."""
    data = state.key_document()
    if data is None:
        return None
    try:
        envelope, document = keydoc.read(data)
        if len(keydoc.signers(envelope, document.root_keys)) < document.root_threshold:
            raise Rejected("it is not signed by enough of its own root keys")
        if document.version == 1:
            keydoc.first(data, roots)
    except UntrustedDataError:
        return None  # walked again from version 1, with the pinned roots
    return data, document


def update(
    roots: Sequence[keydoc.Key],
    state: ProbeState,
    mirrors: Sequence[Mirror],
    fetcher: Fetcher,
    rejected: list[plan.RejectedSource],
    now: dt.datetime,
    clock_skew: dt.timedelta,
) -> keydoc.KeyDocument | None:
    """The trusted key document, None when there is none yet. Heads are verified only with a current one (not
    expired, as TrustedState.update_keys says); the cache is checked with the last trusted one."""
    known = trusted(state, roots)
    etags = state.etags()
    for mirror in mirrors:
        try:
            data, document, newest = _from_mirror(
                mirror, known, roots, state, fetcher, etags.get(f"{mirror.url} keys"), now
            )
            if document.version < newest:  # not an error of the mirror's: the probe's own bound, said
                rejected.append(plan.RejectedSource(mirror.url, f"keys: its key document is version {newest}; a poll "
                                f"walks at most {keydoc.MAX_WALK} versions (the probe's limit), so version "
                                f"{document.version} is trusted now and the rest follow in later polls"))  # fmt: skip
            if document.expired(now, clock_skew):
                raise Rejected(f"the newest key document it has (version {document.version}) expired at "
                               f"{document.expires:%Y-%m-%dT%H:%M:%SZ}")  # fmt: skip
            state.save_key_document(data)
            return document
        except (FetchFailed, UntrustedDataError) as err:
            rejected.append(plan.RejectedSource(mirror.url, f"keys: {err}"))
        except Exception as err:  # whatever a mirror sends, the probe goes on
            rejected.append(plan.RejectedSource(mirror.url, f"keys: could not be handled ({type(err).__name__})"))
        known = trusted(state, roots) or known  # versions walked before the failure stay trusted
    return known[1] if known is not None else None


def _from_mirror(
    mirror: Mirror,
    known: tuple[bytes, keydoc.KeyDocument] | None,
    roots: Sequence[keydoc.Key],
    state: ProbeState,
    fetcher: Fetcher,
    etag: str | None,
    now: dt.datetime,
) -> tuple[bytes, keydoc.KeyDocument, int]:
    """The newest document trusted from this mirror, and the version the mirror says is its newest."""
    answer = fetcher.get(mirror, "v1/keys.json", keydoc.MAX_BYTES, etag if known else None)
    newest_bytes = known[0] if answer.status == 304 and known else answer.body
    _, newest = keydoc.read(newest_bytes)
    if known is None:
        first = fetcher.get(mirror, "v1/keys/1.json", keydoc.MAX_BYTES).body
        known = first, keydoc.first(first, roots)
    data, document = known
    if newest.version < document.version:
        raise Rejected(f"rollback: its key document is version {newest.version}; version {document.version} is trusted")
    for _ in range(keydoc.MAX_WALK):
        if document.version == newest.version:
            break
        following = document.version + 1
        data = newest_bytes if following == newest.version else fetcher.get(
            mirror, f"v1/keys/{following}.json", keydoc.MAX_BYTES).body  # fmt: skip
        document = keydoc.following(document, data)
        if document.version < newest.version:
            state.save_key_document(data)  # trusted on the way: a later failure keeps it (the newest, once current)
    if document.version == newest.version and keydoc.read(data)[1] != newest:
        raise Rejected(f"a fork: its key document version {newest.version} is not the one trusted")
    if answer.status == 200 and document.version == newest.version and not document.expired(now):
        state.save_etag(f"{mirror.url} keys", answer.etag)
    return data, document, newest.version
