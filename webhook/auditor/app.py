"""The auditor service: cosigns a feed only when it is exactly the public ledger (opos/audit/auditing.py).

    gunicorn -c webhook/auditor.conf.py 'webhook.auditor:create_app()'    (or `opos auditor serve`)

    POST /v1/cosign                   a feed envelope (at most 4 MiB) → this auditor's cosignature
                                      422: not the ledger (with the difference); 409: conflicts with
                                      what it cosigned (the split-view alarm), its latest in the body
    GET  /v1/cosigned.json            everything it has cosigned, oldest first
    GET  /v1/cosigned/<commit>.json   what it cosigned at that commit
    GET  /v1/public_key               its key, as an OpenSSH line
    GET  /healthz

Settings (environment): OPOS_AUDITOR_KEY, OPOS_AUDITOR_FEED_KEYS (comma-separated .pub files),
OPOS_AUDITOR_STATE, OPOS_AUDITOR_REMOTE (the ledger's URL, then optional mirrors of it, comma-separated),
and optionally OPOS_AUDITOR_BRANCH (main),
OPOS_AUDITOR_LEDGER_DIR (ledger), OPOS_AUDITOR_TRUST_ROOT. The ledger is fetched from the
configured remote, never from the requester; a feed already cosigned is answered from the log.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from flask import Flask, Response, abort, jsonify
from werkzeug.exceptions import HTTPException

from opos.audit.auditing import AuditLog, LogEntry, audit, receive
from opos.audit.errors import AuditConflict, AuditRefused
from opos.errors import OposError
from opos.instructions import rules
from opos.model import CommitHash
from opos.signing import keys
from opos.trust.ancestry import descends_from
from opos.trust.gitrepo import GitLedger, fetch_branch
from opos.trust.verification import Verification
from webhook.answers import json_error
from webhook.body import read_body
from webhook.limits import LIMITS

logger = logging.getLogger("opos.auditor")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


@dataclass(frozen=True)
class AuditorConfig:
    key: Path
    feed_keys: tuple[Path, ...]
    state: Path
    remotes: tuple[str, ...]  # the public ledger, then its mirrors: tried in turn
    branch: str = "main"
    ledger_dir: str = "ledger"
    trust_root: str | None = None

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> AuditorConfig:
        environ = os.environ if environ is None else environ
        missing = [name for name in ("KEY", "FEED_KEYS", "STATE", "REMOTE") if not environ.get(f"OPOS_AUDITOR_{name}")]
        if missing:
            raise OposError(f"the auditor needs {', '.join('OPOS_AUDITOR_' + m for m in missing)}")
        return cls(
            Path(environ["OPOS_AUDITOR_KEY"]),
            tuple(Path(p) for p in environ["OPOS_AUDITOR_FEED_KEYS"].split(",") if p),
            Path(environ["OPOS_AUDITOR_STATE"]),
            tuple(url.strip() for url in environ["OPOS_AUDITOR_REMOTE"].split(",") if url.strip()),
            environ.get("OPOS_AUDITOR_BRANCH", "main"),
            environ.get("OPOS_AUDITOR_LEDGER_DIR", "ledger"),
            environ.get("OPOS_AUDITOR_TRUST_ROOT") or None,
        )


class Auditor:
    def __init__(self, config: AuditorConfig) -> None:
        self.config = config
        self.key = keys.load_private(config.key)
        self.feed_keys = [keys.load_public(path) for path in config.feed_keys]
        self.log = AuditLog(config.state)
        self.clone = config.state / "ledger.git"
        self.checked = rules.new_check_memo()  # parsed files, kept between requests: re-rendering is incremental

    def cosign(self, envelope: bytes) -> tuple[bytes, LogEntry]:
        """This auditor's cosignature of the feed. Raises AuditRefused, AuditConflict, or OposError (fetching)."""
        request = receive(envelope, self.feed_keys)  # outside the lock: an outsider's garbage waits for nobody
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
            try:
                tip = fetch_branch(self.clone, remote, self.config.branch)
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
    except OposError as err:  # the ledger could not be fetched or read: try again later
        logger.error("cannot audit now: %s", err.diagnostics())
        response = jsonify(error="Service Unavailable", detail=f"the auditor cannot check now: {err}")
        response.headers["Retry-After"] = "5"
        return response, 503
    return Response(envelope, mimetype="application/json")


def create_app(config: AuditorConfig | None = None) -> Flask:
    auditor = Auditor(config or AuditorConfig.from_environment())
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = LIMITS.auditor_feed_bytes
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["opos-auditor"] = auditor

    app.add_url_rule("/v1/cosign", "cosign", lambda: _cosign(auditor), methods=["POST"])

    @app.get("/v1/cosigned.json")
    def cosigned() -> Response:
        return jsonify(cosigned=[vars(e) for e in auditor.log.entries()])

    @app.get("/v1/cosigned/<commit>.json")
    def cosigned_at(commit: str) -> Response:
        if not _COMMIT.match(commit):
            abort(404)
        found = [vars(e) for e in auditor.log.entries() if e.commit == commit]
        if not found:
            abort(404, f"this auditor has not cosigned {commit}")
        return jsonify(cosigned=found)

    @app.get("/v1/public_key")
    def public_key() -> Response:
        return Response(keys.public_line(auditor.key.public_key(), "opos auditor"), mimetype="text/plain")

    @app.get("/healthz")
    def healthz() -> Response:
        entries = auditor.log.entries()
        latest = vars(entries[-1]) if entries else None
        return jsonify(status="ok", keyid=keys.key_id(auditor.key.public_key()), latest=latest)

    app.register_error_handler(HTTPException, json_error)

    return app
