"""gunicorn settings for the OPOS service: `gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'`.

gevent workers, because the service faces the internet without a buffering proxy: a sync worker
spends itself on one connection, so a handful of clients sending a byte every few seconds stop
the service (gunicorn's design notes say sync workers need a proxy in front). An event-loop
worker holds each slow connection in a greenlet: tested with 1,000 slow connections open, the
head is still answered, and every connection must deliver its request headers within `keepalive`
seconds (webhook/gworker.py: gevent's own WSGI server, which answers polls nearly twice as fast as
gunicorn's `gevent` worker, with that deadline added) and its body within OPOS_BODY_SECONDS (408, and
the connection closed). One address block holds at most OPOS_CONNECTIONS_PER_ADDRESS connections
across the workers; past it a connection is closed as it is accepted. gunicorn's control socket is
in the data directory (one per service). Every setting can be overridden on the command line or
with GUNICORN_CMD_ARGS.
"""

import os

from webhook.feed_service.gunicorn_hooks import child_exit, on_starting, post_worker_init, worker_exit

bind = os.environ.get("OPOS_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("OPOS_WORKERS", "4"))
worker_class = "webhook.gworker.BoundedGeventWorker"  # gevent's WSGI server, headers on a deadline
worker_connections = int(os.environ.get("OPOS_WORKER_CONNECTIONS", "4000"))  # per worker: an idle one is a greenlet
timeout = 30
graceful_timeout = 10
keepalive = 5  # also the time allowed for a request's headers to arrive (async workers)
# One line per request costs a fifth of a worker's time at polling rates; OPOS_ACCESS_LOG=- turns it on.
accesslog = os.environ.get("OPOS_ACCESS_LOG") or None
errorlog = "-"
__all__ = ["child_exit", "on_starting", "post_worker_init", "worker_exit"]  # gunicorn calls them by these names
