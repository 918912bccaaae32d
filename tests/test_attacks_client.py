"""The probe client under attack: hostile mirrors and claims services, each test named after the attack.

Real HTTP servers on 127.0.0.1 where the transport is the point; an in-memory transport where
only the bytes matter (arbitrary answers, property-tested). Every test stops by itself.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_client import FAST, WINDOW, MemoryFetcher, Sites, check_plan, config, serve, servers, sites  # noqa: F401 (fixtures)

from conftest import SshKey, instruction, opos
from opos.probe import Mirror, poll
from opos.transport import Exchange
from servers import Mirror as MirrorServer

NESTED = b"[" * 65_000


class InOrder(random.Random):
    """Mirrors and claims services tried in the order given, so a test knows which answers first."""

    def shuffle(self, x: Any) -> None:  # type: ignore[override]
        pass


def capped_site(sites: Sites, alice: SshKey, tmp_path: Path) -> tuple[Path, str]:
    """A site whose feed holds a capped run for IR / AS197207, so the probe asks for a claim."""
    sites.repo.write(
        "ledger/instructions/ir-capped.yaml",
        instruction("ir-capped", window=WINDOW, target="\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 2"),
    )
    commit = sites.repo.commit("A capped run", alice)
    site = tmp_path / "site-capped"
    assert opos("render", "--repo", sites.repo.path, "--key", sites.key, "--out", site).code == 0
    return site, commit


def test_a_deeply_nested_head_does_not_crash_the_probe(sites: Sites, servers: list[Any], tmp_path: Path) -> None:
    hostile = MirrorServer({"/v1/head.json": NESTED})
    servers.append(hostile)
    honest = serve(servers, sites.b)
    result = opos("probe", "--mirror", hostile.url, "--mirror", honest.url, "--key", f"{sites.key}.pub",
                  "--country", "IR", "--network", "AS197207", "--state", tmp_path / "state", "--json")  # fmt: skip
    assert result.code == 0, result.err
    plan = check_plan(json.loads(result.out))
    assert plan["source"] == honest.url and plan["commit"] == sites.commits["b"]
    nested = {"mirror": hostile.url, "reason": "the envelope is nested too deeply to be an OPOS document"}
    assert all(item == nested for item in plan["rejected"])  # the hostile mirror, when it was asked first
    alone = opos("probe", "--mirror", hostile.url, "--key", f"{sites.key}.pub", "--country", "IR",
                 "--network", "AS197207", "--state", tmp_path / "alone", "--json")  # fmt: skip
    assert alone.code == 0 and "nested too deeply" in json.loads(alone.out)["rejected"][0]["reason"]


def test_a_deeply_nested_claims_answer_does_not_crash_the_probe(
    sites: Sites, servers: list[Any], keys: dict[str, SshKey], tmp_path: Path
) -> None:
    site, _ = capped_site(sites, keys["alice"], tmp_path)
    mirror = serve(servers, site)
    claims = MirrorServer()
    claims.answers["/v1/claims"] = NESTED
    servers.append(claims)
    plan = poll(config(sites, tmp_path, mirror.url, claims=(Mirror(claims.url),)))
    capped = [run for run in plan.runs if run.instruction == "ir-capped"]
    assert [run.claim for run in capped] == ["unavailable"]
    assert [(r.mirror, r.reason.split(" (")[0]) for r in plan.rejected] == [
        (claims.url, "claims: the answer could not be handled")
    ]


def test_claims_services_are_tried_in_turn_and_may_be_fronted(
    sites: Sites, servers: list[Any], keys: dict[str, SshKey], tmp_path: Path
) -> None:
    site, _ = capped_site(sites, keys["alice"], tmp_path)
    mirror = serve(servers, site)
    fronted = MirrorServer(host="claims.hidden.example")
    fronted.answers["/v1/claims"] = b'{"granted": true}'
    servers.append(fronted)
    down = "http://127.0.0.1:9"
    claims = (Mirror.parse(down), Mirror.parse(f"{fronted.url}#host=claims.hidden.example"))
    plan = poll(config(sites, tmp_path, mirror.url, claims=claims), rng=InOrder())
    assert [run.claim for run in plan.runs if run.instruction == "ir-capped"] == ["granted"]
    assert [r.mirror for r in plan.rejected] == [down] and "claims: connection refused" in plan.rejected[0].reason
    assert fronted.requests == ["/v1/claims"]


def test_plain_http_mirrors_and_claims_get_a_warning(sites: Sites, tmp_path: Path) -> None:
    result = opos("probe", "--mirror", "http://mirror.invalid", "--claims", "http://claims.invalid",
                  "--mirror", "http://127.0.0.1:9", "--key", f"{sites.key}.pub", "--country", "IR",
                  "--network", "AS197207", "--state", tmp_path / "state", "--timeout", "1")  # fmt: skip
    assert result.code == 0
    warnings = [line for line in result.err.splitlines() if "plain http" in line]
    assert len(warnings) == 2 and "--mirror http://mirror.invalid" in warnings[0]
    assert "--claims http://claims.invalid" in warnings[1]  # loopback (the tests' own servers) is not warned of


def test_a_mirror_trickling_its_status_line_is_cut_off_at_the_deadline(
    sites: Sites, servers: list[Any], tmp_path: Path
) -> None:
    slow = serve(servers, sites.b)
    slow.behaviour["/v1/head.json"] = "trickle-status"
    plan = check_plan(poll(config(sites, tmp_path, slow.url)).to_json())
    assert plan["source"] == "none"
    assert plan["rejected"] == [{"mirror": slow.url, "reason": "v1/head.json took longer than 2 s"}]


def test_a_mirror_trickling_its_headers_is_cut_off_at_the_deadline(
    sites: Sites, servers: list[Any], tmp_path: Path
) -> None:
    slow = serve(servers, sites.b)
    slow.behaviour["/v1/head.json"] = "trickle-headers"
    plan = check_plan(poll(config(sites, tmp_path, slow.url)).to_json())
    assert plan["rejected"] == [{"mirror": slow.url, "reason": "v1/head.json took longer than 2 s"}]


def test_an_unsolicited_304_does_not_confirm_the_cache(sites: Sites, servers: list[Any], tmp_path: Path) -> None:
    honest = serve(servers, sites.b)
    assert poll(config(sites, tmp_path, honest.url)).source == honest.url  # the cache now holds b
    liar = serve(servers, sites.b)
    liar.behaviour["/v1/head.json"] = "unsolicited-304"  # no If-None-Match is sent to a mirror never asked
    plan = poll(config(sites, tmp_path, liar.url))
    assert plan.source == "cache"
    assert [(r.mirror, r.reason) for r in plan.rejected] == [
        (liar.url, "HTTP 304 for v1/head.json, but nothing was asked for with If-None-Match")
    ]


def test_a_mirror_with_a_good_head_and_a_tampered_feed_is_named(
    sites: Sites, servers: list[Any], tmp_path: Path
) -> None:
    tampered = serve(servers, sites.b)
    feed_path = f"/v1/feed/{sites.commits['b']}.json"
    tampered.files[feed_path] = tampered.files[feed_path].replace(b'"payload":"', b'"payload":"e30', 1)
    honest = serve(servers, sites.b)
    plan = poll(config(sites, tmp_path, tampered.url, honest.url), rng=InOrder())
    assert plan.source == honest.url and plan.commit == sites.commits["b"]
    assert [r.mirror for r in plan.rejected] == [tampered.url]
    assert plan.rejected[0].reason.startswith("feed: the feed does not match the head's feed_sha256")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.binary(max_size=2048), feed=st.binary(max_size=2048), claims=st.binary(max_size=512))
def test_arbitrary_bytes_from_mirrors_and_claims_never_make_the_poll_raise(
    sites: Sites, tmp_path: Path, head: bytes, feed: bytes, claims: bytes
) -> None:
    commit = sites.commits["b"]
    real_head = (sites.b / "v1" / "head.json").read_bytes()
    for answers in (
        {"v1/head.json": head},  # hostile bytes where the head should be
        {"v1/head.json": real_head, f"v1/feed/{commit}.json": feed},  # a good head, hostile feed bytes
        {"v1/claims": claims},  # hostile bytes where a claims answer should be
    ):
        exchanges = {path: Exchange(200, {}, iter([data])) for path, data in answers.items()}
        fetcher = MemoryFetcher(FAST, {"http://m.invalid": sites.b}, exchanges)
        plan = poll(config(sites, tmp_path / "fuzz", "http://m.invalid", claims=(Mirror("http://m.invalid"),)),
                    fetcher=fetcher)  # fmt: skip
        check_plan(plan.to_json())
