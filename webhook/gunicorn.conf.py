"""gunicorn settings for the OPOS service: `gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'`.

gevent workers, because the service faces the internet without a buffering proxy: a sync worker
spends itself on one connection, so a handful of clients sending a byte every few seconds stop
the service (gunicorn's design notes say sync workers need a proxy in front). An event-loop
worker holds each slow connection in a greenlet: tested with 1,000 slow connections open, the
head is still answered, and every connection must deliver its request headers within `keepalive`
seconds (webhook/gworker.py: gevent's own WSGI server, which answers polls nearly twice as fast as
gunicorn's `gevent` worker, with that deadline added) and its body within webhook.body.BODY_SECONDS.
Every setting can be overridden on the command line or with GUNICORN_CMD_ARGS.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("OPOS_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("OPOS_WORKERS", "4"))
worker_class = "webhook.gworker.BoundedGeventWorker"  # gevent's WSGI server, headers on a deadline
worker_connections = int(os.environ.get("OPOS_WORKER_CONNECTIONS", "1000"))  # per worker
timeout = 30
graceful_timeout = 10
keepalive = 5  # also the time allowed for a request's headers to arrive (async workers)
# One line per request costs a fifth of a worker's time at polling rates; OPOS_ACCESS_LOG=- turns it on.
accesslog = os.environ.get("OPOS_ACCESS_LOG") or None
errorlog = "-"

# prometheus-client's multiprocess mode: each worker writes its samples here; /metrics sums them.
_metrics_dir = Path(os.environ.get("OPOS_DATA_DIR", tempfile.gettempdir())) / "metrics"
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_metrics_dir))
# With --preload the master imports the application (and so the metrics) before on_starting runs.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server):  # type: ignore[no-untyped-def]
    # A configuration that can never publish stops here, with its reason, before any worker starts.
    from webhook.config import ConfigError, load_config
    from webhook.service import check_before_serving

    try:
        check_before_serving(load_config())
    except ConfigError as err:
        server.log.error("the service cannot start: %s", err.diagnostics())
        raise SystemExit(1) from err
    # Samples of an earlier run are stale. The workers' own files appear as they write (each by its pid).
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
    from webhook.gunicorn_log import share_gunicorn_log

    share_gunicorn_log()
    # The worker's own threads and connections start here, after the fork, never in create_app
    # (which with --preload runs in the master before it forks).
    from webhook import start_service

    start_service(worker.wsgi)


def worker_exit(server, worker):  # type: ignore[no-untyped-def]
    from webhook import stop_service

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        stop_service(app)


def child_exit(server, worker):  # type: ignore[no-untyped-def]
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
