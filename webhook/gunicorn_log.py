"""OPOS's own log under gunicorn: the `opos.*` loggers write where gunicorn's error log goes."""

from __future__ import annotations

import logging


def share_gunicorn_log() -> None:
    """Send `opos.*` records (each sync: its outcome, commit and seconds; each cosigning) to gunicorn's
    handlers, with the same time and level format. Called in each worker after it starts."""
    log = logging.getLogger("opos")
    if not log.handlers:
        for handler in logging.getLogger("gunicorn.error").handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False
