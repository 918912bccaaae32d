"""The two-person rule: how many distinct staff must sign a change, as policy.yaml's `review` sets it. Pure.

    review:
      signers: 2                 # every change (default 1)
      rules:
        - countries: [IR, CN]    # an instruction whose target can take a probe in these
          signers: 3

A change to allowed_signers or to policy.yaml itself needs the largest count the policy names, so
that nobody lowers the bar with fewer signatures than it asks. The section is read on its own, so
that a mistake elsewhere in policy.yaml never weakens it; a section that is not valid still asks
for the largest count written in it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from opos.errors import Problem, YamlProblem
from opos.instructions import resources
from opos.instructions.yamlfile import LoadedYaml, load
from opos.model import Target

MAX_SIGNERS = 20  # the schema's bound: no staff is that large, and it keeps a typo from locking the ledger


@dataclass(frozen=True)
class CountryRule:
    countries: frozenset[str]
    signers: int


@dataclass(frozen=True)
class Review:
    signers: int = 1
    rules: tuple[CountryRule, ...] = ()

    @property
    def largest(self) -> int:
        return max([self.signers, *(rule.signers for rule in self.rules)])

    def for_target(self, target: Target) -> tuple[int, str]:
        """The signers a change of an instruction with this target needs, and which countries ask it."""
        needed, why = self.signers, ""
        for rule in self.rules:
            reached = sorted(c for c in rule.countries if target.takes(c, None))
            if rule.signers > needed and reached:
                needed, why = rule.signers, f"its target can take probes in {', '.join(reached)}"
        return needed, why

    def to_json(self) -> dict[str, Any]:
        rules = [{"countries": sorted(r.countries), "signers": r.signers} for r in self.rules]
        return {"signers": self.signers, "rules": rules}


def from_loaded(loaded: LoadedYaml, path: str) -> tuple[Review, list[Problem]]:
    """The `review` section of a loaded policy.yaml (schema-checked by the caller) and its problems."""
    value = loaded.value.get("review") if isinstance(loaded.value, dict) else None
    if not isinstance(value, dict):
        return Review(), []
    problems: list[Problem] = []
    signers = value.get("signers", 1)
    rules = []
    for index, rule in enumerate(value.get("rules", [])):
        countries = [str(c).upper() for c in rule["countries"]]
        for place, code in enumerate(countries):
            if code not in resources.countries():
                line = loaded.line_of(("review", "rules", index, "countries", place))
                field = f"review.rules[{index}].countries[{place}]"
                problems.append(Problem(path, line, field, resources.not_a_country(code)))
        if rule["signers"] <= signers:
            line = loaded.line_of(("review", "rules", index, "signers"))
            message = (f"{rule['signers']} is not more than review.signers ({signers}), so this rule changes "
                       "nothing: raise it or remove the rule")  # fmt: skip
            problems.append(Problem(path, line, f"review.rules[{index}].signers", message))
        rules.append(CountryRule(frozenset(countries), rule["signers"]))
    return Review(signers, tuple(rules)), problems


@functools.lru_cache(maxsize=64)
def review_of(policy: bytes | None) -> Review:
    """The review in force under a policy.yaml (its first parent's, for a step of the branch).

    Where the file or the section is not valid (`opos check` says why), the largest count written
    in the section applies, with no country rules: a broken policy never asks for fewer signers.
    """
    if policy is None:
        return Review()
    try:
        loaded = load(policy, "policy.yaml", 16 * 1024)
    except YamlProblem:
        return Review()
    section = loaded.value.get("review") if isinstance(loaded.value, dict) else None
    if section is None:
        return Review()
    if resources.is_valid("policy", {"review": section}):
        return from_loaded(loaded, "policy.yaml")[0]
    counts = [n for n in _integers(section) if 1 <= n <= MAX_SIGNERS]
    return Review(max(counts, default=1))


def _integers(node: Any) -> Iterable[int]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, bool):
            continue
        if isinstance(item, int):
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
