"""Instruction files: schema, meaning and policy, every rule with its line and field."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import instruction
from opos.instructions.rules import (
    LedgerFiles,
    check_instruction,
    check_ledger,
    format_duration,
    load_policy,
    parse_duration,
)
from opos.model import Policy

PATH = "ledger/instructions/x-one.yaml"


def problems(text: str, policy: Policy | None = None) -> list[str]:
    found, listed = check_instruction(text.encode(), PATH, policy or Policy())
    assert (found is None) == bool(listed)
    return [str(p) for p in listed]


def only(text: str, policy: Policy | None = None) -> str:
    listed = problems(text, policy)
    assert len(listed) == 1, listed
    return listed[0]


def test_a_valid_run_is_normalised() -> None:
    text = instruction(
        "x-one",
        target="\n  countries: [ir, NO]\n  networks: [as197207, 12880]\n  max_probes: 5\n  max_probes_per: network",
        window="\n  start: 2026-12-01T02:00:00+02:00\n  end: 2026-12-08",
    )
    found, listed = check_instruction(text.encode(), PATH, Policy())
    assert listed == [] and found is not None
    assert found.to_json() == {
        "id": "x-one",
        "kind": "run",
        "title": "Measure x-one",
        "reason": "Reports of blocking.",
        "test": "web_connectivity",
        "inputs": ["https://example.org/"],
        "every": None,
        "target": {
            "countries": ["IR", "NO"],
            "networks": ["AS197207", "AS12880"],
            "platforms": [],
            "max_probes": 5,
            "max_probes_per": "network",
            "sample": None,
        },
        "window": {"start": "2026-12-01T00:00:00Z", "end": "2026-12-08T00:00:00Z"},
    }


def test_a_valid_schedule() -> None:
    text = instruction("x-one", kind="schedule", test="telegram", inputs=None, every="PT6H")
    found, listed = check_instruction(text.encode(), PATH, Policy())
    assert listed == [] and found is not None and found.every == 6 * 3600


def test_id_must_match_the_file_name() -> None:
    assert only(instruction("other-one")) == (
        f"{PATH}:1: id: 'other-one' must equal the file name without .yaml ('x-one')"
    )


def test_unknown_test_gets_a_suggestion() -> None:
    assert "did you mean 'web_connectivity'" in only(instruction("x-one", test="web_conectivity"))


def test_unknown_field_names_its_line() -> None:
    text = instruction("x-one") + "priority: high\n"
    assert only(text).startswith(f"{PATH}:14: priority: unknown field 'priority'")


def test_missing_required_field() -> None:
    assert "reason is required" in only(instruction("x-one", reason=None))


@pytest.mark.parametrize(
    ("test", "inputs", "message"),
    [
        ("web_connectivity", None, "needs inputs"),
        ("web_connectivity", "\n  - ftp://example.org/", "must be a URL with scheme http:// or https://"),
        ("web_connectivity", "\n  - https://exa mple.org/", "white space"),
        ("web_connectivity", "\n  - https://a.org/\n  - https://a.org/", "listed twice"),
        ("dnsping", "\n  - not_a_domain", "not a domain name"),
        ("tcpping", "\n  - 1.2.3.4", "needs a port"),
        ("tcpping", "\n  - 2001:db8::1:443", "[address]:port"),
        ("stunreachability", "\n  - https://stun.example.org", "stun://"),
        ("telegram", "\n  - https://t.me/", "takes no inputs"),
    ],
)
def test_inputs_are_checked_by_kind(test: str, inputs: str | None, message: str) -> None:
    assert message in only(instruction("x-one", test=test, inputs=inputs))


@pytest.mark.parametrize(
    ("test", "inputs"),
    [
        ("tcpping", "\n  - 1.2.3.4:443\n  - '[2001:db8::1]:443'"),
        ("dnscheck", "\n  - https://dns.google/dns-query\n  - dot://1.1.1.1:853/\n  - udp://8.8.8.8:53"),
        ("stunreachability", "\n  - stun://stun.l.google.com:19302"),
        ("dnsping", "\n  - example.org"),
        ("echcheck", None),
        ("signal", None),
    ],
)
def test_valid_inputs(test: str, inputs: str | None) -> None:
    assert problems(instruction("x-one", test=test, inputs=inputs)) == []


def test_schedule_rules() -> None:
    assert "needs `every`" in only(instruction("x-one", kind="schedule", test="telegram", inputs=None))
    assert "takes no inputs" in only(instruction("x-one", kind="schedule", every="6h"))
    assert "`every` belongs to a schedule" in only(instruction("x-one", every="6h"))
    assert "shorter than the policy's min_every (15m)" in only(
        instruction("x-one", kind="schedule", test="telegram", inputs=None, every="5m")
    )
    assert "duration" in only(instruction("x-one", kind="schedule", test="telegram", inputs=None, every="6 hours"))


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("\n  countries: [XX]", "not an ISO 3166-1"),
        ("\n  countries: ['*', IR]", "list it alone"),
        ("\n  countries: []", "countries"),
        ("\n  countries: [IR, ir]", "listed twice"),
        ("\n  countries: [IR]\n  networks: [ASX]", "AS1234"),
        ("\n  countries: [IR]\n  max_probes_per: country", "only means something with max_probes"),
        ("\n  countries: [IR]\n  max_probes: 0", "max_probes"),
        ("\n  countries: [IR]\n  sample: 1.5", "sample"),
        ("\n  countries: [IR]\n  platforms: [symbian]", "platforms"),
        ("\n  networks: [AS1]", "countries is required"),
    ],
)
def test_target_rules(target: str, message: str) -> None:
    assert message in only(instruction("x-one", target=target))


def test_everywhere_is_explicit() -> None:
    assert problems(instruction("x-one", target="\n  countries: ['*']")) == []


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("\n  start: 2026-12-01 10:00:00\n  end: 2026-12-08", "time zone"),
        ("\n  start: 2026-12-08\n  end: 2026-12-01", "end after it starts"),
        ("\n  start: 2026-01-01\n  end: 2026-12-01", "max_window (90d)"),
        ("\n  start: tomorrow\n  end: 2026-12-01", "timestamp"),
    ],
)
def test_window_rules(window: str, message: str) -> None:
    assert message in only(instruction("x-one", window=window))


def test_every_problem_is_reported_at_once() -> None:
    text = instruction("x-one", kind="rnu", test="nope", target="\n  countries: [XX]", window="\n  start: 1")
    assert len(problems(text)) >= 4


def test_policy_limits() -> None:
    policy, listed = load_policy(b"min_every: 1h\nmax_window: 7d\nmax_inputs: 1\ntests: [telegram]\n", "policy.yaml")
    assert listed == [] and policy.min_every == 3600 and policy.max_window == 7 * 86400
    text = instruction("x-one", inputs="\n  - https://a.org/\n  - https://b.org/")
    found = problems(text, policy)
    assert any("does not allow 'web_connectivity'" in p for p in found)
    assert any("2 inputs; the policy allows 1" in p for p in found)


def test_policy_problems_are_located() -> None:
    _, listed = load_policy(b"min_every: 15m\ntests: [telegam]\nmax_inputs: many\n", "ledger/policy.yaml")
    assert [p.line for p in listed] == [3]
    _, listed = load_policy(b"tests: [telegam]\n", "ledger/policy.yaml")
    assert str(listed[0]).startswith("ledger/policy.yaml:1: tests[0]: 'telegam' is not a test") and "telegram" in str(
        listed[0]
    )


def test_ledger_level_checks() -> None:
    files = LedgerFiles(
        "ledger/",
        {
            "a-one.yaml": instruction("a-one").encode(),
            "notes.txt": b"",
            "b-one.yml": b"",
            ".gitkeep": b"",
        },
        policy=None,
        not_files=("sub",),
    )
    result = check_ledger(files)
    messages = [str(p) for p in result.problems]
    assert list(result.instructions) == ["a-one"]
    assert (
        "ledger/instructions/b-one.yml: instructions/ holds only <id>.yaml files: rename it to b-one.yaml" in messages
    )
    assert any(m.startswith("ledger/instructions/notes.txt") for m in messages)
    assert any(m.startswith("ledger/instructions/sub") for m in messages)
    assert len(messages) == 3


@given(st.integers(min_value=1, max_value=10**6))
def test_durations_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30m", 1800), ("6h", 21600), ("1d", 86400), ("PT6H", 21600), ("P1DT1M", 86460), ("P2W", 1209600)],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "P", "PT", "6", "h", "P1DT", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
