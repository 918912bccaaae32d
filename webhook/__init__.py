"""OPOS's two web services, each in its own room, and what they share to run under gunicorn.

    feed_service/   the feed service: follows the ledger, serves the signed feed, grants claims, the log
                    (gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()')
    auditor/        an auditor: cosigns feeds that are exactly the public ledger
                    (gunicorn -c webhook/auditor.conf.py 'webhook.auditor:create_app()')
    gworker.py      the gevent worker both use (request headers on a deadline); gunicorn_log.py: one log

Both are web concerns only (routes, request parsing, answers, configuration): following and
publishing the ledger is opos.publish, auditing is opos.audit.
"""

from typing import Any

_APPLICATION = ("create_app", "start_service", "stop_service")  # what deployments and the hooks name


def __getattr__(name: str) -> Any:
    """`webhook:create_app()` resolves here, lazily: gunicorn's master imports this package (for the conf's
    hooks) before it may import the application, whose metrics read PROMETHEUS_MULTIPROC_DIR on import."""
    if name in _APPLICATION:
        from webhook.feed_service import app

        return getattr(app, name)
    raise AttributeError(f"module 'webhook' has no attribute {name!r}")
