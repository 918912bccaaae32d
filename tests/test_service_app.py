"""The service in-process (Flask's test client): every answer a client can provoke, config, the follower."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from werkzeug.test import Client
from werkzeug.wrappers import Response

from conftest import LedgerRepo, SshKey, instruction
from opos.instructions.targeting import sample_point
from opos.publish import site as site_module
from opos.publish.follow import Follower
from webhook import create_app
from webhook.feed_service.config import load_config
from webhook.feed_service.errors import ConfigError

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
START, END = NOW - dt.timedelta(days=1), NOW + dt.timedelta(days=9)
WINDOW = f"\n  start: {START:%Y-%m-%dT%H:%M:%SZ}\n  end: {END:%Y-%m-%dT%H:%M:%SZ}"
PROBE = "probe-0123456789abcdef"


@pytest.fixture(params=["sqlite", "postgresql"])
def app_client(
    request: pytest.FixtureRequest,
    ledger_repo: LedgerRepo,
    keys: dict[str, SshKey],
    tmp_path: Path,
    feed_key_file: Path,
) -> Any:
    """An app on a fresh ledger, once with each claims backend: the same claims suite runs on both."""
    claims_database = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None

    def ledger_with(**instructions: dict[str, str]) -> FlaskClient:
        for ident, fields in instructions.items():
            ledger_repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, **{"window": WINDOW, **fields}))
        ledger_repo.commit("Instructions", keys["alice"])
        settings = {"remote": str(ledger_repo.path), "data_dir": str(tmp_path / "data"),
                    "claims_database": claims_database, "feed_key": str(feed_key_file), "follow": False,
                    "webhook_secret": "s3cret",
                    "claims_per_address": 0, "claims_rate": "0"}  # many probes from one address  # fmt: skip
        app = create_app(settings)
        assert app.extensions["opos"].syncer.sync().outcome == "published"
        return app.test_client()

    return ledger_with


CAPPED = "\n  countries: [IR, RU]\n  networks: [AS197207, AS12389]\n  max_probes: 2"


def claim(client: FlaskClient, **fields: Any) -> Any:
    document = {"instruction": "capped-one", "probe_id": PROBE, "country": "IR", "network": "AS197207", **fields}
    return client.post("/v1/claims", json={k: v for k, v in document.items() if v is not None})


def test_claims_are_capped_and_idempotent(app_client: Any) -> None:
    client = app_client(**{"capped-one": {"target": CAPPED}})
    first = claim(client)
    assert first.status_code == 200
    assert first.json == {"granted": True, "instruction": "capped-one", "revision": first.json["revision"],
                          "limit": 2, "used": 1}  # fmt: skip
    assert claim(client).json["used"] == 1  # the same probe again: no second slot
    assert claim(client, probe_id="probe-second-000000").json["granted"]
    third = claim(client, probe_id="probe-third-0000000", network="AS12389", country="RU")
    assert third.json["granted"] is False and third.json["used"] == 2


@pytest.mark.parametrize("per", ["country", "network"])
def test_caps_per_country_or_network(app_client: Any, per: str) -> None:
    client = app_client(
        **{"capped-one": {"target": CAPPED.replace("max_probes: 2", f"max_probes: 1\n  max_probes_per: {per}")}}
    )
    assert claim(client, probe_id="probe-a-00000000000").json["granted"]
    assert not claim(client, probe_id="probe-b-00000000000").json["granted"]
    other = claim(client, probe_id="probe-c-00000000000", country="RU", network="AS12389")
    assert other.json["granted"]


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"probe_id": "short"}, 400, "probe_id"),
        ({"probe_id": "x" * 65}, 400, "probe_id"),
        ({"probe_id": "bad id with spaces!!"}, 400, "probe_id"),
        ({"country": "Iran"}, 400, "country"),
        ({"network": None}, 400, "network"),
        ({"extra": 1}, 400, "extra"),
        ({"instruction": "missing-one"}, 422, "not an instruction of the served feed"),
        ({"instruction": "uncapped-one"}, 422, "no max_probes"),
        ({"instruction": "old-one"}, 422, "outside its window"),
        ({"country": "DE"}, 422, "not DE"),
        ({"network": "AS1"}, 422, "not AS1"),
    ],
)
def test_claims_that_break_a_rule(app_client: Any, fields: dict[str, Any], status: int, words: str) -> None:
    client = app_client(
        **{
            "capped-one": {"target": CAPPED},
            "uncapped-one": {},
            "old-one": {"target": CAPPED, "window": "\n  start: 2025-01-01\n  end: 2025-02-01"},
        }
    )
    answer = claim(client, **fields)
    assert answer.status_code == status and words in json.dumps(answer.json), answer.json
    assert set(answer.json) == {"error", "detail", "reason"}


def test_a_probe_outside_the_sample_cannot_claim(app_client: Any) -> None:
    client = app_client(**{"capped-one": {"target": CAPPED + "\n  sample: 0.5"}})
    inside = next(f"probe-{n:016}" for n in range(100) if sample_point(f"probe-{n:016}", "capped-one") < 0.5)
    outside = next(f"probe-{n:016}" for n in range(100) if sample_point(f"probe-{n:016}", "capped-one") >= 0.5)
    assert claim(client, probe_id=inside).status_code == 200
    assert claim(client, probe_id=outside).status_code == 422


def test_malformed_requests_get_json_errors(app_client: Any) -> None:
    client = app_client()
    assert client.post("/v1/claims", data=b"not json", content_type="application/json").status_code == 400
    assert client.post("/v1/claims", json=[1, 2]).status_code == 400
    big = client.post("/v1/claims", data=b"{" + b" " * (2 * 1024 * 1024) + b"}", content_type="application/json")
    assert big.status_code == 413 and big.json["error"]
    assert client.get("/v1/claims").status_code == 405 and client.get("/v1/claims").json["error"]
    assert client.get("/v1/nothing").status_code == 404 and "detail" in client.get("/v1/nothing").json


def test_an_unknown_page_is_a_page_and_an_unknown_api_path_is_json(app_client: Any) -> None:
    """Unknown paths such as /nope got a JSON 404; /log/<unknown id> said "look for it below" with nothing below."""
    client = app_client()
    page = client.get("/nope")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "There is no page at &#39;/nope&#39;: search the log of instructions with the form above" in page.text
    assert 'class="filters"' in page.text
    unknown = client.get("/log/no-such-one")
    assert unknown.status_code == 404 and "search the log with the form above" in unknown.text
    for path in ("/v1/nope.json", "/hooks/nope"):
        answer = client.get(path)
        assert answer.status_code == 404 and answer.mimetype == "application/json" and answer.json["detail"]


def test_webhook_body_is_only_a_trigger(app_client: Any) -> None:
    client = app_client()
    body = b'{"ref": "refs/heads/main", "commits": "anything at all"}'
    signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    answer = client.post(
        "/hooks/github", data=body, headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
    )
    assert answer.status_code == 202
    bad_json = b"[not json"
    signature = "sha256=" + hmac.new(b"s3cret", bad_json, hashlib.sha256).hexdigest()
    answer = client.post(
        "/hooks/github", data=bad_json, headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": signature}
    )
    assert answer.status_code == 400


def test_a_crash_while_publishing_leaves_the_previous_state(
    app_client: Any, ledger_repo: LedgerRepo, keys: dict[str, SshKey], monkeypatch: pytest.MonkeyPatch
) -> None:
    client = app_client()
    before = client.get("/v1/head.json").data
    ledger_repo.write("ledger/instructions/second-one.yaml", instruction("second-one"))
    ledger_repo.commit("Second", keys["alice"])
    real = site_module.write_atomically

    def crash_on_head(path: Path, data: bytes, mode: int = 0o644) -> None:
        if path.name == "head.json":
            raise OSError(28, "No space left on device")
        real(path, data, mode)

    monkeypatch.setattr(site_module, "write_atomically", crash_on_head)
    service = client.application.extensions["opos"]
    assert service.syncer.sync().outcome == "failed"
    assert client.get("/v1/head.json").data == before
    assert client.get("/healthz").status_code == 503
    monkeypatch.setattr(site_module, "write_atomically", real)
    assert service.syncer.sync().outcome == "published"
    assert client.get("/healthz").json["status"] == "ok"


class SlowSyncer:
    def __init__(self) -> None:
        self.count = 0
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def sync(self) -> None:
        with self.lock:
            self.count += 1
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(1.0)  # long enough for thirty requests to land while it runs, even on a slow disk
        with self.lock:
            self.running -= 1


def test_requests_during_a_sync_coalesce_and_syncs_never_overlap(tmp_path: Path) -> None:
    syncer = SlowSyncer()
    followers = [Follower(syncer, tmp_path, 3600) for _ in range(3)]  # type: ignore[arg-type]
    for follower in followers:
        follower.start()
    deadline = time.monotonic() + 10
    while syncer.running == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    for _ in range(10):  # thirty requests, to every worker, while the first sync runs
        for follower in followers:
            follower.request()
    while (followers[0].pending() or syncer.running) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sum(f.leader for f in followers) == 1
    for follower in followers:
        follower.stop()
    assert syncer.most == 1
    assert syncer.count == 2  # the running sync, then one follow-up for all thirty requests


def test_configuration_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "opos.toml"
    path.write_text(
        'remote = "/srv/ledger.git"\ndata_dir = "/var/lib/opos"\nfeed_key = "/etc/opos/key"\npoll_seconds = 10\n'
    )
    config = load_config(path, environ={"OPOS_POLL_SECONDS": "5", "OPOS_BRANCH": "live"})
    assert config.poll_seconds == 5 and config.branch == "live" and str(config.data_dir) == "/var/lib/opos"
    yaml_path = tmp_path / "opos.yaml"
    yaml_path.write_text("remote: x\ndata_dir: d\nfeed_key: k\nwebhook_secret: s\n")
    assert load_config(yaml_path, environ={}).webhook_secret == "s"
    for text, words in [
        ("remotee: x\n", "unknown setting 'remotee'"),
        ("[1, 2]\n", "mapping"),
        ("a: [\n", "not valid YAML"),
    ]:
        yaml_path.write_text(text)
        with pytest.raises(ConfigError, match=words.replace("[", r"\[")):
            load_config(yaml_path, environ={})
    with pytest.raises(ConfigError, match="OPOS_REMOTE"):
        load_config(environ={})
    with pytest.raises(ConfigError, match="not a number"):
        load_config(
            environ={"OPOS_REMOTE": "r", "OPOS_DATA_DIR": "d", "OPOS_FEED_KEY": "k", "OPOS_POLL_SECONDS": "often"}
        )


def test_openapi_describes_every_route(app_client: Any) -> None:
    client = app_client()
    paths = set(client.get("/openapi.json").json["paths"])
    for rule in client.application.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        documented = rule.rule.replace("<", "{").replace(">", "}").replace("{ident}", "{id}")
        assert documented in paths, rule.rule


def test_the_fast_path_answers_the_polled_paths_as_flask_does(app_client: Any) -> None:
    client = app_client(one={})
    flask_only = Client(client.application.wsgi_app.app, Response)  # the Flask routes alone, for comparison
    for path in ("/v1/head.json", "/v1/feed.json"):
        fast, slow = client.get(path), flask_only.get(path)
        assert (fast.status_code, fast.data) == (slow.status_code, slow.data) == (200, slow.data)
        same = ("Content-Type", "Content-Length", "ETag", "Cache-Control", "Content-Security-Policy")
        assert {h: fast.headers.get(h) for h in same} == {h: slow.headers.get(h) for h in same}
        etag = fast.headers["ETag"]
        for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            assert client.get(path, headers={"If-None-Match": header}).status_code == 304
            assert flask_only.get(path, headers={"If-None-Match": header}).status_code == 304
        assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
        head = client.head(path)
        assert head.status_code == 200 and head.data == b""
        assert client.post(path).status_code == 405  # anything else goes to Flask
        assert client.get(path + "?x=1").data == slow.data
