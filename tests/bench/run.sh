#!/usr/bin/env bash
# The benchmarks (not part of the test run): as root, on an otherwise idle machine.
# `bash tests/bench/run.sh [--quick] [--json FILE]`
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=tests/install.sh
. tests/install.sh
ensure_apt python3-venv python3-pip procps iperf3 "${WIREGUARD_PACKAGES[@]}"
ensure_apt_not_started "${DOCKER_PACKAGES[@]}" "${POSTGRES_PACKAGES[@]}"
VENV=${AWGD_BENCH_VENV:-.venv}
# Every section's needs: the daemon's, the fleet's (psycopg) and the exporter's (section 9).
ensure_venv "$VENV" SQLAlchemy croniter sdnotify orjson cryptography 'psycopg[binary]' prometheus_client
exec "$VENV/bin/python" tests/bench/bench.py "$@"
