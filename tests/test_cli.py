"""The `opos` command as staff use it: check, new, init, help, and no traceback for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import LedgerRepo, SshKey, day, instruction, opos
from opos.cli import build_parser, command_names

COMMANDS = command_names(build_parser())  # from the parser itself, so a new command cannot be missed
README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_check_passes_on_the_example_ledger() -> None:
    result = opos("check", "--repo", Path(__file__).parent.parent)
    assert result.code == 0 and result.out == "" and "3 instruction(s)" in result.err


def test_check_lists_problems_in_each_format(ledger_repo: LedgerRepo) -> None:
    ledger_repo.write("ledger/instructions/bad-one.yaml", instruction("bad-one", test="web_conectivity"))
    ledger_repo.write("ledger/instructions/worse-one.yaml", "id: worse-one\nid: again\n")
    text = opos("check", "--repo", ledger_repo.path)
    assert text.code == 1
    assert text.out.splitlines() == [
        "ledger/instructions/bad-one.yaml:5: test: 'web_conectivity' is not a test that probes have "
        "(did you mean 'web_connectivity'?)",
        "ledger/instructions/worse-one.yaml:2: id: duplicate key (first given on line 1): keep one",
    ]
    as_json = json.loads(opos("check", "--repo", ledger_repo.path, "--format", "json").out)
    assert not as_json["ok"] and as_json["problems"][0] == {
        "path": "ledger/instructions/bad-one.yaml",
        "line": 5,
        "field": "test",
        "message": "'web_conectivity' is not a test that probes have (did you mean 'web_connectivity'?)",
    }
    github = opos("check", "--repo", ledger_repo.path, "--format", "github").out.splitlines()
    assert github[0].startswith("::error file=ledger/instructions/bad-one.yaml,line=5,title=opos check::test: ")


def test_check_reports_allowed_signers_problems(ledger_repo: LedgerRepo) -> None:
    ledger_repo.write("ledger/allowed_signers", "alice@x ssh-ed25519 notbase64!\n")
    result = opos("check", "--repo", ledger_repo.path)
    assert result.code == 1 and result.out.startswith("ledger/allowed_signers:1: ")


def test_check_with_another_ledger_dir(tmp_path: Path, keys: dict[str, SshKey]) -> None:
    repo = LedgerRepo(tmp_path / "top")
    repo.write("instructions/x-one.yaml", instruction("x-one"))
    repo.write("allowed_signers", f"a {keys['alice'].public_text}\n")
    assert opos("check", "--repo", repo.path, "--ledger-dir", ".").code == 0
    missing = opos("check", "--repo", repo.path)
    assert missing.code == 2 and "--ledger-dir" in missing.err


def test_new_scaffolds_a_file_that_passes_check(ledger_repo: LedgerRepo) -> None:
    result = opos(
        "new", "--repo", ledger_repo.path, "--id", "ir-news-check", "--kind", "run", "--test", "web_connectivity",
        "--title", "Check news: sites", "--reason", "Reports of blocking.\nSecond line.",
        "--input", "https://www.bbc.com/persian", "--country", "IR", "--network", "AS197207",
        "--max-probes", "5", "--start", day(1),
    )  # fmt: skip
    assert result.code == 0, result.err
    written = ledger_repo.path / "ledger" / "instructions" / "ir-news-check.yaml"
    assert written.read_text().startswith("# yaml-language-server: $schema=")
    assert opos("check", "--repo", ledger_repo.path).code == 0
    again = opos(
        "new", "--repo", ledger_repo.path, "--id", "ir-news-check", "--kind", "run", "--test", "telegram",
        "--title", "t", "--reason", "r", "--country", "IR",
    )  # fmt: skip
    assert again.code == 2 and "exists already" in again.err


def test_new_refuses_an_invalid_instruction(ledger_repo: LedgerRepo) -> None:
    result = opos(
        "new", "--repo", ledger_repo.path, "--id", "x-one", "--kind", "schedule", "--test", "telegram",
        "--title", "t", "--reason", "r", "--country", "IR", "--every", "1m",
    )  # fmt: skip
    assert result.code == 1 and "--every: 1m is shorter than the policy's min_every" in result.err
    assert "x-one.yaml" not in result.err  # it names the flag, never a file it did not write
    assert not (ledger_repo.path / "ledger" / "instructions" / "x-one.yaml").exists()
    bad_country = opos("new", "--repo", ledger_repo.path, "--id", "y-one", *RUN, "--country", "XX")
    assert bad_country.code == 1 and "--country: 'XX' is not an ISO 3166-1 alpha-2 country code" in bad_country.err


RUN = (
    "--kind",
    "run",
    "--test",
    "web_connectivity",
    "--title",
    "t",
    "--reason",
    "r",
    "--input",
    "https://example.org/",
)


def test_new_starts_at_the_next_full_hour_and_takes_dates(ledger_repo: LedgerRepo) -> None:
    made = opos("new", "--repo", ledger_repo.path, "--id", "z-one", *RUN, "--reason", "one line", "--country", "IR")
    text = (ledger_repo.path / "ledger" / "instructions" / "z-one.yaml").read_text()
    assert made.code == 0 and 'start: "' in text and ':00:00Z"' in text.split("start: ")[1].split("\n")[0]
    assert "reason: |-\n  one line\n" in text  # no trailing newline in the reason
    dated = opos("new", "--repo", ledger_repo.path, "--id", "d-one", *RUN, "--country", "IR", "--start", day(1)[:10])
    assert dated.code == 0, dated.err
    assert f'start: "{day(1)}"' in (ledger_repo.path / "ledger" / "instructions" / "d-one.yaml").read_text()


def test_new_refuses_a_window_that_has_ended_unless_told(ledger_repo: LedgerRepo) -> None:
    """It wrote an already-ended window without a word (check and diff warned only later)."""
    ended = ["--start", day(-10)[:10], "--end", day(-3)[:10]]
    refused = opos("new", "--repo", ledger_repo.path, "--id", "e-one", *RUN, "--country", "IR", *ended)
    assert refused.code == 2 and "has passed: no probe would ever run it" in refused.err
    assert not (ledger_repo.path / "ledger" / "instructions" / "e-one.yaml").exists()
    kept = opos("new", "--repo", ledger_repo.path, "--id", "e-one", *RUN, "--country", "IR", *ended, "--allow-ended")
    assert kept.code == 0, kept.err


def test_init_then_the_printed_commands_make_a_verified_ledger(tmp_path: Path, keys: dict[str, SshKey]) -> None:
    target = tmp_path / "new-ledger"
    result = opos("init", target, "--signer", "alice@ooni.example", "--key", keys["alice"].public)
    assert result.code == 0, result.err
    after = result.out.split("Make the signed trust-root commit, and pin its hash:\n")[1]
    commands = [line.strip() for line in after.splitlines() if line.startswith("  ")]
    assert commands[0] == f"cd {target}"
    assert "  commit.gpgsign = true" in result.out  # it says what it set in the repository's git config
    assert "require signed commits, allow merge commits only" in result.out
    for command in commands[1:]:
        subprocess.run(command.split("#")[0], shell=True, cwd=target, check=True, capture_output=True)
    trust_root = subprocess.run(["git", "rev-parse", "HEAD"], cwd=target, capture_output=True, text=True).stdout.strip()
    assert opos("check", "--repo", target).code == 0
    verified = opos("verify", "--repo", target, "--trust-root", trust_root)
    assert verified.code == 0, verified.out
    log = subprocess.run(["git", "log", "--show-signature", "-1"], cwd=target, capture_output=True, text=True)
    assert 'Good "git" signature for alice@ooni.example' in log.stdout
    assert "missing key" not in log.stdout + log.stderr  # no blank line in allowed_signers to complain of
    assert 'alice@ooni.example namespaces="git" ssh-ed25519 ' in (target / "ledger" / "allowed_signers").read_text()
    assert opos("init", target, "--signer", "a", "--key", keys["alice"].public).code == 2


def test_init_with_examples_and_bad_keys(tmp_path: Path, keys: dict[str, SshKey]) -> None:
    assert opos("init", tmp_path / "e", "--signer", "a", "--key", keys["alice"].public, "--examples").code == 0
    assert len(list((tmp_path / "e" / "ledger" / "instructions").glob("*.yaml"))) == 3
    assert opos("check", "--repo", tmp_path / "e").code == 0
    private = opos("init", tmp_path / "p", "--signer", "a", "--key", keys["alice"].private)
    assert private.code == 1 and "private key" in private.err
    assert opos("init", tmp_path / "q", "--signer", "a", "--key", tmp_path / "missing.pub").code == 1


def test_the_parser_knows_every_command() -> None:
    assert set(COMMANDS) == {"init", "new", "check", "diff", "approve", "verify", "render", "verify-feed", "keygen",
                             "keys", "log", "audit", "auditor", "serve", "claims", "probe", "conformance",
                             "conformance-client", "demo"}  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_and_is_in_the_readme(command: str) -> None:
    result = subprocess.run([sys.executable, "-m", "opos", command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and f"usage: opos {command}" in result.stdout and len(result.stdout) > 200
    assert f"`opos {command}" in README, f"the README's command list does not mention `opos {command}`"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frobnicate"],
        ["verify", "--repo", "/nonexistent"],
        ["verify", "--repo", ".", "--rev", "no-such-branch"],
        ["render", "--repo", "/nonexistent", "--key", "/nonexistent", "--out", "/tmp/x"],
        ["render", "--repo", ".", "--key", "k", "--out", "o", "--head-ttl", "soon"],
        ["verify-feed", "/nonexistent.json", "--key", "/nonexistent.pub"],
        ["check", "--repo", "/nonexistent"],
        ["new", "--id", "x"],
        ["init"],
        ["check", "--format", "xml"],
        ["verify", "--repo", ".", "--ledger-dir", "../outside"],
    ],
)
def test_bad_input_never_gets_a_traceback(argv: list[str], tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "opos", *argv], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode in (1, 2), (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and (result.stderr.strip() or result.stdout.strip())


def test_demo_builds_and_verifies(tmp_path: Path) -> None:
    result = opos("demo", "--dir", tmp_path / "demo")
    assert result.code == 0, result.err
    assert "Verified the feed and the head" in result.out
    repo = tmp_path / "demo" / "ledger-repo"
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True, check=True)
    assert status.stdout == ""  # the demo leaves its ledger repository clean: files and index as HEAD has them
    signers = tmp_path / "signers"
    signers.write_text(
        subprocess.run(["git", "show", "HEAD:ledger/allowed_signers"], cwd=repo, capture_output=True, text=True).stdout
    )
    commits = subprocess.run(["git", "rev-list", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.split()
    assert len(commits) == 13  # four direct commits, then three changes of three commits each (author, approval, merge)
    for commit in commits:  # every demo commit carries a signature git itself accepts
        check = subprocess.run(
            ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", commit],
            cwd=repo,
            capture_output=True,
        )
        assert check.returncode == 0, commit


def test_init_refuses_a_principal_nobody_could_sign_as(tmp_path: Path, keys: dict[str, SshKey]) -> None:
    result = opos("init", tmp_path / "l", "--signer", "Alice Staff", "--key", keys["alice"].public)
    assert result.code == 2 and "one word" in result.err and not (tmp_path / "l").exists()
    assert opos("init", tmp_path / "m", "--signer", "a@x", "--key", keys["alice"].public, "--opos-ref", "v1").code == 2


def test_check_flags_a_signer_whose_namespaces_exclude_git(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    ledger_repo.signers([f'alice@ooni.example namespaces="file" {keys["alice"].public_text}'])
    result = opos("check", "--repo", ledger_repo.path)
    assert result.code == 1 and 'namespaces="file" does not include git' in result.out


def test_commands_find_the_repository_from_a_subdirectory(
    ledger_repo: LedgerRepo, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside = ledger_repo.path / "ledger" / "instructions"
    monkeypatch.chdir(inside)
    assert opos("check").code == 0
    made = opos("new", "--id", "from-inside", "--kind", "run", "--test", "web_connectivity", "--title", "T",
                "--reason", "R", "--input", "https://example.org/", "--country", "IR")  # fmt: skip
    assert made.code == 0, made.err
    assert (inside / "from-inside.yaml").exists() and not (inside / "ledger").exists()
    assert opos("verify").code == 0 and opos("log").code == 0


def test_the_command_line_refuses_what_the_service_refuses(ledger_repo: LedgerRepo) -> None:
    assert "two-letter country code" in opos("log", "--repo", ledger_repo.path, "--country", "Iran").err
    assert "not a network like AS197207" in opos("log", "--repo", ledger_repo.path, "--network", "garbage").err
    assert opos("log", "--repo", ledger_repo.path, "--country", "ir", "--network", "as197207").code == 0
    probe = opos("probe", "--mirror", "http://127.0.0.1:9", "--key", "k.pub", "--country", "IR", "--network", "AS1",
                 "--platform", "Android/blackberry")  # fmt: skip
    assert probe.code == 2 and "is not a platform" in probe.err


def test_a_closed_pipe_ends_quietly(ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    for number in range(200):  # far more output than a pipe holds, so `head` closes it mid-way
        ledger_repo.write(f"ledger/instructions/many-{number}.yaml", instruction(f"many-{number}"))
    ledger_repo.commit("Many", keys["alice"])
    result = subprocess.run(f"'{sys.executable}' -m opos log --json --repo '{ledger_repo.path}' | head -c 100",
                            shell=True, capture_output=True, text=True, executable="/bin/bash")  # fmt: skip
    assert result.stdout.startswith("{") and result.stderr == ""  # no traceback, no complaint
    status = subprocess.run(f"set -o pipefail; '{sys.executable}' -m opos log --json --repo '{ledger_repo.path}' "
                            "| head -c 100 > /dev/null", shell=True, executable="/bin/bash")  # fmt: skip
    assert status.returncode == 0


def test_audit_exit_codes_separate_a_forgery_from_a_failure(ledger_repo: LedgerRepo, tmp_path: Path) -> None:
    key = tmp_path / "feed-key"
    assert opos("keygen", "--out", key).code == 0
    assert opos("render", "--repo", ledger_repo.path, "--key", key, "--out", tmp_path / "site").code == 0
    site = tmp_path / "site"
    assert opos("audit", site / "v1" / "feed.json", "--key", f"{key}.pub", "--repo", ledger_repo.path).code == 0
    not_a_feed = tmp_path / "garbage.json"
    not_a_feed.write_text("{}")
    for target in (not_a_feed, "http://127.0.0.1:9/opos", "http://"):
        result = opos("audit", target, "--key", f"{key}.pub", "--repo", ledger_repo.path)
        assert result.code == 2, (target, result.err)  # no verdict: never the tamper alarm (1)


def test_check_suggests_gb_for_uk_and_warns_of_an_ended_window(ledger_repo: LedgerRepo) -> None:
    ledger_repo.write("ledger/instructions/uk-one.yaml", instruction("uk-one", target="\n  countries: [UK, IR, IR]"))
    result = opos("check", "--repo", ledger_repo.path)
    assert "'UK' is not an ISO 3166-1 alpha-2 country code (did you mean 'GB'?)" in result.out
    assert "IR is listed twice" in result.out and len(result.out.splitlines()) == 2  # one message per problem
    ledger_repo.write("ledger/instructions/uk-one.yaml", instruction(
        "uk-one", window="\n  start: 2026-01-01T00:00:00Z\n  end: 2026-01-15T00:00:00Z"))  # fmt: skip
    ended = opos("check", "--repo", ledger_repo.path)
    assert (
        ended.code == 0
        and "warning: ledger/instructions/uk-one.yaml: window.end: the window has already ended" in ended.err
    )
