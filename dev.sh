#!/usr/bin/env bash
# Set everything up on a fresh clone, then run the main job or the whole test suite.
#   ./dev.sh demo   a demo ledger with real signed commits: verify it, render and verify its signed feed
#   ./dev.sh test   lint, type checks and every test (slow ones included)
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
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
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

need_debian_packages
setup_venv

case "${1:-}" in
  demo)
    shift
    exec .venv/bin/opos demo "$@"
    ;;
  test)
    shift
    echo "== ruff"
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    echo "== mypy (strict)"
    .venv/bin/mypy
    echo "== pytest"
    exec .venv/bin/pytest -n 2 "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest arguments]" >&2
    exit 2
    ;;
esac
