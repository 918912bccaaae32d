"""The workflows: zizmor and the workflow schema accept them, and their opos steps run for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import LedgerRepo, SshKey, instruction, opos

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def test_zizmor_finds_nothing() -> None:
    result = subprocess.run([str(BIN / "zizmor"), "--offline", *map(str, WORKFLOWS)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_workflows_fit_the_github_schema() -> None:
    command = [str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_actions_are_pinned_by_commit() -> None:
    for path in WORKFLOWS:
        for line in path.read_text().splitlines():
            if "uses:" in line:
                reference = line.split("uses:")[1].split("#")[0].strip()
                assert len(reference.rsplit("@", 1)[1]) == 40, (path.name, line)


def steps(job: str) -> dict[str, dict[str, object]]:
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "ledger.yml").read_text())
    return {step["id"]: step for step in document["jobs"][job]["steps"] if "id" in step}


def run_step(step: dict[str, object], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "-e", "-c", str(step["run"])], cwd=cwd, env=environment, capture_output=True,
                          text=True)  # fmt: skip


def test_the_pull_request_steps_run(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path) -> None:
    base = ledger_repo.head()
    ledger_repo.write("ledger/instructions/from-pr.yaml", instruction("from-pr"))
    head = ledger_repo.commit("From a pull request", keys["alice"])
    env = {"BASE_SHA": base, "HEAD_SHA": head, "OPOS_TRUST_ROOT": base, "RUNNER_TEMP": str(tmp_path)}
    review = steps("review")
    for name in ("check", "verify", "preview"):
        result = run_step(review[name], ledger_repo.path, env)
        assert result.returncode == 0, (name, result.stdout, result.stderr)
    assert "added: `from-pr`" in (tmp_path / "preview.md").read_text()
    ledger_repo.write("ledger/instructions/bad-one.yaml", instruction("bad-one", test="nope"))
    bad = ledger_repo.commit("Unsigned and invalid", None)
    annotations = run_step(review["check"], ledger_repo.path, env)
    assert annotations.returncode == 1 and "::error file=ledger/instructions/bad-one.yaml,line=5" in annotations.stdout
    refused = run_step(review["verify"], ledger_repo.path, {**env, "HEAD_SHA": bad})
    assert refused.returncode == 1 and bad in refused.stdout


def test_the_publish_step_renders_the_site(ledger_repo: LedgerRepo, tmp_path: Path, feed_key_file: Path) -> None:
    env = {"GITHUB_SHA": ledger_repo.head(), "RUNNER_TEMP": str(tmp_path), "OPOS_TRUST_ROOT": "",
           "OPOS_FEED_KEY": feed_key_file.read_text()}  # fmt: skip
    result = run_step(steps("publish")["render"], ledger_repo.path, env)
    assert result.returncode == 0, result.stderr
    assert (ledger_repo.path / "site" / "v1" / "head.json").exists() and not (tmp_path / "feed-key").exists()
    check = opos("verify-feed", ledger_repo.path / "site" / "v1" / "feed.json", "--key", f"{feed_key_file}.pub")
    assert check.code == 0


@pytest.mark.parametrize("name", ["pull_request_template.md", "CODEOWNERS"])
def test_init_installs_the_hosting_files(tmp_path: Path, keys: dict[str, SshKey], name: str) -> None:
    assert opos("init", tmp_path / "l", "--signer", "a@x", "--key", keys["alice"].public).code == 0
    assert (tmp_path / "l" / ".github" / name).exists()
    workflow = yaml.safe_load((tmp_path / "l" / ".github" / "workflows" / "ledger.yml").read_text())
    assert workflow["env"]["OPOS_INSTALL"] == "opos"
