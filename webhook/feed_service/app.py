"""The OPOS feed service: follows the ledger, serves the signed feed, grants claims.

    gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'

Configuration comes from OPOS_* environment variables and an optional file (OPOS_CONFIG); see
webhook/feed_service/config.py. Everything that is not HTTP is done by the `opos` library.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from webhook.answers import json_error, refuse_undecodable
from webhook.connections import ConnectionPolicy
from webhook.feed_service import claims, feed, health, hooks, metrics, oonirun, public_log
from webhook.feed_service.config import Config, load_config
from webhook.feed_service.fastpath import FastPath
from webhook.feed_service.service import Service

logger = logging.getLogger("opos.service")
API_PREFIXES = ("/v1/", "/hooks/", "/healthz", "/metrics", "/openapi.json", "/api/")

# Every answer: nothing runs but our own stylesheet, no page may frame ours, no type is guessed,
# and no address leaks to another site through Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """The application; `config` is a Config, or settings that override the environment.

    It only configures and registers: the worker process starts the service (`start_service`,
    from gunicorn's post_worker_init), so that nothing runs in a process that forks afterwards.
    """
    settings = config if isinstance(config, Config) else load_config(overrides=config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.config["OPOS_BODY_SECONDS"] = settings.body_seconds
    app.json.sort_keys = False  # type: ignore[attr-defined]
    service = Service(settings)
    app.extensions["opos"] = service
    app.config["OPOS_CONNECTIONS"] = ConnectionPolicy(settings.connections_per_address, service.sources)
    for module in (feed, claims, hooks, health, public_log):
        app.register_blueprint(module.blueprint)
    if service.oonirun is not None:  # off: its paths are 404, as any other unknown path
        app.register_blueprint(oonirun.blueprint)
        app.extensions["opos-oonirun"] = oonirun.Answers()
    app.wsgi_app = FastPath(app.wsgi_app, service.site, SECURITY_HEADERS)  # type: ignore[method-assign]

    app.register_error_handler(HTTPException, json_error)
    app.before_request(refuse_undecodable)

    @app.errorhandler(404)
    def not_found(error: HTTPException) -> ResponseReturnValue:
        """JSON for programs (the API's paths), the log's page for people (any other)."""
        if request.path.startswith(API_PREFIXES):
            return json_error(error)
        return public_log.page_not_found(error)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        logger.exception("unexpected error on %s %s", request.method, request.path)
        return jsonify(error="Internal Server Error", detail="an unexpected error; it is logged"), 500

    @app.after_request
    def count_and_protect(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(route, str(response.status_code)).inc()
        response.headers.update(SECURITY_HEADERS)
        return response

    return app


def start_service(app: Flask) -> None:
    """Open the claims store and start following the ledger, in the process that serves `app`."""
    service: Service = app.extensions["opos"]
    service.start()


def stop_service(app: Flask) -> None:
    """Stop following and close what `start_service` opened (gunicorn's worker_exit)."""
    service: Service = app.extensions["opos"]
    service.close()
