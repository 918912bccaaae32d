"""The scenarios of trust: honest mirrors, forged and stale documents, key documents, auditors."""

from __future__ import annotations

import datetime as dt
from typing import Any

from opos.conformance.scenarios import FEED, Mirror, Step, ok, one, scenario
from opos.conformance.world import Files, World, commit_id, instruction

# honest


@scenario("honest/first-poll", "a probe follows a signed feed from its first poll")
def _first(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w)),), ok(1, runs=["ir-one"]))]


@scenario("honest/unchanged", "an unchanged head (304 to If-None-Match) keeps the feed")
def _unchanged(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return FEED, [Step((Mirror(site),), ok(1)), Step((Mirror(site),), ok(1), later=dt.timedelta(minutes=5))]


@scenario("honest/new-commit", "a new commit is followed at the next poll")
def _new_commit(w: World) -> tuple[dict[str, Any], list[Step]]:
    two = w.site(2, [instruction("ir-one", w.now), instruction("ir-two", w.now)])
    return FEED, [Step((Mirror(one(w)),), ok(1)), Step((Mirror(two),), ok(2, runs=["ir-two"]))]


@scenario("honest/several-mirrors", "of several mirrors, one good answer is enough, whatever the order")
def _several(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(behaviour={"/v1/head.json": 503}), Mirror(one(w)), Mirror(behaviour={
        "/v1/head.json": 404})), ok(1))]  # fmt: skip


@scenario("honest/offline-cache", "offline, the last good feed keeps serving (its windows decide what runs)")
def _offline(w: World) -> tuple[dict[str, Any], list[Step]]:
    down = Mirror(behaviour={"/v1/head.json": 503})
    return FEED, [
        Step((Mirror(one(w)),), ok(1)),
        Step((down,), ok(1, source="cache"), later=dt.timedelta(hours=2)),
        Step((down,), ok(1, source="cache", runs=[]), later=dt.timedelta(days=8)),  # its window has ended
    ]


@scenario("honest/offline-default", "offline with nothing cached, the default schedule only")
def _offline_default(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(behaviour={"/v1/head.json": 503}),), {"commit": None, "source": "default"})]


@scenario("honest/fronted-mirror", "a fronted mirror (URL#host=NAME) is asked with Host: NAME")
def _fronted(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w), host="hidden.example"),), ok(1))]


@scenario("honest/higher-sequence", "a jump of several sequences is followed (a probe that slept)")
def _jump(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w)),), ok(1)), Step((Mirror(w.site(9, [instruction("ir-one", w.now)])),), ok(9))]


# trust


@scenario("trust/feed-missing", "a head whose feed the mirror does not have gives no feed")
def _feed_missing(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    del site[f"/v1/feed/{commit_id(1)}.json"]
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["404", "feed"]})]


@scenario("trust/feed-other-key", "a feed signed by a key the probe does not pin is refused, even under a good head")
def _feed_other_key(w: World) -> tuple[dict[str, Any], list[Step]]:
    feed = w.feed(1, [instruction("ir-one", w.now)], key="other")
    site = {"/v1/head.json": w.head(1, feed), f"/v1/feed/{commit_id(1)}.json": feed}
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["signature", "key"]})]


@scenario("trust/garbage-head", "bytes that are not an envelope are refused, not a crash")
def _garbage(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror({"/v1/head.json": b"\x00\xff<html>not json"}), Mirror(one(w))), ok(1))]


@scenario("trust/empty-head", "an empty head is refused, not a crash")
def _empty(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror({"/v1/head.json": b""}),), {"commit": None, "rejected": ["json", "envelope", "empty"]})]


@scenario("trust/wrong-key", "a head signed by a key the probe does not pin is refused")
def _wrong_key(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w, key="other")),), {"commit": None, "source": "default",
                                                         "rejected": ["signature", "key"]})]  # fmt: skip


@scenario("trust/unsigned", "an envelope without a signature is refused")
def _unsigned(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    site["/v1/head.json"] = site["/v1/head.json"].replace(b'"signatures":[{', b'"signatures":[],"x":[{')
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["signature", "not", "invalid"]})]


@scenario("trust/bad-signature", "a signature that does not verify is refused")
def _bad_signature(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    head = site["/v1/head.json"]
    marker = head.index(b'"sig":"') + len(b'"sig":"')
    site["/v1/head.json"] = head[:marker] + (b"B" if head[marker : marker + 1] != b"B" else b"C") + head[marker + 1 :]
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["signature"]})]


@scenario("trust/feed-digest", "a feed that is not the one its head names (SHA-256) is refused")
def _feed_digest(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    other = w.feed(1, [instruction("ir-evil", w.now)])
    site[f"/v1/feed/{commit_id(1)}.json"] = other
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["digest", "sha", "match"]})]


@scenario("trust/mix-and-match", "the head of one commit with the feed of another is refused")
def _mix(w: World) -> tuple[dict[str, Any], list[Step]]:
    first, second = one(w), w.site(2, [instruction("ir-two", w.now)])
    site = {
        "/v1/head.json": second["/v1/head.json"],
        f"/v1/feed/{commit_id(2)}.json": first[f"/v1/feed/{commit_id(1)}.json"],
    }
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["digest", "sha", "match", "names"]})]


@scenario("trust/rollback", "a lower sequence than the one accepted is refused; the cache stays")
def _rollback(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(w.site(2, [instruction("ir-two", w.now)])),), ok(2)),
                  Step((Mirror(one(w)),), ok(2, source="cache", rejected=["rollback", "lower"]))]  # fmt: skip


@scenario("trust/freeze", "an expired head is refused (a mirror cannot freeze a probe on an old feed)")
def _freeze(w: World) -> tuple[dict[str, Any], list[Step]]:
    stale = one(w, issued=w.now - dt.timedelta(days=3))
    return FEED, [Step((Mirror(stale),), {"commit": None, "rejected": ["expired"]})]


@scenario("trust/split-view", "the same sequence at another commit is a split view: refused, the first kept")
def _split(w: World) -> tuple[dict[str, Any], list[Step]]:
    other = w.site(1, [instruction("ir-evil", w.now)], variant="fork")
    return FEED, [Step((Mirror(one(w)),), ok(1)),
                  Step((Mirror(other),), ok(1, source="cache", rejected=["split"]))]  # fmt: skip


@scenario("trust/unsolicited-304", "a 304 to a request that asked for nothing cached confirms nothing")
def _unsolicited(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(behaviour={"/v1/head.json": "unsolicited-304"}),), {"commit": None,
                                                                                    "rejected": ["304"]})]  # fmt: skip


@scenario("trust/other-payload-type", "a feed presented as the head is refused")
def _payload_type(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    site["/v1/head.json"] = site[f"/v1/feed/{commit_id(1)}.json"]
    return FEED, [Step((Mirror(site),), {"commit": None, "rejected": ["head", "type", "feed"]})]


# keys


def keyed(w: World, versions: list[bytes], newest: int | None = None, **site: Any) -> Files:
    files = one(w, **site)
    for number, data in enumerate(versions, start=1):
        files[f"/v1/keys/{number}.json"] = data
    files["/v1/keys.json"] = versions[(newest or len(versions)) - 1]
    return files


ROOT = {"root_keys": ["root"]}


@scenario("keys/root-pinned", "with a root key pinned, the feed key comes from the key document")
def _root(w: World) -> tuple[dict[str, Any], list[Step]]:
    return ROOT, [Step((Mirror(keyed(w, [w.key_document(1)])),), ok(1))]


@scenario("keys/rotation-one-step", "a rotation in one version is followed")
def _rotation(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [w.key_document(1), w.key_document(2, feed_keys=["feed-2"])]
    return ROOT, [Step((Mirror(keyed(w, versions, key="feed-2")),), ok(1))]


@scenario("keys/rotation-two-steps", "a rotation over two versions (add, then remove) is followed")
def _rotation_two(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [
        w.key_document(1),
        w.key_document(2, feed_keys=["feed", "feed-2"]),
        w.key_document(3, feed_keys=["feed-2"]),
    ]
    return ROOT, [Step((Mirror(keyed(w, versions[:2])),), ok(1)),
                  Step((Mirror(keyed(w, versions, sequence=2, key="feed-2")),), ok(2))]  # fmt: skip


@scenario("keys/revoked-feed-key", "a feed key the newest document removed verifies nothing")
def _revoked(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [w.key_document(1), w.key_document(2, feed_keys=["feed-2"])]
    return ROOT, [Step((Mirror(keyed(w, versions)),), {"commit": None, "rejected": ["signature", "key"]})]


@scenario("keys/rolled-back", "a key document older than the one trusted is refused")
def _keys_rollback(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [w.key_document(1), w.key_document(2, feed_keys=["feed-2"])]
    rolled_back = keyed(w, versions, newest=1, key="feed-2")
    return ROOT, [Step((Mirror(keyed(w, versions, key="feed-2")),), ok(1)),
                  Step((Mirror(rolled_back),), ok(1, rejected=["rollback"]))]  # fmt: skip


@scenario("keys/skipped-version", "a key document that skips a version is refused")
def _skipped(w: World) -> tuple[dict[str, Any], list[Step]]:
    files = keyed(w, [w.key_document(1)])
    files["/v1/keys.json"] = w.key_document(3, feed_keys=["feed-2"])
    files["/v1/keys/2.json"] = w.key_document(3, feed_keys=["feed-2"])
    return ROOT, [Step((Mirror(files),), {"rejected": ["version"]})]


@scenario("keys/expired", "an expired newest key document verifies no head")
def _keys_expired(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [w.key_document(1, expires=w.now - dt.timedelta(days=1))]
    return ROOT, [Step((Mirror(keyed(w, versions)),), {"commit": None, "rejected": ["expired"]})]


@scenario("keys/threshold-one-key-twice", "a threshold of 2 is not met by one root key signing twice")
def _threshold(w: World) -> tuple[dict[str, Any], list[Step]]:
    first = w.key_document(1, roots=["root", "root-2"], threshold=2, signers=["root", "root-2"])
    second = w.key_document(2, feed_keys=["feed-2"], roots=["root", "root-2"], threshold=2, signers=["root", "root"])
    return {"root_keys": ["root", "root-2"]}, [
        Step((Mirror(keyed(w, [first, second], key="feed-2")),), {"commit": None, "rejected": ["signed by 1", "root"]}),
    ]


@scenario("keys/first-version-other-roots", "a first key document whose roots are not the pinned ones is refused")
def _other_roots(w: World) -> tuple[dict[str, Any], list[Step]]:
    return ROOT, [Step((Mirror(keyed(w, [w.key_document(1, roots=["root-2"])])),), {"commit": None,
                                                                                    "rejected": ["root"]})]  # fmt: skip


@scenario("keys/fork", "another document under the trusted version number is a fork: refused")
def _fork(w: World) -> tuple[dict[str, Any], list[Step]]:
    versions = [w.key_document(1), w.key_document(2, feed_keys=["feed-2"])]
    forked = [versions[0], w.key_document(2, feed_keys=["feed-3"])]
    return ROOT, [Step((Mirror(keyed(w, versions, key="feed-2")),), ok(1)),
                  Step((Mirror(keyed(w, forked, key="feed-2")),), ok(1, rejected=["fork"]))]  # fmt: skip


# auditors


AUDITED = {"keys": ["feed"], "auditors": ["auditor-1", "auditor-2", "auditor-3"], "auditors_required": 2}


@scenario("auditors/k-of-n", "a head cosigned by k of the n pinned auditors is followed")
def _k_of_n(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return AUDITED, [Step((Mirror({**site, **w.cosignatures(site, ["auditor-1", "auditor-3"])}),), ok(1))]


@scenario("auditors/k-minus-one", "k − 1 cosignatures are not enough")
def _k_minus_one(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return AUDITED, [Step((Mirror({**site, **w.cosignatures(site, ["auditor-1"])}),),
                          {"commit": None, "rejected": ["cosign", "auditor"]})]  # fmt: skip


@scenario("auditors/one-twice", "one auditor's cosignature twice counts once")
def _auditor_twice(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return AUDITED, [Step((Mirror({**site, **w.cosignatures(site, ["auditor-1", "auditor-1"])}),),
                          {"commit": None, "rejected": ["cosign", "auditor"]})]  # fmt: skip


@scenario("auditors/other-sequence", "cosignatures over another sequence do not count")
def _other_sequence(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return AUDITED, [Step((Mirror({**site, **w.cosignatures(site, ["auditor-1", "auditor-2"], sequence=7)}),),
                          {"commit": None, "rejected": ["cosign", "auditor"]})]  # fmt: skip


@scenario("auditors/other-commit", "cosignatures of another commit do not count")
def _other_commit(w: World) -> tuple[dict[str, Any], list[Step]]:
    site, other = one(w), w.site(1, [instruction("ir-one", w.now)], variant="other")
    moved = {f"/v1/cosignatures/{commit_id(1)}.json": w.cosignatures(other, ["auditor-1", "auditor-2"])[
        f"/v1/cosignatures/{commit_id(1, 'other')}.json"]}  # fmt: skip
    return AUDITED, [Step((Mirror({**site, **moved}),), {"commit": None, "rejected": ["cosign", "auditor"]})]


@scenario("auditors/other-digest", "cosignatures over another feed (digest) do not count")
def _other_digest(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    forged = w.cosignatures(site, ["auditor-1", "auditor-2"], digest="0" * 64)
    return AUDITED, [Step((Mirror({**site, **forged}),), {"commit": None, "rejected": ["cosign", "auditor"]})]


@scenario("auditors/unpinned", "cosignatures by auditors the probe does not pin do not count")
def _unpinned(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return AUDITED, [Step((Mirror({**site, **w.cosignatures(site, ["stranger-1", "stranger-2"])}),),
                          {"commit": None, "rejected": ["cosign", "auditor"]})]  # fmt: skip


@scenario("auditors/none", "a head without cosignatures is refused when they are required")
def _no_cosignatures(w: World) -> tuple[dict[str, Any], list[Step]]:
    return AUDITED, [Step((Mirror(one(w)),), {"commit": None, "rejected": ["cosign", "404"]})]
