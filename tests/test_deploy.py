"""deploy/nginx.conf, run as shipped (only the ports changed) in front of a real gunicorn on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LedgerRepo, SshKey, instruction
from opos.model import format_time
from servers import free_port, http, post_json, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[Any]:
    if not Path(NGINX).exists():
        pytest.fail("nginx is not installed: ./dev.sh test installs it (apt-get install nginx-light)")
    started: list[subprocess.Popen[bytes]] = []

    def start(upstream_port: int) -> int:
        port = free_port()
        server = (ROOT / "deploy" / "nginx.conf").read_text()
        assert "listen 80;" in server and "server 127.0.0.1:8080;" in server
        server = server.replace("listen 80;", f"listen 127.0.0.1:{port};")
        server = server.replace("server 127.0.0.1:8080;", f"server 127.0.0.1:{upstream_port};")
        (tmp_path / "opos.conf").write_text(server)
        main = f"""
            daemon off; master_process on; worker_processes 1; user root;
            pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log warn;
            events {{ worker_connections 256; }}
            http {{
                access_log off;
                client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;
                fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;
                proxy_bind 127.0.0.2;  # the proxy's own address, the one the service is told to trust
                include {tmp_path}/opos.conf;
            }}
        """
        (tmp_path / "nginx.conf").write_text(main)
        started.append(subprocess.Popen([NGINX, "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]))
        wait_for_port(port)
        return port

    yield start
    for process in started:
        process.terminate()
        process.wait(timeout=10)


def test_the_shipped_nginx_front_end_passes_the_client_address_and_nothing_forged(
    ledger_repo: LedgerRepo, keys: dict[str, SshKey], start_service: Any, nginx: Any
) -> None:
    now = dt.datetime.now(dt.UTC)
    window = f"\n  start: {format_time(now - dt.timedelta(days=1))}\n  end: {format_time(now + dt.timedelta(days=9))}"
    target = "\n  countries: [IR]\n  networks: [AS197207]\n  max_probes: 5"
    ledger_repo.write("ledger/instructions/capped-one.yaml", instruction("capped-one", window=window, target=target))
    ledger_repo.commit("A capped run", keys["alice"])
    service = start_service(str(ledger_repo.path), trusted_proxies="127.0.0.2/32", claims_rate="0")
    service.wait_for(service.served_commit)
    port = nginx(service.port)
    front = f"http://127.0.0.1:{port}"
    head = http("GET", front + "/v1/head.json")
    assert head.status == 200 and head.body == http("GET", service.url + "/v1/head.json").body
    assert "frame-ancestors" in head.headers["Content-Security-Policy"]
    claim = {"instruction": "capped-one", "country": "IR", "network": "AS197207"}
    first = post_json(
        front + "/v1/claims", {**claim, "probe_id": "through-nginx-0001"}, {"X-Forwarded-For": "192.0.2.1"}
    )
    assert first.json()["granted"]
    forged = post_json(
        front + "/v1/claims", {**claim, "probe_id": "through-nginx-0002"}, {"X-Forwarded-For": "192.0.2.2"}
    )
    assert not forged.json()["granted"] and "127.0.0.1 holds its share" in forged.json()["reason"]
    direct = post_json(service.url + "/v1/claims", {**claim, "probe_id": "around-nginx-0003"},
                       {"X-Forwarded-For": "192.0.2.3"})  # fmt: skip
    assert not direct.json()["granted"]  # from 127.0.0.1, an untrusted peer: the header counts for nothing
    assert http("GET", front + "/metrics").status == 200  # allowed from 127.0.0.1 only
