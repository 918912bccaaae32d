"""gunicorn settings for an OPOS auditor: `gunicorn -c webhook/auditor.conf.py 'webhook.auditor:create_app()'`.

The same worker as the feed service (gevent; headers and bodies on a deadline, connections per
address limited: webhook/gworker.py), so that slow clients hold a greenlet, not a worker, and no one
address holds many. Cosignings are serialised by a lock on the state directory, so any
number of workers share one log. Override anything with GUNICORN_CMD_ARGS.
"""

import os

from webhook.auditor.gunicorn_hooks import on_starting, post_worker_init

bind = os.environ.get("OPOS_AUDITOR_BIND", "127.0.0.1:8090")
workers = int(os.environ.get("OPOS_AUDITOR_WORKERS", "2"))
worker_class = "webhook.gworker.BoundedGeventWorker"
worker_connections = int(
    os.environ.get("OPOS_AUDITOR_WORKER_CONNECTIONS", "2000")
)  # per worker: idle ones cost a greenlet
timeout = 60  # a first cosigning fetches and verifies the whole history
graceful_timeout = 10
keepalive = 5
accesslog = os.environ.get("OPOS_ACCESS_LOG") or None
errorlog = "-"
__all__ = ["on_starting", "post_worker_init"]  # gunicorn calls them by these names
