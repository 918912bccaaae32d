"""The OONI Run v2 bridge: answers as OONI's backend gives them, derived from the signed feed, auditable."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import oonirun_engine as engine
import pytest
from flask.testing import FlaskClient

from conftest import LedgerRepo, SshKey, instruction, opos, push, window
from opos.instructions import oonirun
from opos.instructions.oonirun_meta import MetaInvalid, parse_meta
from servers import free_port
from webhook import create_app
from webhook.feed_service.errors import ConfigError

LINK = "/api/v2/oonirun/links/10000"
BACKEND = json.loads((Path(__file__).parent / "oonirun" / "backend-v2.schema.json").read_text())
NOW = window(-1, 5)
IR_META = {"run_type": "timed", "is_charging": False, "probe_cc": "IR", "probe_asn": "AS197207", "network_type": "wifi",
           "website_category_codes": []}  # fmt: skip

# instruction id: what its file sets besides a current window; and which answers list it
FLEET = {
    "everywhere-one": ({"target": "\n  countries: ['*']"}, {"link", "ir", "ru"}),
    "ir-wide-one": ({"target": "\n  countries: [IR]"}, {"ir"}),
    "ir-network-one": ({"target": "\n  countries: [IR]\n  networks: [AS197207]"}, {"ir"}),
    "ir-other-network": ({"target": "\n  countries: [IR]\n  networks: [AS12880]"}, set()),
    "ru-one": ({"target": "\n  countries: [RU]"}, {"ru"}),
    "capped-one": ({"target": "\n  countries: ['*']\n  max_probes: 5"}, set()),
    "sampled-one": ({"target": "\n  countries: ['*']\n  sample: 0.5"}, set()),
    "android-one": ({"target": "\n  countries: ['*']\n  platforms: [android]"}, set()),
    "all-platforms": ({"target": "\n  countries: [IR]\n  platforms: [android, ios, linux, macos, windows]"}, {"ir"}),
    "scheduled-one": (
        {"kind": "schedule", "test": "telegram", "inputs": None, "every": "6h", "target": "\n  countries: ['*']"},
        set(),
    ),
    "ended-one": ({"target": "\n  countries: ['*']", "window": window(-10, -2)}, set()),
    "later-one": ({"target": "\n  countries: ['*']", "window": window(3, 6)}, set()),
}


def check(document: Any, model: str) -> None:
    """Valid as OONI's backend's model (tests/oonirun/backend-v2.schema.json)."""
    schema = {**BACKEND, "$ref": f"#/$defs/{model}"}
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(document)


@pytest.fixture
def bridge_app(ledger_repo: LedgerRepo, keys: dict[str, SshKey], tmp_path: Path, feed_key_file: Path) -> Any:
    def make(**settings: Any) -> FlaskClient:
        for ident, (fields, _) in FLEET.items():
            ledger_repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, **{"window": NOW, **fields}))
        ledger_repo.commit("The fleet", keys["alice"])
        app = create_app({"remote": str(ledger_repo.path), "data_dir": str(tmp_path / "data"), "follow": False,
                          "feed_key": str(feed_key_file), "public_url": "https://opos.example.org",
                          **settings})  # fmt: skip
        assert app.extensions["opos"].syncer.sync().outcome == "published"
        return app.test_client()

    return make


def listed(document: dict[str, Any]) -> set[str]:
    return {f"{n['test_name']}:{','.join(n['inputs'])}" for n in document["nettests"]}


def expected(answer: str) -> list[str]:
    return sorted(ident for ident, (_, where) in FLEET.items() if answer in where)


def post(client: FlaskClient, meta: Any, revision: str = "latest") -> Any:
    body = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return client.post(f"{LINK}/engine-descriptor/{revision}", data=body, content_type="application/json")


def test_the_link_and_engine_descriptors_are_the_backends_models_and_carry_only_what_crosses(
    bridge_app: Any, ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    client = bridge_app()
    link = client.get(LINK)
    assert link.status_code == 200
    check(link.json, "OONIRunLink")
    commit, sequence = link.headers["X-OPOS-Commit"], link.headers["X-OPOS-Sequence"]
    assert commit == ledger_repo.head() and link.json["revision"] == sequence == "1"
    assert link.json["oonirun_link_id"] == "10000" and link.json["author"] == "bridge@ooni.example"
    assert "https://opos.example.org/log" in link.json["description"] and link.json["is_expired"] is False
    assert [n["inputs"] for n in link.json["nettests"]] == [["https://example.org/"]]  # everywhere-one only
    nettest = link.json["nettests"][0]
    assert nettest == {"test_name": "web_connectivity", "inputs": ["https://example.org/"], "options": {},
                       "is_background_run_enabled_default": True, "is_manual_run_enabled_default": False,
                       "is_background_run_enabled": True, "is_manual_run_enabled": False}  # fmt: skip
    assert client.get(LINK, headers={"If-None-Match": link.headers["ETag"]}).status_code == 304
    for meta, answer in ((IR_META, "ir"), ({**IR_META, "probe_cc": "RU", "probe_asn": "12389"}, "ru")):
        descriptor = post(client, meta)
        assert descriptor.status_code == 200, descriptor.json
        check(descriptor.json, "OONIRunLinkEngineDescriptor")
        assert descriptor.headers["X-OPOS-Commit"] == commit and descriptor.json["revision"] == "1"
        assert len(descriptor.json["nettests"]) == len(expected(answer)), (answer, descriptor.json)
    ir = post(client, IR_META).json
    feed_order = sorted(expected("ir"))  # the feed is sorted by id, and so are the nettests
    assert len(ir["nettests"]) == len(feed_order) == 4
    assert post(client, {**IR_META, "probe_cc": "ZZ", "probe_asn": "AS0"}).json["nettests"] == link.json["nettests"]
    revisions = client.get(f"{LINK}/revisions")
    check(revisions.json, "OONIRunLinkRevisions")
    assert revisions.json == {"revisions": ["1"]}


def test_revisions_follow_the_feed_sequence(bridge_app: Any, ledger_repo: LedgerRepo, keys: dict[str, SshKey]) -> None:
    client = bridge_app()
    service = client.application.extensions["opos"]
    ledger_repo.write("ledger/instructions/second-global.yaml",
                      instruction("second-global", window=NOW, target="\n  countries: ['*']"))  # fmt: skip
    ledger_repo.commit("A second global one", keys["alice"])
    assert service.syncer.sync().outcome == "published"
    link = client.get(LINK).json
    assert link["revision"] == "2" and len(link["nettests"]) == 2
    assert client.get(f"{LINK}/revisions").json == {"revisions": ["2", "1"]}
    one = post(client, IR_META, "1")
    assert one.status_code == 200 and one.json["revision"] == "1" and len(one.json["nettests"]) == 4
    assert one.headers["X-OPOS-Sequence"] == "1"
    assert len(post(client, IR_META, "2").json["nettests"]) == 5
    # an older revision is answered from the small file of what crossed, never by parsing its whole feed again
    site = service.config.site_dir
    first = client.get(f"{LINK}/revisions")  # (sequence 1's commit, from the sequences file)
    commit_one = json.loads((site / "v1" / "oonirun" / "sequences.json").read_bytes())["1"]
    kept = json.loads((site / "v1" / "oonirun" / "bridged" / f"{commit_one}.json").read_bytes())
    assert first.status_code == 200 and kept["sequence"] == 1
    left_out = ("max_probes", "sample", "android]", "schedule")
    crossing = {i for i, (f, _) in FLEET.items() if not any(word in str(f) for word in left_out)}
    assert {i["id"] for i in kept["instructions"]} == crossing | {"first-one"}  # the fixture's own, upcoming
    (site / "v1" / "feed" / f"{commit_one}.json").unlink()
    again = create_app(client.application.extensions["opos"].config).test_client()  # nothing cached
    assert len(post(again, IR_META, "1").json["nettests"]) == 4
    assert post(client, IR_META, "7").status_code == 404  # no feed of that sequence
    assert post(client, IR_META, "0").status_code == 404  # the trust root's feed was never published here
    assert client.get("/api/v2/oonirun/links/10001").status_code == 404
    assert client.get("/api/v2/oonirun/links/10001").is_json


HOSTILE = [
    (b"{", 400),
    (b"\xff\xfe", 400),
    (b"[]", 422),
    (b'"text"', 422),
    (b"{}", 422),
    (b'{"probe_cc": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", 422),  # deeper than any parser should go
    (json.dumps({**IR_META, "probe_asn": "AS99999999999"}).encode(), 422),
    (json.dumps({**IR_META, "network_type": "carrier-pigeon"}).encode(), 422),
    (json.dumps({**IR_META, "run_type": "always"}).encode(), 422),
    (json.dumps({**IR_META, "is_charging": "maybe"}).encode(), 422),
    (json.dumps({**IR_META, "is_charging": {"a": [1]}}).encode(), 422),
    (json.dumps({**IR_META, "probe_cc": 7}).encode(), 422),
    (json.dumps({**IR_META, "probe_asn": "AS1\n"}).encode(), 422),
    (json.dumps({**IR_META, "website_category_codes": list(range(8000))}).encode(), 422),
    (json.dumps({**IR_META, "website_category_codes": "NEWS"}).encode(), 422),
    (json.dumps({**IR_META, "probe_cc": {"nested": [[[[{"x": 1}]]]]}}).encode(), 422),
    (json.dumps({**IR_META, "padding": "x" * 70_000}).encode(), 413),
]


@pytest.mark.parametrize(("body", "status"), HOSTILE, ids=[f"{i}-{s}" for i, (_, s) in enumerate(HOSTILE)])
def test_hostile_metadata_is_refused_with_the_backends_status_never_a_500(
    bridge_app: Any, body: bytes, status: int
) -> None:
    client = bridge_app()
    answer = post(client, body)
    assert answer.status_code == status, answer.json
    assert answer.is_json
    if status == 422:
        problems = answer.json["detail"]
        assert problems and all(p["loc"][0] == "body" and p["msg"] for p in problems), problems
        assert len(json.dumps(answer.json)) < 8000  # never an echo of what was sent


def test_bad_metadata_names_the_field_as_the_backend_does(bridge_app: Any) -> None:
    client = bridge_app()
    answer = post(client, {**IR_META, "probe_asn": "AS99999999999", "is_charging": "maybe"})
    fields = {tuple(p["loc"]) for p in answer.json["detail"]}
    assert fields == {("body", "probe_asn"), ("body", "is_charging")}
    missing = post(client, {"probe_cc": "IR"}).json["detail"]
    assert {p["loc"][1] for p in missing if p["type"] == "missing"} == {"run_type", "is_charging", "probe_asn",
                                                                          "network_type"}  # fmt: skip
    assert post(client, IR_META, "next").status_code == 422
    lax = post(client, {**IR_META, "is_charging": "yes", "probe_asn": "197207", "extra": [1, 2]})
    assert lax.status_code == 200 and len(lax.json["nettests"]) == 4  # as pydantic reads them


def test_meta_parsing_is_pure_and_bounded() -> None:
    meta = parse_meta(json.dumps({**IR_META, "probe_cc": "ir", "probe_asn": "AS0"}).encode())
    assert (meta.country, meta.network) == ("IR", None)
    with pytest.raises(MetaInvalid) as refused:
        parse_meta(json.dumps({**IR_META, "website_category_codes": list(range(10_000))}).encode())
    assert refused.value.status == 422 and len(refused.value.detail) == 20


def test_the_bridge_is_off_with_an_empty_id_and_needs_its_author(
    bridge_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = bridge_app(oonirun_link_id="")
    assert client.get(LINK).status_code == 404 and client.get(LINK).is_json
    monkeypatch.delenv("OPOS_OONIRUN_AUTHOR")
    with pytest.raises(ConfigError, match="OPOS_OONIRUN_AUTHOR"):
        bridge_app()
    for bad, name in (("10a", "OPOS_OONIRUN_LINK_ID"), ("not-an-address", "OPOS_OONIRUN_AUTHOR")):
        with pytest.raises(ValueError, match=name):
            oonirun.LinkSettings.configured(bad if "LINK" in name else "1", bad if "AUTHOR" in name else "a@b.org")


def test_render_writes_the_static_link_the_service_serves(
    bridge_app: Any, ledger_repo: LedgerRepo, tmp_path: Path, feed_key_file: Path
) -> None:
    client = bridge_app()
    site = client.application.extensions["opos"].config.site_dir
    assert json.loads((site / "v1" / "oonirun" / "link.json").read_bytes()) == client.get(LINK).json
    out = tmp_path / "rendered"
    rendered = opos("render", "--repo", ledger_repo.path, "--key", feed_key_file, "--out", out)
    assert rendered.code == 0, rendered.err
    static = json.loads((out / "v1" / "oonirun" / "link.json").read_bytes())
    check(static, "OONIRunLink")
    assert static["revision"] == "1" and len(static["nettests"]) == 1


def test_diff_notes_what_does_not_cross_when_the_policy_says_the_bridge_is_on(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey]
) -> None:
    ledger_repo.write("ledger/policy.yaml", "min_every: 15m\noonirun: true\n")
    ledger_repo.commit("The bridge is on", keys["alice"])
    base = ledger_repo.head()
    for ident in ("capped-one", "everywhere-one"):
        fields = FLEET[ident][0]
        ledger_repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, window=NOW, **fields))
    ledger_repo.commit("Two more", keys["alice"])
    assert opos("check", "--repo", ledger_repo.path).code == 0
    diff = opos("diff", "--repo", ledger_repo.path, base, "HEAD")
    assert diff.code == 0, diff.err
    capped = diff.out.split("ADDED capped-one")[1].split("ADDED everywhere-one")[0]
    assert "NOTE: not sent to OONI Run probes (max_probes" in capped
    assert "OONI Run" not in diff.out.split("ADDED everywhere-one")[1]


class TamperingBridge:
    """A proxy in front of the bridge that adds a nettest to every OONI Run answer, and passes all else through."""

    def __init__(self, upstream: str) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.forward(self, None)

            def do_POST(self) -> None:
                proxy.forward(self, self.rfile.read(int(self.headers.get("Content-Length", 0))))

        self.upstream = upstream
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def forward(self, handler: http.server.BaseHTTPRequestHandler, body: bytes | None) -> None:
        asked = urllib.request.Request(self.upstream + handler.path, body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(asked, timeout=30) as answer:
            data, headers = answer.read(), dict(answer.headers)
        if "/oonirun/" in handler.path:
            document = json.loads(data)
            document["nettests"].append({**document["nettests"][0], "inputs": ["https://evil.example/"]})
            data = json.dumps(document).encode()
        handler.send_response(200)
        for name in ("X-OPOS-Commit", "X-OPOS-Sequence", "Content-Type"):
            if name in headers:
                handler.send_header(name, headers[name])
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.slow
def test_an_engine_follows_the_bridge_and_the_audit_catches_a_tampered_one(
    published_ledger: tuple[LedgerRepo, str], keys: dict[str, SshKey], start_service: Any, feed_key_file: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    repo, url = published_ledger
    for ident in ("everywhere-one", "ir-wide-one", "ru-one", "capped-one"):
        repo.write(f"ledger/instructions/{ident}.yaml", instruction(ident, window=NOW, **FLEET[ident][0]))
    repo.commit("Some of the fleet", keys["alice"])
    commit = push(repo)
    service = start_service(url, workers=2)
    service.wait_for(lambda: service.served_commit() == commit, what="the fleet")
    # the engine's side, as internal/oonirun/v2.go plays it: POST the probe's context, run what comes back
    ran: list[tuple[str, list[str]]] = []
    descriptor = engine.fetch(f"{service.url}{LINK}/engine-descriptor/latest", "IR", "AS197207")
    skipped = engine.measure(descriptor, lambda test, inputs, options: ran.append((test, inputs)), background=True)
    assert skipped == 0 and descriptor.revision == "1"
    assert ran == [("web_connectivity", ["https://example.org/"])] * 2  # everywhere-one, ir-wide-one
    assert engine.measure(descriptor, lambda *a: None, background=False) == 2  # not for manual runs
    assert [n.test_name for n in engine.fetch(f"{service.url}{LINK}", "", "").nettests] == ["web_connectivity"]
    public_key = f"{feed_key_file}.pub"
    meta = json.dumps(IR_META)
    for target in (f"{service.url}{LINK}", f"{service.url}{LINK}/engine-descriptor/latest",
                   f"{service.url}{LINK}/engine-descriptor/1"):  # fmt: skip
        honest = opos("audit", "--oonirun", target, "--key", public_key, "--meta", meta) if "engine" in target else \
            opos("audit", "--oonirun", target, "--key", public_key)  # fmt: skip
        assert honest.code == 0 and honest.out.startswith("ok:"), (target, honest.out, honest.err)
    tampering = TamperingBridge(service.url)
    try:
        for target in (f"{tampering.url}{LINK}", f"{tampering.url}{LINK}/engine-descriptor/latest"):
            caught = opos("audit", "--oonirun", target, "--key", public_key)
            assert caught.code == 1 and "MISMATCH" in caught.out and "evil.example" in caught.out, caught.out
    finally:
        tampering.stop()
    other_key = tmp_path / "other"
    assert opos("keygen", "--out", other_key).code == 0
    forged = opos("audit", "--oonirun", f"{service.url}{LINK}", "--key", f"{other_key}.pub")
    assert forged.code == 1 and "REFUSED" in forged.out
    unreachable = opos("audit", "--oonirun", f"http://127.0.0.1:{free_port()}{LINK}", "--key", public_key)
    assert unreachable.code == 2 and "no verdict" in unreachable.err
