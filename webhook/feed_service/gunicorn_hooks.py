"""gunicorn's hooks for the feed service (webhook/gunicorn.conf.py holds the settings and imports these).

Importing this module points prometheus-client's multiprocess mode at the data directory.
"""

# mypy: disable-error-code="no-untyped-def"
import os
import shutil
import tempfile
from pathlib import Path

# prometheus-client's multiprocess mode: each worker writes its samples here; /metrics sums them.
_metrics_dir = Path(os.environ.get("OPOS_DATA_DIR", tempfile.gettempdir())) / "metrics"
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_metrics_dir))
# With --preload the master imports the application (and so the metrics) before on_starting runs.
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)


def on_starting(server):
    # A configuration that can never publish stops here, with its reason, before any worker starts.
    from webhook.feed_service.config import load_config
    from webhook.feed_service.errors import ConfigError
    from webhook.feed_service.service import check_before_serving
    from webhook.gunicorn_log import own_control_socket

    try:
        config = load_config()
        check_before_serving(config)
    except ConfigError as err:
        server.log.error("the service cannot start: %s", err.diagnostics())
        raise SystemExit(1) from err
    own_control_socket(server, config.data_dir)
    # What the last run found wrong with the claims database is not news: each worker asks it as it starts.
    (config.data_dir / "claims.problem").unlink(missing_ok=True)
    # Samples of an earlier run are stale. The workers' own files appear as they write (each by its pid).
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def post_worker_init(worker):
    from webhook.gunicorn_log import share_gunicorn_log

    share_gunicorn_log()
    # The worker's own threads and connections start here, after the fork, never in create_app
    # (which with --preload runs in the master before it forks).
    from webhook.feed_service.app import start_service

    start_service(worker.wsgi)


def worker_exit(server, worker):
    from webhook.feed_service.app import stop_service

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        stop_service(app)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
