"""The probe client against real HTTP servers on 127.0.0.1: honest mirrors, hostile ones, and none."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.errors import FetchFailed
from opos.instructions import resources
from opos.model import format_time
from opos.probe import ClientConfig, Limits, Mirror, TrustAnchors, poll
from opos.publish.site import publish
from opos.signing import dsse
from opos.signing.keys import load_private, load_public
from opos.transport import Deadline, Exchange, Fetcher
from opos.trust.gitrepo import GitLedger
from opos.trust.verification import Verification
from servers import Mirror as Server

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
START, END = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=9)
WINDOW = f"\n  start: {START:%Y-%m-%dT%H:%M:%SZ}\n  end: {END:%Y-%m-%dT%H:%M:%SZ}"
FAST = Limits(connect_seconds=2, total_seconds=2, gap_seconds=1, head_bytes=64 * 1024, feed_bytes=1024 * 1024)


@dataclass
class Sites:
    a: Path  # the trust root, sequence 0
    b: Path  # sequence 1: a run and a schedule for IR / AS197207
    alt: Path  # sequence 1 on another branch: a split view of b
    commits: dict[str, str]
    key: Path
    repo: LedgerRepo


@pytest.fixture
def sites(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path) -> Sites:
    commits = {"a": ledger_repo.head()}
    ledger_repo.write("ledger/instructions/ir-run.yaml", instruction("ir-run", window=WINDOW))
    ledger_repo.write(
        "ledger/instructions/ir-telegram.yaml",
        instruction("ir-telegram", kind="schedule", test="telegram", inputs=None, every="30m", window=WINDOW),
    )
    commits["b"] = ledger_repo.commit("Run and schedule", keys["alice"])
    ledger_repo.git("checkout", "-q", "-b", "alt", commits["a"])
    ledger_repo.write("ledger/instructions/other-run.yaml", instruction("other-run", window=WINDOW))
    commits["alt"] = ledger_repo.commit("Another history", keys["alice"])
    ledger_repo.git("checkout", "-q", "main")
    paths = {}
    for name, commit in commits.items():
        paths[name] = tmp_path / f"site-{name}"
        result = opos(
            "render", "--repo", ledger_repo.path, "--rev", commit, "--key", feed_key_file, "--out", paths[name]
        )
        assert result.code == 0, result.err
    return Sites(paths["a"], paths["b"], paths["alt"], commits, feed_key_file, ledger_repo)


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def serve(servers: list[Server], site: Path | None = None, host: str | None = None) -> Server:
    server = Server.of_site(site, host) if site else Server()
    servers.append(server)
    return server


def config(sites: Sites, tmp_path: Path, *mirrors: str, **settings: Any) -> ClientConfig:
    defaults: dict[str, Any] = {
        "keys": [load_public(Path(f"{sites.key}.pub"))],
        "country": "IR",
        "network": "AS197207",
        "state_dir": tmp_path / "state",
        "limits": FAST,
        "probe_id": "probe-test-0000000001",
        "defaults": {"web_connectivity": 3600, "telegram": 3600},
    }
    merged = {**defaults, **settings}
    pinned = {
        name: merged.pop(name) for name in ("keys", "root_keys", "auditors", "auditors_required") if name in merged
    }
    pinned["keys"] = tuple(pinned.get("keys", ()))
    return ClientConfig(mirrors=[Mirror.parse(m) for m in mirrors], trust=TrustAnchors(**pinned), **merged)


def poll_json(config: ClientConfig, **options: Any) -> dict[str, Any]:
    """A poll's plan as the JSON document that probes' programs read."""
    return poll(config, **options).to_json()


def check_plan(plan: dict[str, Any]) -> dict[str, Any]:
    jsonschema.validate(plan, resources.schema_document("plan.schema"))
    return plan


def test_an_honest_mirror(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    mirror = serve(servers, sites.b)
    plan = check_plan(poll_json(config(sites, tmp_path, mirror.url)))
    assert plan["source"] == mirror.url and plan["commit"] == sites.commits["b"] and plan["sequence"] == 1
    assert [r["instruction"] for r in plan["runs"]] == ["ir-run"] and plan["runs"][0]["claim"] is None
    assert {"test": "telegram", "every": 1800, "instruction": "ir-telegram"} in plan["schedule"]
    assert {"test": "web_connectivity", "every": 3600, "instruction": None} in plan["schedule"]
    again = check_plan(poll_json(config(sites, tmp_path, mirror.url)))
    assert again["runs"] == []  # a run is reported once per revision
    assert again["source"] == mirror.url and mirror.requests[-1] == "/v1/head.json"  # a 304: the cached feed is current


def test_state_files_are_complete(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    mirror = serve(servers, sites.b)
    poll_json(config(sites, tmp_path, mirror.url))
    state = tmp_path / "state"
    assert json.loads((state / "pin.json").read_text()) == {"sequence": 1, "commit": sites.commits["b"]}
    assert (state / "feed.json").read_bytes() == (sites.b / "v1" / "feed.json").read_bytes()
    assert not (state / "probe_id").exists()  # a given probe id is not stored
    plan = poll_json(config(sites, tmp_path, mirror.url, probe_id=None))
    kept = (state / "probe_id").read_text().strip()
    assert plan["probe_id"] == kept and len(kept) >= 16
    assert poll_json(config(sites, tmp_path, mirror.url, probe_id=None))["probe_id"] == kept


def _tamper(envelope_bytes: bytes, how: str, other_key: Path | None = None) -> bytes:
    envelope = json.loads(envelope_bytes)
    payload = base64.b64decode(envelope["payload"])
    if how == "one byte":
        payload = payload.replace(b'"sequence":1', b'"sequence":7')
        envelope["payload"] = base64.b64encode(payload).decode()
    elif how == "re-encoded":
        envelope["payload"] = base64.b64encode(json.dumps(json.loads(payload), indent=2).encode()).decode()
    elif how == "signature removed":
        envelope["signatures"] = []
    elif how == "wrong payload type":
        envelope["payloadType"] = "application/vnd.opos.feed.v1+json"
    elif how == "wrong key":
        assert other_key is not None
        return dsse.sign(envelope["payloadType"], payload, load_private(other_key), "other").to_bytes()
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("how", ["one byte", "re-encoded", "signature removed", "wrong payload type", "wrong key"])
@pytest.mark.parametrize("document", ["head", "feed"])
def test_tampered_answers_are_rejected(
    sites: Sites, servers: list[Server], tmp_path: Path, how: str, document: str
) -> None:
    other = tmp_path / "other-key"
    opos("keygen", "--out", other)
    hostile = serve(servers, sites.b)
    path = "/v1/head.json" if document == "head" else f"/v1/feed/{sites.commits['b']}.json"
    hostile.files[path] = _tamper(hostile.files[path], how, other)
    plan = check_plan(poll_json(config(sites, tmp_path, hostile.url)))
    assert plan["source"] == "none" and plan["commit"] is None and plan["runs"] == []
    assert len(plan["rejected"]) == 1 and plan["rejected"][0]["mirror"] == hostile.url
    honest = serve(servers, sites.b)
    plan = check_plan(poll_json(config(sites, tmp_path, hostile.url, honest.url)))
    assert plan["source"] == honest.url and plan["commit"] == sites.commits["b"]


def test_rollback_is_refused(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    poll_json(config(sites, tmp_path, serve(servers, sites.b).url))
    old = serve(servers, sites.a)
    plan = check_plan(poll_json(config(sites, tmp_path, old.url)))
    assert plan["source"] == "cache" and plan["commit"] == sites.commits["b"]
    assert "rollback" in plan["rejected"][0]["reason"]


def test_a_lost_cache_keeps_the_pin(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    poll_json(config(sites, tmp_path, serve(servers, sites.b).url))
    for name in ("head.json", "feed.json"):
        (tmp_path / "state" / name).unlink()
    plan = check_plan(poll_json(config(sites, tmp_path, serve(servers, sites.a).url)))
    assert plan["source"] == "none" and "rollback" in plan["rejected"][0]["reason"]


def _expired_site(sites: Sites, out: Path, issued: dt.datetime) -> Path:
    ledger = GitLedger(sites.repo.path)
    commit = ledger.resolve(sites.commits["b"])
    publish(
        Verification.open(ledger, commit, None), commit, load_private(sites.key), out, issued, dt.timedelta(hours=1)
    )
    return out


def test_a_frozen_mirror_is_detected(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    frozen = serve(servers, _expired_site(sites, tmp_path / "frozen", NOW - dt.timedelta(hours=3)))
    plan = check_plan(poll_json(config(sites, tmp_path, frozen.url)))
    assert plan["source"] == "none" and "expired" in plan["rejected"][0]["reason"]


def test_clock_skew_within_the_allowance(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    # the head expired two minutes ago by our clock: a clock that is two minutes fast is allowed for
    late = serve(servers, _expired_site(sites, tmp_path / "late", NOW - dt.timedelta(hours=1, minutes=2)))
    assert poll_json(config(sites, tmp_path, late.url))["source"] == late.url
    strict = config(sites, tmp_path, late.url, clock_skew=dt.timedelta(0), state_dir=tmp_path / "strict")
    assert "expired" in poll_json(strict)["rejected"][0]["reason"]


def test_mix_and_match_is_refused(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    mixed = serve(servers, sites.b)
    mixed.files[f"/v1/feed/{sites.commits['b']}.json"] = (sites.a / "v1" / "feed.json").read_bytes()
    plan = check_plan(poll_json(config(sites, tmp_path, mixed.url)))
    assert plan["source"] == "none" and "feed_sha256" in plan["rejected"][0]["reason"]


@pytest.mark.parametrize(("how", "words"), [("endless", "larger than the limit"), ("trickle", "longer than")])
def test_endless_and_slow_answers_stop(
    sites: Sites, servers: list[Server], tmp_path: Path, how: str, words: str
) -> None:
    hostile = serve(servers, sites.b)
    hostile.behaviour[f"/v1/feed/{sites.commits['b']}.json"] = how
    plan = check_plan(poll_json(config(sites, tmp_path, hostile.url)))
    assert plan["source"] == "none" and words in plan["rejected"][0]["reason"]
    hostile.behaviour["/v1/head.json"] = how
    plan = check_plan(poll_json(config(sites, tmp_path, hostile.url)))
    assert words in plan["rejected"][0]["reason"]


def test_all_mirrors_down_uses_the_cache_then_nothing(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    refused = "http://127.0.0.1:9"  # nothing listens on the discard port here
    unresolvable = "http://" + "x" * 70 + ".invalid"  # refused by the resolver library before any query
    erroring = serve(servers)
    erroring.behaviour["/v1/head.json"] = 503
    fresh = check_plan(poll_json(config(sites, tmp_path, refused, unresolvable, erroring.url)))
    assert fresh["source"] == "none" and fresh["commit"] is None
    assert {item["mirror"] for item in fresh["rejected"]} == {refused, unresolvable, erroring.url}
    reasons = " ".join(item["reason"] for item in fresh["rejected"])
    assert "refused" in reasons and "resolve" in reasons and "503" in reasons
    assert {s["test"] for s in fresh["schedule"]} == {"web_connectivity", "telegram"}  # the defaults
    poll_json(config(sites, tmp_path, serve(servers, sites.b).url))
    cached = check_plan(poll_json(config(sites, tmp_path, refused)))
    assert cached["source"] == "cache" and cached["commit"] == sites.commits["b"]


@pytest.mark.parametrize("damage", ["truncated", "garbage", "feed of another commit", "half"])
def test_a_damaged_state_is_discarded_and_refetched(
    sites: Sites, servers: list[Server], tmp_path: Path, damage: str
) -> None:
    mirror = serve(servers, sites.b)
    poll_json(config(sites, tmp_path, mirror.url))
    state = tmp_path / "state"
    head = state / "head.json"
    if damage == "truncated":
        head.write_bytes(head.read_bytes()[:100])
    elif damage == "garbage":
        (state / "feed.json").write_bytes(b"\x00\xff" * 50)
    elif damage == "feed of another commit":
        (state / "feed.json").write_bytes((sites.a / "v1" / "feed.json").read_bytes())
    else:
        (state / "feed.json").unlink()
    plan = check_plan(poll_json(config(sites, tmp_path, mirror.url)))
    assert plan["rejected"][0]["mirror"] == "cache" and "discarded" in plan["rejected"][0]["reason"]
    assert plan["source"] == mirror.url and plan["commit"] == sites.commits["b"]
    assert poll_json(config(sites, tmp_path, mirror.url))["rejected"] == []


def test_a_split_view_is_reported_with_evidence(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    poll_json(config(sites, tmp_path, serve(servers, sites.b).url))
    other = serve(servers, sites.alt)
    plan = check_plan(poll_json(config(sites, tmp_path, other.url)))
    assert plan["source"] == "cache" and plan["commit"] == sites.commits["b"]
    assert "split view" in plan["rejected"][0]["reason"]
    evidence = list((tmp_path / "state" / "evidence").rglob("*.json"))
    assert len(evidence) == 2


def test_a_fronted_mirror(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    fronted = serve(servers, sites.b, host="hidden.example")
    assert poll_json(config(sites, tmp_path, fronted.url))["source"] == "none"  # wrong Host: 421
    plan = poll_json(config(sites, tmp_path, f"{fronted.url}#host=hidden.example"))
    assert plan["source"] == fronted.url and plan["commit"] == sites.commits["b"]


def test_key_rotation(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    other = tmp_path / "new-key"
    opos("keygen", "--out", other)
    mirror = serve(servers, sites.b)
    both = [load_public(Path(f"{other}.pub")), load_public(Path(f"{sites.key}.pub"))]
    assert poll_json(config(sites, tmp_path, mirror.url, keys=both))["source"] == mirror.url
    only_new = config(sites, tmp_path, mirror.url, keys=both[:1], state_dir=tmp_path / "new")
    assert poll_json(only_new)["source"] == "none"


def test_random_mirror_order(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    first, second = serve(servers, sites.b), serve(servers, sites.b)
    import random

    sources = {poll_json(config(sites, tmp_path / str(seed), first.url, second.url), rng=random.Random(seed))["source"]
               for seed in range(12)}  # fmt: skip
    assert sources == {first.url, second.url}


def test_the_probe_command(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    mirror = serve(servers, sites.b)
    common = ["--key", f"{sites.key}.pub", "--country", "ir", "--network", "197207", "--state", tmp_path / "state",
              "--timeout", "2"]  # fmt: skip
    text = opos("probe", "--mirror", mirror.url, *common)
    assert text.code == 0, text.err
    assert f"feed: commit {sites.commits['b']}, sequence 1, from {mirror.url}" in text.out
    assert "ir-run" in text.out and "uncapped" in text.out and "telegram" in text.out and "(ir-telegram)" in text.out
    offline = opos("probe", "--mirror", "http://127.0.0.1:9", *common)
    assert offline.code == 0 and "from the cache" in offline.out
    assert "http://127.0.0.1:9: connection refused" in offline.out
    as_json = opos("probe", "--mirror", mirror.url, *common, "--json")
    document = check_plan(json.loads(as_json.out))
    assert document["runs"] == [] and document["source"] == mirror.url  # the run was reported already


@pytest.mark.parametrize(
    ("extra", "code", "words"),
    [
        (["--country", "Iran"], 2, "--country"),
        (["--network", "Cogent"], 2, "--network"),
        (["--probe-id", "short"], 2, "--probe-id"),
        (["--mirror", "ftp://x"], 2, "--mirror"),
        (["--key", "/nonexistent.pub"], 1, "cannot read the key"),
    ],
)
def test_the_probe_command_refuses_bad_usage(
    sites: Sites, tmp_path: Path, extra: list[str], code: int, words: str
) -> None:
    base = {"--mirror": "http://127.0.0.1:9", "--key": f"{sites.key}.pub", "--country": "IR", "--network": "AS1",
            "--state": str(tmp_path / "state")}  # fmt: skip
    base[extra[0]] = extra[1]
    result = opos("probe", *[item for pair in base.items() for item in pair])
    assert result.code == code and words in result.err and "Traceback" not in result.err


def test_defaults_file(sites: Sites, tmp_path: Path) -> None:
    defaults = tmp_path / "defaults.yaml"
    defaults.write_text("web_connectivity: 6h\nsignal: PT30M\n")
    result = opos("probe", "--mirror", "http://127.0.0.1:9", "--key", f"{sites.key}.pub", "--country", "IR",
                  "--network", "AS1", "--state", tmp_path / "s", "--defaults", defaults, "--json")  # fmt: skip
    assert json.loads(result.out)["schedule"] == [
        {"test": "signal", "every": 1800, "instruction": None},
        {"test": "web_connectivity", "every": 21600, "instruction": None},
    ]
    defaults.write_text("web_connectivity: often\n")
    bad = opos("probe", "--mirror", "http://127.0.0.1:9", "--key", f"{sites.key}.pub", "--country", "IR",
               "--network", "AS1", "--state", tmp_path / "s", "--defaults", defaults)  # fmt: skip
    assert bad.code == 2 and "often" in bad.err


class MemoryFetcher(Fetcher):
    """A transport without sockets: each mirror URL is a site directory, or a hostile answer for a path.

    The limits still come from the Fetcher base class, which is what these tests are about.
    """

    def __init__(self, limits: Limits, sites: dict[str, Path], answers: dict[str, Exchange] | None = None) -> None:
        super().__init__(limits)
        self.sites, self.answers = sites, answers or {}
        self.asked: list[str] = []

    @contextlib.contextmanager
    def _open(self, method: str, mirror: Mirror, path: str, body: bytes | None, headers: dict[str, str],
              deadline: Deadline) -> Iterator[Exchange]:  # fmt: skip
        self.asked.append(f"{mirror.url}/{path}")
        if path in self.answers:
            yield self.answers[path]
            return
        if mirror.url not in self.sites:
            raise FetchFailed(f"{mirror.url} is unreachable")
        file = self.sites[mirror.url] / path
        if not file.is_file():
            yield Exchange(404, {}, iter(()))
            return
        data = file.read_bytes()
        yield Exchange(200, {"content-length": str(len(data))}, iter([data]))


def endless() -> Iterator[bytes]:
    while True:
        yield b"[" * 65536


def test_a_poll_through_an_in_memory_transport(sites: Sites, tmp_path: Path) -> None:
    fetcher = MemoryFetcher(FAST, {"http://b.invalid": sites.b})
    result = poll(config(sites, tmp_path, "http://down.invalid", "http://b.invalid"), fetcher=fetcher)
    check_plan(result.to_json())
    assert result.source == "http://b.invalid" and result.commit == sites.commits["b"]
    assert [run.instruction for run in result.runs] == ["ir-run"]
    assert [(r.mirror, r.reason) for r in result.rejected] in (
        [],
        [("http://down.invalid", "http://down.invalid is unreachable")],
    )


def test_the_fetcher_caps_an_endless_answer_whatever_the_transport(sites: Sites, tmp_path: Path) -> None:
    fetcher = MemoryFetcher(FAST, {"http://b.invalid": sites.b}, {"v1/head.json": Exchange(200, {}, endless())})
    result = poll(config(sites, tmp_path, "http://b.invalid"), fetcher=fetcher).to_json()
    assert result["source"] == "none"
    assert result["rejected"] == [
        {"mirror": "http://b.invalid", "reason": f"v1/head.json is larger than the limit of {FAST.head_bytes} bytes"}
    ]
    declared = Exchange(200, {"content-length": str(10**9)}, endless())
    fetcher = MemoryFetcher(FAST, {"http://b.invalid": sites.b}, {f"v1/feed/{sites.commits['b']}.json": declared})
    result = poll(config(sites, tmp_path / "other", "http://b.invalid"), fetcher=fetcher).to_json()
    assert "1000000000 bytes; the limit is" in result["rejected"][0]["reason"]


def test_each_run_carries_the_annotations_its_measurements_link_back_with(
    sites: Sites, servers: list[Server], tmp_path: Path
) -> None:
    mirror = serve(servers, sites.b)
    plan = check_plan(poll_json(config(sites, tmp_path, mirror.url)))
    assert [run["annotations"] for run in plan["runs"]] == [
        {"opos_instruction": "ir-run", "opos_revision": sites.commits["b"], "opos_sequence": "1"}
    ]


def test_the_probe_says_what_it_saw_for_people(
    sites: Sites, servers: list[Server], tmp_path: Path, ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    mirror = serve(servers, sites.b)
    common = ["--mirror", mirror.url, "--country", "IR", "--network", "AS197207", "--state", tmp_path / "state"]
    first = opos("probe", *common, "--key", f"{sites.key}.pub")
    assert first.code == 0 and "ir-run" in first.out.split("schedule:")[0]
    again = opos("probe", *common, "--key", f"{sites.key}.pub")
    assert "runs: none new (already run at their current revision: ir-run)" in again.out
    other = tmp_path / "other-key"
    assert opos("keygen", "--out", other).code == 0
    wrong = opos("probe", *common[:6], "--state", tmp_path / "fresh", "--key", f"{other}.pub")
    assert "no mirror gave an acceptable answer (see rejected)" in wrong.out
    signed_by = (
        opos("verify-feed", sites.b / "v1" / "head.json", "--key", f"{sites.key}.pub").err.split("by ")[1].strip()
    )
    assert f"the document is signed by {signed_by} (as its signatures say), not by a pinned key" in wrong.out


def test_upcoming_instructions_are_listed(
    sites: Sites, servers: list[Server], tmp_path: Path, keys: dict[str, SshKey]
) -> None:
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=3)).replace(microsecond=0)
    window = f"\n  start: {format_time(later)}\n  end: {format_time(later + dt.timedelta(days=2))}"
    sites.repo.write("ledger/instructions/soon-one.yaml", instruction("soon-one", window=window))
    sites.repo.commit("Soon", keys["alice"])
    site = tmp_path / "site-soon"
    assert opos("render", "--repo", sites.repo.path, "--key", sites.key, "--out", site).code == 0
    plan = check_plan(poll_json(config(sites, tmp_path, serve(servers, site).url)))
    soon = {"instruction": "soon-one", "kind": "run", "test": "web_connectivity", "starts": format_time(later)}
    assert soon in plan["upcoming"] and "soon-one" not in [run["instruction"] for run in plan["runs"]]
    assert [u["starts"] for u in plan["upcoming"]] == sorted(u["starts"] for u in plan["upcoming"])  # soonest first


def test_a_probe_skips_and_says_what_it_cannot_follow(sites: Sites, servers: list[Server], tmp_path: Path) -> None:
    """A probe without the telegram test: the schedule for it is skipped with why; the rest is followed."""
    mirror = serve(servers, sites.b)
    plan = check_plan(poll_json(config(sites, tmp_path, mirror.url, tests=frozenset({"web_connectivity"}))))
    assert [r["instruction"] for r in plan["runs"]] == ["ir-run"]
    assert plan["skipped"] == [{"instruction": "ir-telegram", "reason": "this probe does not have the test 'telegram'"}]
    assert {"test": "telegram", "every": 3600, "instruction": None} in plan["schedule"]
