"""Loaded YAML in, valid Instructions or located problems out: JSON Schema first, then meaning, then policy.

Nothing here opens a file: the adapters read the ledger (working tree or commit) into
`LedgerFiles` and this module judges it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opos.errors import BlobTooLarge, Problem, YamlProblem
from opos.instructions import judging, resources, review
from opos.instructions.inputs import input_error
from opos.instructions.yamlfile import LoadedYaml, dotted, load
from opos.limits import CHECK_MEMO_SIZE, MAX_INSTRUCTION_BYTES, MAX_POLICY_BYTES
from opos.lru import LRU
from opos.model import (
    Instruction,
    Policy,
    Target,
    Window,
    format_duration,
    normalise_network,
    parse_duration,
    parse_timestamp,
)
from opos.text import unsafe_characters

if TYPE_CHECKING:
    import jsonschema


@dataclass(frozen=True)
class LedgerFiles:
    """What the ledger directory holds, as bytes, read from a working tree or a commit."""

    root: str  # the ledger directory as shown in messages: "ledger/" or ""
    instructions: Mapping[str, bytes]  # name under instructions/ -> contents
    policy: bytes | None = None
    not_files: tuple[str, ...] = ()  # names under instructions/ that are folders or links
    links: tuple[str, ...] = ()  # symbolic links anywhere in the ledger directory (paths inside it)
    oversized: Mapping[str, int] = field(default_factory=dict)  # files too large to read: path -> size
    ids: Mapping[str, str] = field(default_factory=dict)  # name under instructions/ -> git blob id, where known


@dataclass
class CheckResult:
    instructions: dict[str, Instruction] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def schema_problems(loaded: LoadedYaml, schema: str, path: str) -> list[Problem]:
    """Every schema error, each with the line of the field it is about and a readable message."""
    if resources.is_valid(schema, loaded.value):
        return []
    problems = []
    errors = sorted(resources.validator(schema).iter_errors(loaded.value), key=lambda e: list(e.path))
    for error in errors:
        where = list(error.absolute_path)
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
            where.append(
                min((k for k in error.instance if k not in known), key=lambda k: loaded.line_of([*where, k]) or 0)
            )
        problems.append(Problem(path, loaded.line_of(where), dotted(tuple(where)), _schema_message(error)))
    return problems


def _schema_message(error: jsonschema.ValidationError) -> str:
    schema = error.schema if isinstance(error.schema, dict) else {}
    validator = error.validator
    if validator == "anyOf":
        options = error.validator_value if isinstance(error.validator_value, list) else []
        described = [sub["description"] for sub in options if "description" in sub]
        if described:
            return f"{error.instance!r} is not valid: expected {described[0]}"
    if validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(known)) if isinstance(error.instance, dict) else []
        hints = [f"{name!r}" + _suggest(name, known) for name in extra]
        return f"unknown field {', '.join(hints)}; the fields are: {', '.join(known)}"
    if validator == "required":
        return f"{error.message.split(' is a required')[0].strip(chr(39))} is required"
    if validator in ("enum", "const"):
        choices = schema.get("enum") or [schema.get("const")]
        return f"{error.instance!r} is not one of {', '.join(map(str, choices))}" + _suggest(
            str(error.instance), [str(c) for c in choices]
        )
    if validator == "pattern" and "description" in schema:
        return f"{error.instance!r} is not valid: expected {schema['description']}"
    if validator == "type":
        return f"{error.instance!r} is a {type(error.instance).__name__}; expected {schema.get('type')}"
    return error.message


def _suggest(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load_policy(data: bytes | None, path: str) -> tuple[Policy, list[Problem]]:
    """The ledger's policy.yaml (defaults when there is none) and its problems."""
    if data is None:
        return Policy(), []
    try:
        loaded = load(data, path, MAX_POLICY_BYTES)
    except YamlProblem as err:
        return Policy(), [err.problem]
    if loaded.value is None:
        return Policy(), []
    problems = schema_problems(loaded, "policy", path)
    if problems:
        return Policy(), problems
    value: dict[str, Any] = loaded.value
    fields: dict[str, Any] = {}
    for name in ("min_every", "max_window"):
        if name in value:
            fields[name] = parse_duration(value[name])
    for name in ("max_inputs", "oonirun"):
        if name in value:
            fields[name] = value[name]
    if "tests" in value:
        known = resources.nettests()
        for index, test in enumerate(value["tests"]):
            if test not in known:
                line = loaded.line_of(("tests", index))
                message = f"{test!r} is not a test that probes have" + _suggest(test, known)
                problems.append(Problem(path, line, f"tests[{index}]", message))
        fields["tests"] = frozenset(value["tests"])
    problems.extend(review.from_loaded(loaded, path)[1])
    return Policy(**fields), problems


@functools.lru_cache(maxsize=64)
def policy_of(data: bytes | None) -> Policy:
    """The policy a policy.yaml sets (defaults where it is invalid: `check_ledger` reports why)."""
    return load_policy(data, "policy.yaml")[0]


def check_instruction(data: bytes, path: str, policy: Policy) -> tuple[Instruction | None, list[Problem]]:
    """One instruction file: the Instruction, or None and every problem found."""
    try:
        loaded = load(data, path, MAX_INSTRUCTION_BYTES)
    except YamlProblem as err:
        return None, [err.problem]
    if not isinstance(loaded.value, dict):
        return None, [Problem(path, 1, "", "an instruction is a mapping of fields (id:, kind:, …)")]
    problems = schema_problems(loaded, "instruction", path)
    broken = {str(p.field).split(".")[0].split("[")[0] for p in problems}
    broken |= {name for name in ("id", "kind", "test", "target", "window") if name not in loaded.value}
    instruction, meaning_problems = _Meaning(loaded, path, policy, broken).check()
    problems.extend(meaning_problems)
    problems.sort(key=lambda p: p.line or 0)
    return (instruction if not problems else None), problems


class _Meaning:
    """The rules a schema cannot say: tests and their inputs, windows, the policy's limits."""

    def __init__(self, loaded: LoadedYaml, path: str, policy: Policy, broken: set[str]) -> None:
        self.broken = broken  # fields the schema already refused: judging them again would only add noise
        self.value: dict[str, Any] = loaded.value
        self.loaded = loaded
        self.path = path
        self.policy = policy
        self.problems: list[Problem] = []

    def problem(self, where: tuple[str | int, ...], message: str) -> None:
        self.problems.append(Problem(self.path, self.loaded.line_of(where), dotted(where), message))

    def usable(self, *names: str) -> bool:
        return not self.broken.intersection(names)

    def check(self) -> tuple[Instruction | None, list[Problem]]:
        value = self.value
        stem = self.path.rsplit("/", 1)[-1].removesuffix(".yaml")
        if self.usable("id") and value["id"] != stem:
            self.problem(("id",), f"{value['id']!r} must equal the file name without .yaml ({stem!r})")
        kind, test = value.get("kind"), value.get("test")
        nettest = self.check_test(str(test)) if self.usable("test") else None
        inputs = tuple(value.get("inputs") or ()) if self.usable("inputs") else ()
        if self.usable("kind", "test", "inputs"):
            self.check_inputs(kind, test, nettest, inputs)
        every = self.check_every(kind) if self.usable("kind", "every") else None
        target = self.check_target(value["target"]) if self.usable("target") else None
        window = self.check_window(value["window"]) if self.usable("window") else None
        self.check_text()
        if self.problems or self.broken or target is None or window is None:
            return None, self.problems
        title = value["title"].strip()
        instruction = Instruction(
            value["id"], str(kind), title, value["reason"], str(test), inputs, every, target, window
        )
        return instruction, []

    def check_text(self) -> None:
        """Titles and reasons are shown to the public: no control, bidirectional or invisible characters."""
        for name, newlines in (("title", False), ("reason", True)):
            text = self.value.get(name)
            if not isinstance(text, str) or not self.usable(name):
                continue
            found = unsafe_characters(text, allow_newlines=newlines)
            if found:
                what = ", ".join(found)
                self.problem(
                    (name,),
                    f"has {what}: control, bidirectional or invisible characters can make the text read "
                    "differently from what was signed; remove them",
                )

    def check_test(self, test: str) -> dict[str, Any] | None:
        known = resources.nettests()
        if test not in known:
            self.problem(("test",), f"{test!r} is not a test that probes have" + _suggest(test, known))
            return None
        if self.policy.tests is not None and test not in self.policy.tests:
            allowed = ", ".join(sorted(self.policy.tests))
            self.problem(("test",), f"the ledger's policy.yaml does not allow {test!r}; it allows: {allowed}")
        return known[test]

    def check_inputs(self, kind: Any, test: Any, nettest: dict[str, Any] | None, inputs: tuple[str, ...]) -> None:
        if kind == "schedule":
            if inputs:
                self.problem(("inputs",), "a schedule changes how often a test runs: it takes no inputs")
            return
        if nettest is None:
            return
        if nettest["inputs"] == "none":
            if inputs:
                self.problem(("inputs",), f"{test} takes no inputs: remove them")
            return
        if nettest["inputs"] == "required" and not inputs:
            where = ("inputs",) if "inputs" in self.value else ("test",)
            self.problem(where, f"a run of {test} needs inputs ({nettest['input']}s): list at least one")
        if len(inputs) > self.policy.max_inputs:
            self.problem(("inputs",), f"{len(inputs)} inputs; the policy allows {self.policy.max_inputs}")
        seen: set[str] = set()
        for index, text in enumerate(inputs):
            if text in seen:
                self.problem(("inputs", index), f"{text!r} is listed twice")
            seen.add(text)
            error = input_error(nettest, text)
            if error:
                self.problem(("inputs", index), error)

    def check_every(self, kind: Any) -> int | None:
        if kind == "run":
            if "every" in self.value:
                self.problem(("every",), "a run happens once: `every` belongs to a schedule")
            return None
        if "every" not in self.value:
            self.problem(("kind",), "a schedule needs `every`, the new interval (for example 6h)")
            return None
        seconds = parse_duration(self.value["every"])
        if seconds < self.policy.min_every:
            limit = format_duration(self.policy.min_every)
            self.problem(("every",), f"{self.value['every']} is shorter than the policy's min_every ({limit})")
        return seconds

    def check_target(self, target: dict[str, Any]) -> Target | None:
        before = len(self.problems)
        countries = [c.upper() for c in target["countries"]]
        if "*" in countries and len(countries) > 1:
            self.problem(("target", "countries"), '["*"] means every country: list it alone')
        for index, code in enumerate(countries):
            if code != "*" and code not in resources.countries():
                self.problem(("target", "countries", index), resources.not_a_country(code))
        networks = [normalise_network(str(n)) for n in target.get("networks", [])]
        for name, values in (
            ("countries", countries),
            ("networks", networks),
            ("platforms", target.get("platforms", [])),
        ):
            for index, item in enumerate(values):
                if item in values[:index]:
                    self.problem(("target", name, index), f"{item} is listed twice")
        max_probes = target.get("max_probes")
        if "max_probes_per" in target and max_probes is None:
            self.problem(("target", "max_probes_per"), "max_probes_per only means something with max_probes")
        if len(self.problems) > before:
            return None
        return Target(
            countries=tuple(countries),
            networks=tuple(networks),
            platforms=tuple(target.get("platforms", [])),
            max_probes=max_probes,
            max_probes_per=target.get("max_probes_per", "target"),
            sample=float(target["sample"]) if "sample" in target else None,
        )

    def check_window(self, window: dict[str, Any]) -> Window | None:
        moments = {}
        for name in ("start", "end"):
            try:
                moments[name] = parse_timestamp(window[name])
            except ValueError:
                self.problem(("window", name), f"{window[name]!r} needs a time zone, for example 2026-12-01T00:00:00Z")
        if len(moments) < 2:
            return None
        start, end = moments["start"], moments["end"]
        if end <= start:
            self.problem(("window", "end"), "the window must end after it starts")
            return None
        if (end - start).total_seconds() > self.policy.max_window:
            limit = format_duration(self.policy.max_window)
            self.problem(("window", "end"), f"the window is longer than the policy's max_window ({limit})")
            return None
        return Window(start, end)


Verdict = tuple[Instruction | None, list[Problem]]
CheckMemo = LRU[tuple[Policy, str, bytes | str], Verdict]  # (policy, path, contents or git blob id)


def new_check_memo() -> CheckMemo:
    """Verdicts by (policy, path, contents or blob id), for callers that check one commit after another."""
    return LRU(CHECK_MEMO_SIZE)


def check_known(
    memo: CheckMemo | None, policy: Policy, path: str, blob_id: str | None, read: Callable[[], bytes]
) -> Verdict:
    """One instruction's verdict, from `memo` when this file (by git blob id, else contents) was judged before.

    A file that cannot be read for its size is judged too large; nothing else is read twice.
    """
    key: tuple[Policy, str, bytes | str] | None = (policy, path, blob_id) if blob_id else None
    verdict = memo.get(key) if memo is not None and key is not None else None
    if verdict is not None:
        return verdict
    try:
        data = read()
    except BlobTooLarge as err:
        return None, [Problem(path, None, "", f"the file is {err.size} bytes: far too large")]
    if key is None:
        key = (policy, path, data)
        verdict = memo.get(key) if memo is not None else None
        if verdict is not None:
            return verdict
    verdict = check_instruction(data, path, policy)
    if memo is not None:
        memo.put(key, verdict)
    return verdict


def check_ledger(files: LedgerFiles, memo: CheckMemo | None = None) -> CheckResult:
    """Every instruction and the policy of one ledger, with duplicate ids and stray files caught.

    `memo` keeps verdicts by (policy, path, contents) between calls, so a long-lived caller that
    checks one commit after another only parses the files that changed.
    """
    result = CheckResult()
    policy_path = f"{files.root}policy.yaml"
    policy, policy_problems = load_policy(files.policy, policy_path)
    result.problems.extend(policy_problems)
    memo = new_check_memo() if memo is None else memo
    judging.prejudge(files, policy, memo, check_instruction)  # a large first check: on every core
    for path in files.links:
        message = (
            "is a symbolic link: the ledger holds only plain files (git stores the link, not what it points to, "
            "so the service would not see the same ledger as a working tree); replace it with the file"
        )
        result.problems.append(Problem(f"{files.root}{path}", None, "", message))
    for path, size in sorted(files.oversized.items()):
        result.problems.append(Problem(f"{files.root}{path}", None, "", f"the file is {size} bytes: far too large"))
    linked = {path.removeprefix("instructions/") for path in files.links}
    for name in files.not_files:
        if name in linked:
            continue
        result.problems.append(
            Problem(f"{files.root}instructions/{name}", None, "", "instructions/ holds only <id>.yaml files")
        )
    ids: dict[str, str] = {}
    for name in sorted(files.instructions):
        path = f"{files.root}instructions/{name}"
        if not name.endswith(".yaml"):
            hint = f": rename it to {name.rsplit('.', 1)[0]}.yaml" if name.endswith(".yml") else ""
            if not name.startswith("."):
                result.problems.append(Problem(path, None, "", f"instructions/ holds only <id>.yaml files{hint}"))
            continue
        read = functools.partial(files.instructions.__getitem__, name)
        instruction, problems = check_known(memo, policy, path, files.ids.get(name), read)
        result.problems.extend(problems)
        if instruction is None:
            continue
        if instruction.id in ids:
            result.problems.append(
                Problem(path, 1, "id", f"{instruction.id!r} is also the id in {ids[instruction.id]}")
            )
            continue
        ids[instruction.id] = path
        result.instructions[instruction.id] = instruction
    return result
