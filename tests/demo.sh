#!/usr/bin/env bash
# The run command of README.md: real AmneziaWG (amneziawg-go in network namespaces; Debian's
# wireguard-go where amneziawg-go is missing), real traffic, a real awgd, shown by awgctl.
# As root on Debian 12. `--once` prints and exits.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=tests/install.sh
. tests/install.sh
ensure_apt python3-venv python3-pip procps "${WIREGUARD_PACKAGES[@]}"
VENV=${AWGD_DEMO_VENV:-.venv}
# Babel: the bot's texts the demo prints (awgd_client.user_texts).
ensure_venv_once "$VENV" SQLAlchemy croniter sdnotify babel
exec "$VENV/bin/python" tests/demo.py "$@"
