#!/usr/bin/env bash
# Set everything up on a fresh clone, then run the main job or the whole test suite.
#   ./dev.sh demo   a demo ledger with real signed commits: verify it, render and verify its signed feed
#   ./dev.sh test   lint, type checks and every test (slow ones included)
#   ./dev.sh bench  the performance figures, each beside its reference: writes docs/performance.md
set -euo pipefail
cd "$(dirname "$0")"

need_debian_packages() {
  local missing=()
  command -v git >/dev/null || missing+=(git)
  command -v ssh-keygen >/dev/null || missing+=(openssh-client)
  command -v python3 >/dev/null || missing+=(python3)
  if command -v python3 >/dev/null && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
      echo "dev.sh: please install: ${missing[*]}" >&2
      exit 1
    fi
    echo "dev.sh: installing ${missing[*]} with apt-get" >&2
    apt_install "${missing[@]}"
  fi
  if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "dev.sh: OPOS needs Python 3.11 or newer; python3 is $(python3 --version)" >&2
    exit 1
  fi
}

setup_venv() {
  local stamp=.venv/.opos-installed
  local wanted
  wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$wanted" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[test]'
    echo "$wanted" > "$stamp"
  fi
}

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "$@"
}

# The PostgreSQL tests use $OPOS_TEST_POSTGRES_URL (default: the server on 127.0.0.1:5432). When none
# answers there, start a throwaway server from the installed binaries (installing them when missing).
postgres_dir=""
postgres_bin=""
postgres_as=()
stop_postgres() {
  "${postgres_as[@]}" "$postgres_bin/pg_ctl" -D "$postgres_dir/data" -m fast stop >/dev/null || true
  rm -rf "$postgres_dir"
}
ensure_postgres() {
  local url="${OPOS_TEST_POSTGRES_URL:-postgresql://postgres@127.0.0.1:5432/test}"
  if .venv/bin/python -c 'import sys, psycopg; psycopg.connect(sys.argv[1], connect_timeout=3).close()' "$url" 2>/dev/null; then
    export OPOS_TEST_POSTGRES_URL="$url"
    return
  fi
  postgres_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$postgres_bin" ]; then
    echo "dev.sh: no PostgreSQL at $url; installing one to start a throwaway server" >&2
    apt_install postgresql
    postgres_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  postgres_dir=$(mktemp -d /tmp/opos-postgres.XXXXXX)
  local port
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres "$postgres_dir"
    postgres_as=(runuser -u postgres --)
  fi
  trap stop_postgres EXIT
  "${postgres_as[@]}" "$postgres_bin/initdb" -D "$postgres_dir/data" -A trust -U postgres >/dev/null
  "${postgres_as[@]}" "$postgres_bin/pg_ctl" -D "$postgres_dir/data" -l "$postgres_dir/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $postgres_dir" start >/dev/null
  export OPOS_TEST_POSTGRES_URL="postgresql://postgres@127.0.0.1:$port/postgres"
  echo "dev.sh: started a throwaway PostgreSQL at $OPOS_TEST_POSTGRES_URL" >&2
}

need_debian_packages
setup_venv

case "${1:-}" in
  demo)
    shift
    exec .venv/bin/opos demo --serve "$@"
    ;;
  test)
    shift
    echo "== ruff"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    echo "== mypy (strict)"
    .venv/bin/mypy
    echo "== import-linter (the layers)"
    .venv/bin/lint-imports --no-cache
    echo "== sizes (modules of at most 400 lines, functions of at most 50)"
    .venv/bin/python .ci/sizes.py
    echo "== bandit (each finding fixed, or justified where it is silenced)"
    .venv/bin/bandit -q -r opos webhook
    echo "== pip-audit (known vulnerabilities in what is installed)"
    # It asks PyPI's vulnerability data; where that cannot be reached it says so per package and
    # finds nothing, so only a known vulnerability fails the run.
    audit_status=0
    .venv/bin/pip-audit --skip-editable --progress-spinner off > .venv/pip-audit.txt 2>&1 || audit_status=$?
    grep -v "could not be audited" .venv/pip-audit.txt || true
    [ "$audit_status" -eq 0 ]
    echo "== pytest"
    # the log pages are tested in a real browser: Debian's chromium (or a Chrome that is already there)
    command -v chromium >/dev/null || command -v google-chrome >/dev/null || apt_install chromium
    # deploy/nginx.conf is tested in front of the service; wrk drives the bounded load test
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
    command -v wrk >/dev/null || apt_install wrk
    ensure_postgres
    .venv/bin/pytest -n 2 "$@"
    ;;
  bench)
    shift
    # wrk drives the polling figures and nginx is their reference; PostgreSQL's claims row needs a server
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx-light
    command -v wrk >/dev/null || apt_install wrk
    ensure_postgres
    .venv/bin/python bench/run.py "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest arguments] | ./dev.sh bench [--quick]" >&2
    exit 2
    ;;
esac
