#!/usr/bin/env bash
# Create .venv (or reuse it) and install changewatch with its test tools from pyproject.toml.
# torch/torchvision come from the package index; the CUDA build also runs on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."

# The Flower browser test drives Debian's chromium through its chromedriver (no downloads).
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  SUDO=
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300)
  if command -v apt-get >/dev/null 2>&1 \
    && $SUDO "${apt[@]}" update >/dev/null \
    && $SUDO "${apt[@]}" install -y --no-install-recommends \
      chromium chromium-driver fonts-liberation >/dev/null; then
    :
  else
    echo "warning: could not install chromium and chromium-driver with apt-get;" \
      "the Flower browser test will skip (and fail in CI)" >&2
  fi
fi
# The broker failover tests start their own Redis primary, replica and sentinels, and use
# RabbitMQ (tests/e2e/test_failover.py); the database failover test starts its own etcd
# and two Postgres nodes under Patroni (tests/e2e/test_db_failover.py): Debian's
# packages, installed when missing. Their services are not started here: the tests'
# harness runs private ones on free ports (the packages' own units stay unused).
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ] || missing+=(rabbitmq-server)
command -v patroni >/dev/null 2>&1 || missing+=(patroni)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
# CHANGEWATCH_PRECISION=int8 compiles its model with a C++ compiler (tests/unit/test_int8.py).
command -v g++ >/dev/null 2>&1 || missing+=(g++)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=
  if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
  apt=(env DEBIAN_FRONTEND=noninteractive apt-get -qq -o DPkg::Lock::Timeout=300)
  if ! { command -v apt-get >/dev/null 2>&1 \
    && $SUDO "${apt[@]}" update >/dev/null \
    && $SUDO "${apt[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "warning: could not install ${missing[*]} with apt-get;" \
      "the failover tests will skip (and fail in CI), and INT8 cannot compile" >&2
  fi
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.changewatch-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e '.[worker,plot,test]'
  touch "$stamp"
fi

# The foreign-client test's Node.js service: celery-node, pinned by tests/node/package-lock.json.
if command -v npm >/dev/null 2>&1; then
  if [ ! -d tests/node/node_modules ] || [ tests/node/package-lock.json -nt tests/node/node_modules ]; then
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
  fi
else
  echo "warning: npm not found; the Node.js client test will skip (and fail in CI)" >&2
fi
