"""Run the feed service with Flask's development server (production runs gunicorn; see the README)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TextIO

from opos.cli._common import Commands, add_command


def register(commands: Commands) -> None:
    serve_parser = add_command(
        commands, "serve", serve,
        help="run the feed service for development",
        description="Run the feed service (follow the ledger, serve the signed feed, grant claims) with Flask's "
        "development server. Configuration: OPOS_* environment variables and an optional file (--config or "
        "OPOS_CONFIG); at least OPOS_REMOTE, OPOS_DATA_DIR and OPOS_FEED_KEY. In production run gunicorn: "
        "gunicorn -c webhook/gunicorn.conf.py 'webhook:create_app()'.",
    )  # fmt: skip
    serve_parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, default=8080, help="the port (default: 8080)")
    serve_parser.add_argument("--config", type=Path, default=os.environ.get("OPOS_CONFIG"), help="a YAML or TOML file")


def serve(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from werkzeug.serving import make_server

    from webhook.feed_service.app import create_app, start_service, stop_service
    from webhook.feed_service.config import load_config
    from webhook.feed_service.service import check_before_serving

    config = load_config(args.config)
    check_before_serving(config)
    app = create_app(config)
    server = make_server(args.host, args.port, app, threaded=True)  # bound now: --port 0 picks a free port
    start_service(app)
    print(f"OPOS service on http://{args.host}:{server.server_port}/ (Ctrl-C stops it)", file=out, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        stop_service(app)
    return 0
