"""The scenarios of transport, planning and state: hostile answers, what runs where, a damaged state."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from opos.conformance.mirror import TRANSPORT_ATTACKS
from opos.conformance.scenarios import FEED, Mirror, Step, ok, one, scenario
from opos.conformance.world import World, commit_id, instruction
from opos.model import format_time

# hostile transport: each bounded by the client's own deadline


DEADLINE_SECONDS = 35.0  # a client's one deadline per exchange is at most 30 s (OPOS's probe: 30; its kit client: 5)


def hostile(how: str) -> Callable[[World], tuple[dict[str, Any], list[Step]]]:
    def made(w: World) -> tuple[dict[str, Any], list[Step]]:
        hostile = Mirror(behaviour={"/v1/head.json": how})
        # the client picks its mirrors in an order of its own, so the second poll has the hostile mirror alone:
        # that exchange happens whatever the order, and a client without the defence cannot pass by luck
        return FEED, [Step((hostile, Mirror(one(w))), ok(1), within=DEADLINE_SECONDS),
                      Step((hostile,), ok(1, source="cache"), within=DEADLINE_SECONDS)]  # fmt: skip

    return made


for _how in TRANSPORT_ATTACKS:
    scenario(
        f"transport/{_how}",
        f"a mirror answering with {_how} is cut off in time; a good mirror or the cache is followed",
    )(hostile(_how))


@scenario("transport/deep-json", "a 32,000-deep JSON head neither crashes nor stalls the client")
def _deep(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror({"/v1/head.json": b"[" * 32_000 + b"]" * 32_000}), Mirror(one(w))), ok(1))]


# planning


@scenario("planning/window-before", "an instruction whose window has not begun is not run")
def _before(w: World) -> tuple[dict[str, Any], list[Step]]:
    starts = w.now + dt.timedelta(days=7)
    window = {"start": format_time(starts), "end": format_time(starts + dt.timedelta(days=10))}
    later = instruction("ir-later", w.now, window=window)
    return FEED, [Step((Mirror(w.site(1, [later])),), ok(1, runs=[]))]


@scenario("planning/window-after", "an instruction whose window has ended is not run")
def _after(w: World) -> tuple[dict[str, Any], list[Step]]:
    later = dt.timedelta(days=8)
    return FEED, [Step((Mirror(one(w, issued=w.now + later)),), ok(1, runs=[]), later=later)]


@scenario("planning/other-country", "an instruction for another country is not run")
def _country(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w)),), ok(1, runs=[]), probe={"--country": "DE"})]


@scenario("planning/every-country", "countries [*] reaches every probe")
def _everywhere(w: World) -> tuple[dict[str, Any], list[Step]]:
    every = instruction("all-one", w.now, countries=["*"])
    return FEED, [Step((Mirror(w.site(1, [every])),), ok(1, runs=["all-one"]), probe={"--country": "DE"})]


@scenario("planning/networks", "an instruction for other networks is not run")
def _networks(w: World) -> tuple[dict[str, Any], list[Step]]:
    netted = instruction("ir-net", w.now, networks=["AS12880"])
    return FEED, [Step((Mirror(w.site(1, [netted])),), ok(1, runs=[]))]


@scenario("planning/unknown-test", "a test the client does not have is skipped with a reason")
def _unknown_test(w: World) -> tuple[dict[str, Any], list[Step]]:
    future = instruction("ir-future", w.now, test="a_test_from_the_future")
    return FEED, [Step((Mirror(w.site(1, [future])),), ok(1, runs=[], skipped=["ir-future"]))]


@scenario("planning/platforms", "an instruction for other platforms is not run; for this one, it is")
def _platforms(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = w.site(1, [instruction("ir-android", w.now, platforms=["android"])])
    return FEED, [Step((Mirror(site),), ok(1, runs=[]), probe={"--platform": "linux"}),
                  Step((Mirror(site),), ok(1, runs=["ir-android"]), probe={"--platform": "android"})]  # fmt: skip


@scenario("planning/sample-stable", "a sampled instruction is decided by the probe id, the same at every poll")
def _sample(w: World) -> tuple[dict[str, Any], list[Step]]:
    from opos.instructions import targeting
    from opos.model import Instruction

    sampled = instruction("ir-half", w.now, sample=0.5)
    probe_ids = [f"conformance-probe-{n:04}" for n in range(50)]
    chosen = next(p for p in probe_ids if targeting.in_sample(Instruction.from_json(sampled), p))
    left_out = next(p for p in probe_ids if not targeting.in_sample(Instruction.from_json(sampled), p))
    site = w.site(1, [sampled])
    return FEED, [Step((Mirror(site),), ok(1, runs=["ir-half"]), probe={"--probe-id": chosen}),
                  Step((Mirror(site),), ok(1, runs=[]), probe={"--probe-id": left_out})]  # fmt: skip


@scenario("planning/unknown-fields", "fields a later feed version adds are ignored")
def _unknown_fields(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(w.site(1, [{**instruction("ir-one", w.now), "from_the_future": {"x": 1}}])),),
                       ok(1, runs=["ir-one"]))]  # fmt: skip


@scenario("planning/unknown-kind", "an instruction of a kind the client does not know is skipped, the rest followed")
def _unknown_kind(w: World) -> tuple[dict[str, Any], list[Step]]:
    future = instruction("ir-measure", w.now, kind="measure")
    return FEED, [Step((Mirror(w.site(1, [future, instruction("ir-one", w.now)])),),
                       ok(1, runs=["ir-one"], skipped=["ir-measure"]))]  # fmt: skip


# state


@scenario("state/corrupted", "a state directory of garbage never stops the next plan")
def _corrupted(w: World) -> tuple[dict[str, Any], list[Step]]:
    site = one(w)
    return FEED, [Step((Mirror(site),), ok(1)), Step((Mirror(site),), ok(1), damage=True)]


@scenario("state/no-going-back-after-restart", "a sequence once accepted is never gone back on, across polls")
def _no_going_back(w: World) -> tuple[dict[str, Any], list[Step]]:
    three = w.site(3, [instruction("ir-one", w.now)])
    return FEED, [Step((Mirror(three),), ok(3)), Step((Mirror(one(w)),), ok(3, source="cache")),
                  Step((Mirror(w.site(2, [instruction("ir-one", w.now)])),), ok(3, source="cache"))]  # fmt: skip


@scenario("state/unwritable", "a state directory that cannot be written never stops the plan")
def _unwritable(w: World) -> tuple[dict[str, Any], list[Step]]:
    return FEED, [Step((Mirror(one(w)),), ok(1)),
                  Step((Mirror(w.site(2, [instruction("ir-one", w.now)])),), ok(2, rejected=["state", "written"]),
                       unwritable=True)]  # fmt: skip


@scenario("state/crash-mid-poll", "a client killed in the middle of a poll never goes back to an older sequence")
def _crash(w: World) -> tuple[dict[str, Any], list[Step]]:
    three, four = w.site(3, [instruction("ir-one", w.now)]), w.site(4, [instruction("ir-one", w.now)])
    slow_four = Mirror(four, behaviour={f"/v1/feed/{commit_id(4)}.json": "trickle-body"})
    return FEED, [Step((Mirror(three),), ok(3)),
                  Step((slow_four,), {}, killed_after=2.0),  # killed while the new feed trickles in
                  Step((Mirror(w.site(2, [instruction("ir-one", w.now)])),), ok(3, source="cache"))]  # fmt: skip


CAPPED = {"max_probes": 2}


def _capped(answer: tuple[int, bytes, dict[str, str]] | None, outcome: str) -> Callable[[World], Any]:
    def made(w: World) -> tuple[dict[str, Any], list[Step]]:
        site = w.site(1, [instruction("ir-capped", w.now, max_probes=2)])
        runs = ["ir-capped"] if outcome == "granted" else []
        return FEED, [Step((Mirror(site),), ok(1, runs=runs, claims={"ir-capped": outcome}), claims=answer)]

    return made


scenario("planning/claim-granted", "a capped instruction runs only with a granted claim")(
    _capped((200, b'{"granted": true, "instruction": "ir-capped", "limit": 2, "used": 1}', {}), "granted")
)
scenario("planning/claim-refused", "a refused claim is not run")(
    _capped((200, b'{"granted": false, "instruction": "ir-capped", "limit": 2, "used": 2, "reason": "full"}', {}),
            "refused"))  # fmt: skip
scenario("planning/claims-unreachable", "without a claims answer, a capped instruction is not run")(
    _capped((503, b'{"error": "Service Unavailable", "detail": "down"}', {}), "unavailable")
)
