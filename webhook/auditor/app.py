"""The auditor service: cosigns a feed only when it is exactly the public ledger (opos/audit/auditing.py).

    gunicorn -c webhook/auditor.conf.py 'webhook.auditor:create_app()'    (or `opos auditor serve`)

    POST /v1/cosign                   a feed envelope (at most 4 MiB) → this auditor's cosignature
                                      422: not the ledger (with the difference); 409: conflicts with
                                      what it cosigned (the split-view alarm), its latest in the body
    GET  /v1/cosigned.json            everything it has cosigned, oldest first
    GET  /v1/cosigned/<commit>.json   what it cosigned at that commit
    GET  /v1/public_key               its key, as an OpenSSH line
    GET  /healthz

Settings (environment): OPOS_AUDITOR_KEY, OPOS_AUDITOR_FEED_KEYS (comma-separated .pub files) and/or
OPOS_AUDITOR_ROOT_KEYS (the root keys: the feed keys the ledger's key documents list at the audited
commit, their chain checked from these, are accepted: a rotation needs no restart), OPOS_AUDITOR_STATE,
OPOS_AUDITOR_REMOTE (the ledger's URL, then optional mirrors of it, comma-separated), and optionally
OPOS_AUDITOR_BRANCH (main), OPOS_AUDITOR_LEDGER_DIR (ledger), OPOS_AUDITOR_TRUST_ROOT,
OPOS_AUDITOR_FETCH_BYTES (256 MiB) and OPOS_AUDITOR_FETCH_SECONDS (120): what one fetch may bring and
take; and, as for the feed service, OPOS_BODY_SECONDS, OPOS_CONNECTIONS_PER_ADDRESS and
OPOS_TRUSTED_PROXIES. The ledger is fetched from the configured remote, never from the requester; a
feed already cosigned is answered from the log. A damaged log stops cosigning (503, and /healthz says
why) until it is restored: what was cosigned decides what may be.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from flask import Flask, Response, abort, jsonify
from werkzeug.exceptions import HTTPException

from opos.audit.auditing import AuditLog, LogEntry, audit, receive
from opos.audit.errors import AuditConflict, AuditLogDamaged, AuditRefused
from opos.errors import OposError, RepositoryError
from opos.instructions import rules
from opos.model import CommitHash
from opos.signing import keydoc, keys
from opos.trust.ancestry import descends_from
from opos.trust.gitrepo import FetchLimits, GitLedger, fetch_branch, redact
from opos.trust.verification import Verification
from webhook.addresses import Sources
from webhook.answers import json_error, refuse_undecodable
from webhook.body import read_body
from webhook.connections import ConnectionPolicy
from webhook.deadline import deadline
from webhook.limits import LIMITS

logger = logging.getLogger("opos.auditor")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
Number = TypeVar("Number", int, float)


@dataclass(frozen=True)
class AuditorConfig:
    key: Path
    feed_keys: tuple[Path, ...]
    state: Path
    remotes: tuple[str, ...]  # the public ledger, then its mirrors: tried in turn
    branch: str = "main"
    ledger_dir: str = "ledger"
    trust_root: str | None = None
    fetch: FetchLimits = field(default_factory=FetchLimits)
    body_seconds: float = LIMITS.body_seconds
    connections: ConnectionPolicy = field(default_factory=lambda: ConnectionPolicy(100, Sources()))
    root_keys: tuple[Path, ...] = ()  # follow the key documents from these: the feed keys they list are accepted

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AuditorConfig:
        environ = os.environ if environ is None else environ
        missing = [name for name in ("KEY", "STATE", "REMOTE") if not environ.get(f"OPOS_AUDITOR_{name}")]
        if not environ.get("OPOS_AUDITOR_FEED_KEYS") and not environ.get("OPOS_AUDITOR_ROOT_KEYS"):
            missing.append("FEED_KEYS (or ROOT_KEYS, to follow the key documents)")
        if missing:
            raise OposError(f"the auditor needs {', '.join('OPOS_AUDITOR_' + m for m in missing)}")
        return cls(
            Path(environ["OPOS_AUDITOR_KEY"]),
            tuple(Path(p) for p in environ.get("OPOS_AUDITOR_FEED_KEYS", "").split(",") if p),
            Path(environ["OPOS_AUDITOR_STATE"]),
            tuple(url.strip() for url in environ["OPOS_AUDITOR_REMOTE"].split(",") if url.strip()),
            environ.get("OPOS_AUDITOR_BRANCH", "main"),
            environ.get("OPOS_AUDITOR_LEDGER_DIR", "ledger"),
            environ.get("OPOS_AUDITOR_TRUST_ROOT") or None,
            FetchLimits(
                _number(environ, "OPOS_AUDITOR_FETCH_BYTES", FetchLimits.max_bytes, int),
                _number(environ, "OPOS_AUDITOR_FETCH_SECONDS", FetchLimits.seconds, float),
            ),
            _number(environ, "OPOS_BODY_SECONDS", LIMITS.body_seconds, float),
            ConnectionPolicy(
                _number(environ, "OPOS_CONNECTIONS_PER_ADDRESS", 100, int, zero=True), Sources.from_environment(environ)
            ),
            tuple(Path(p) for p in environ.get("OPOS_AUDITOR_ROOT_KEYS", "").split(",") if p),
        )


def _number(environ: Mapping[str, str], name: str, default: Number, kind: type[Number], zero: bool = False) -> Number:
    text = environ.get(name)
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise OposError(f"{name}: {text!r} is not a number") from None
    if value < 0 or (value == 0 and not zero):
        raise OposError(f"{name}: must be more than 0")
    return value


class Auditor:
    def __init__(self, config: AuditorConfig) -> None:
        self.config = config
        self.key = keys.load_private(config.key)
        self.feed_keys = [keys.load_public(path) for path in config.feed_keys]
        self.root_keys = tuple(keydoc.Key.of(keys.load_public(path)) for path in config.root_keys)
        self.log = AuditLog(config.state)
        self.clone = config.state / "ledger.git"
        self.checked = rules.new_check_memo()  # parsed files, kept between requests: re-rendering is incremental

    def check(self) -> None:
        """Refuse to start on a log that cannot be read (AuditLogDamaged): it decides what may be cosigned."""
        self.log.entries()

    def cosign(self, envelope: bytes) -> tuple[bytes, LogEntry]:
        """This auditor's cosignature of the feed. Raises AuditRefused, AuditConflict, or OposError (fetching)."""
        request = receive(envelope, self.feed_keys, self.root_keys)  # outside the lock: garbage waits for nobody
        with self.log.locked(), contextlib.ExitStack() as opened:

            def ledger_at() -> tuple[Verification, CommitHash | None]:
                tip = self._fetch(CommitHash(request.feed.commit))
                ledger = opened.enter_context(GitLedger(self.clone, self.config.ledger_dir))
                return Verification.open(ledger, tip, self.config.trust_root, self.checked), tip

            done = audit(request, self.key, self.log, ledger_at, dt.datetime.now(dt.UTC))
        if done.appended:
            logger.info("cosigned sequence %d, commit %s", done.entry.sequence, done.entry.commit)
        return done.envelope, done.entry

    def _fetch(self, wanted: CommitHash) -> CommitHash:
        """The public branch's tip, from the first remote (the ledger, then its mirrors) whose branch holds
        `wanted`; else from the last one that answered, for the checks to say why. Raises OposError."""
        tip: CommitHash | None = None
        failures = []
        for remote in self.config.remotes:
            late = RepositoryError(f"{redact(remote)} did not send the ledger within {self.config.fetch.seconds:g} s "
                                   "(OPOS_AUDITOR_FETCH_SECONDS)")  # fmt: skip
            try:
                with deadline(self.config.fetch.seconds, late):
                    tip = fetch_branch(self.clone, remote, self.config.branch, self.config.fetch)
            except OposError as err:
                failures.append(err.diagnostics())
                continue
            with GitLedger(self.clone, self.config.ledger_dir) as ledger:
                if _holds(ledger, tip, wanted):
                    return tip
        if tip is None:
            raise OposError("no remote of the ledger could be fetched: " + "; ".join(failures))
        return tip


def _holds(ledger: GitLedger, tip: CommitHash, wanted: CommitHash) -> bool:
    try:
        ledger.commit(wanted)
    except OposError:
        return False
    return descends_from(ledger, tip, wanted)


def _cosign(auditor: Auditor) -> Response | tuple[Response, int]:
    """POST /v1/cosign: the cosignature, or 409 (split view, with this auditor's latest), 422 (refused) or 503."""
    try:
        envelope, _ = auditor.cosign(read_body())
    except AuditConflict as conflict:
        logger.warning("SPLIT VIEW ALARM: %s", conflict)
        latest = {"sequence": conflict.latest.sequence, "commit": conflict.latest.commit}
        return jsonify(error="Conflict", detail=str(conflict), latest=latest), 409
    except AuditRefused as refused:
        logger.warning("refused: %s", str(refused).splitlines()[0])
        return jsonify(error="Unprocessable Content", detail=str(refused)), 422
    except AuditLogDamaged as damaged:
        logger.error("%s", damaged)
        return jsonify(error="Service Unavailable", detail=str(damaged)), 503
    except OposError as err:  # the ledger could not be fetched or read: try again later
        logger.error("cannot audit now: %s", err.diagnostics())
        response = jsonify(error="Service Unavailable", detail=f"the auditor cannot check now: {err}")
        response.headers["Retry-After"] = "5"
        return response, 503
    return Response(envelope, mimetype="application/json")


def _entries(auditor: Auditor) -> list[LogEntry]:
    try:
        return auditor.log.entries()
    except AuditLogDamaged as damaged:
        abort(503, str(damaged))


def create_app(config: AuditorConfig | None = None) -> Flask:
    auditor = Auditor(config or AuditorConfig.from_environment())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = LIMITS.auditor_feed_bytes
    app.config["OPOS_BODY_SECONDS"] = auditor.config.body_seconds
    app.config["OPOS_CONNECTIONS"] = auditor.config.connections
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["opos-auditor"] = auditor

    app.add_url_rule("/v1/cosign", "cosign", lambda: _cosign(auditor), methods=["POST"])

    @app.get("/v1/cosigned.json")
    def cosigned() -> Response:
        return jsonify(cosigned=[vars(e) for e in _entries(auditor)])

    @app.get("/v1/cosigned/<commit>.json")
    def cosigned_at(commit: str) -> Response:
        if not _COMMIT.match(commit):
            abort(404)
        found = [vars(e) for e in _entries(auditor) if e.commit == commit]
        if not found:
            abort(404, f"this auditor has not cosigned {commit}")
        return jsonify(cosigned=found)

    @app.get("/v1/public_key")
    def public_key() -> Response:
        return Response(keys.public_line(auditor.key.public_key(), "opos auditor"), mimetype="text/plain")

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        keyid = keys.key_id(auditor.key.public_key())
        try:
            entries = auditor.log.entries()
        except AuditLogDamaged as damaged:
            return jsonify(status="degraded", keyid=keyid, latest=None, problem=str(damaged)), 503
        latest = vars(entries[-1]) if entries else None
        return jsonify(status="ok", keyid=keyid, latest=latest, problem=None), 200

    app.register_error_handler(HTTPException, json_error)
    app.before_request(refuse_undecodable)

    return app
