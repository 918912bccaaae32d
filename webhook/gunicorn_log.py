"""What both services set up in gunicorn: OPOS's own log where gunicorn's goes, and a control socket of their own."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from gunicorn.config import ControlSocket

# A Unix socket's path has room for 108 bytes; a longer one fails to bind (gunicorn warns and goes on).
_SOCKET_PATH_BYTES = 100


def share_gunicorn_log() -> None:
    """Send `opos.*` records (each sync: its outcome, commit and seconds; each cosigning) to gunicorn's
    handlers, with the same time and level format. Called in each worker after it starts."""
    log = logging.getLogger("opos")
    if not log.handlers:
        for handler in logging.getLogger("gunicorn.error").handlers:
            log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def own_control_socket(server: Any, directory: Path) -> None:
    """gunicorn's control socket in this service's own directory, not the one in $HOME that every gunicorn
    on the host would share and fight over; off when that path is too long for a socket. A path given
    with --control-socket is kept. Called from on_starting, before the socket is opened."""
    if server.cfg.control_socket != ControlSocket.default:
        return
    path = directory.resolve() / "gunicorn.ctl"
    if len(str(path).encode()) > _SOCKET_PATH_BYTES:
        server.log.info("control socket off: %s is too long a path for a socket (give --control-socket)", path)
        server.cfg.set("control_socket_disable", True)
        return
    directory.mkdir(parents=True, exist_ok=True)
    server.cfg.set("control_socket", str(path))
