"""The workflows: zizmor and the workflow schema accept them, and their opos steps run for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import LedgerRepo, SshKey, instruction, opos
from opos.trust.gitrepo import GitObjects
from servers import Mirror, free_port

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
    with GitObjects(ROOT) as objects:  # this OPOS runs from a checkout: its commit is the one pinned
        assert workflow["env"]["OPOS_REF"] == objects.resolve("HEAD")


def test_the_workflow_refuses_an_opos_it_cannot_pin(tmp_path: Path) -> None:
    install = steps("publish")["install"]
    for ref in ("", "opos", "v1.0", "a" * 39):
        result = run_step(install, tmp_path, {"OPOS_REF": ref, "OPOS_REPOSITORY": "https://example.invalid/opos"})
        assert result.returncode == 1 and "must be the full commit hash" in result.stdout, ref
    document = yaml.safe_load((ROOT / ".github" / "workflows" / "ledger.yml").read_text())
    assert document[True]["schedule"] == [{"cron": "17 */6 * * *"}]  # the head is renewed on quiet days
    assert "OPOS_INSTALL" not in (ROOT / ".github" / "workflows" / "ledger.yml").read_text()


def test_the_publish_job_renders_over_what_is_published(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path
) -> None:
    """The mirror's current head and feed are fetched first, so a render never goes back or forks."""
    old = ledger_repo.head()
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    new = ledger_repo.commit("Second", keys["alice"])
    published = tmp_path / "published"
    assert (
        opos("render", "--repo", ledger_repo.path, "--rev", new, "--key", feed_key_file, "--out", published).code == 0
    )
    pages = Mirror.of_site(published)
    try:
        job = steps("publish")
        workdir = tmp_path / "job"
        shutil.copytree(ledger_repo.path, workdir)
        env = {"OPOS_PAGES_URL": pages.url, "RUNNER_TEMP": str(tmp_path), "OPOS_TRUST_ROOT": "",
               "OPOS_FEED_KEY": feed_key_file.read_text()}  # fmt: skip
        fetched = run_step(job["fetch"], workdir, env)
        assert fetched.returncode == 0, fetched.stderr
        assert (workdir / "site" / "v1" / "feed" / f"{new}.json").exists()
        stale = run_step(job["render"], workdir, {**env, "GITHUB_SHA": old})  # a run on an older commit
        assert stale.returncode == 0 and "older than the published head" in stale.stdout
        head = opos("verify-feed", workdir / "site" / "v1" / "head.json", "--key", f"{feed_key_file}.pub")
        assert head.code == 0 and new in head.out  # the published head stands
        renewed = run_step(job["render"], workdir, {**env, "GITHUB_SHA": new})  # the six-hourly run
        assert renewed.returncode == 0 and "published as the head" in renewed.stdout
    finally:
        pages.stop()


def test_the_publish_step_asks_the_auditors_the_key_document_requires(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path
) -> None:
    """Without OPOS_AUDITORS it used to render a site that every probe pinning the root refused, in a green job."""
    root, auditor = tmp_path / "root", tmp_path / "auditor"
    for path in (root, auditor):
        assert opos("keygen", "--out", path).code == 0
    ledger = ledger_repo.path / "ledger"
    assert opos("keys", "init", "--root", root, "--root-threshold", "1", "--feed-key", f"{feed_key_file}.pub",
                "--ledger", ledger).code == 0  # fmt: skip
    assert opos("keys", "rotate", "--root", root, "--add-auditor", f"{auditor}.pub", "--auditors-required", "1",
                "--ledger", ledger).code == 0  # fmt: skip
    ledger_repo.commit("Keys: an auditor is required", keys["alice"])
    env = {"GITHUB_SHA": ledger_repo.head(), "RUNNER_TEMP": str(tmp_path), "OPOS_TRUST_ROOT": "",
           "OPOS_FEED_KEY": feed_key_file.read_text(), "OPOS_AUDITORS": ""}  # fmt: skip
    render = steps("publish")["render"]
    refused = run_step(render, ledger_repo.path, env)
    assert refused.returncode == 1 and "requires 1 auditors' cosignatures" in refused.stderr
    assert not (tmp_path / "feed-key").exists()  # removed, whatever the outcome
    nobody = f"http://127.0.0.1:{free_port()}"
    asked = run_step(render, ledger_repo.path, {**env, "OPOS_AUDITORS": f" {nobody} ,"})
    assert asked.returncode == 1 and f"{nobody}: unreachable" in asked.stderr  # the variable became --auditor flags
    assert not (ledger_repo.path / "site" / "v1" / "head.json").exists()
