"""gunicorn settings for the OPOS service: `gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'`.

Sync workers: measured on a 2-core machine, they gave steady throughput where gthread varied
threefold between runs. Every setting can be overridden on the command line or with
GUNICORN_CMD_ARGS.
"""

import os
import shutil
import tempfile
from pathlib import Path

bind = os.environ.get("OPOS_BIND", "127.0.0.1:8080")
workers = int(os.environ.get("OPOS_WORKERS", "4"))
worker_class = "sync"
timeout = 30
graceful_timeout = 10
keepalive = 5
accesslog = "-"
errorlog = "-"

# prometheus-client's multiprocess mode: each worker writes its samples here; /metrics sums them.
_metrics_dir = Path(os.environ.get("OPOS_DATA_DIR", tempfile.gettempdir())) / "metrics"
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_metrics_dir))
# With --preload the master imports the application (and so the metrics) before on_starting runs.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server):  # type: ignore[no-untyped-def]
    # Samples of an earlier run are stale. The workers' own files appear as they write (each by its pid).
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker):  # type: ignore[no-untyped-def]
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
