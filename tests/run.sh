#!/usr/bin/env bash
# The test command of README.md, and what CI runs (.ci/run calls this file).
#
# Installs what it needs (Debian packages when run as root, a virtualenv in .venv), then
# runs two legs of the same suite:
#   1. newest releases from PyPI in .venv: ruff, mypy --strict, pytest;
#   2. Debian 12's own python3-sqlalchemy (1.4.46), python3-croniter (1.3.5),
#      python3-sdnotify and python3-psycopg2 under /usr/bin/python3: pytest.
# Extra arguments go to pytest in both legs, e.g. `bash tests/run.sh -k ledger`.
#
# `bash tests/run.sh --quick -k ledger`: leg 1's pytest alone, on the virtualenv as it is
# (made first if there is none): no apt, no ruff or mypy, no leg 2, no fuzzing, no packaging.
# Plain `.venv/bin/pytest -k ledger` works too (pyproject.toml sets pytest's pythonpath).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=
if [ "${1:-}" = --quick ]; then
    QUICK=1
    shift
fi

say() { printf '\n=== %s\n' "$*"; }

APT_PACKAGES=(
    python3-venv python3-pip procps socat faketime util-linux
    python3-sqlalchemy python3-croniter python3-sdnotify python3-pytest python3-hypothesis
    python3-prometheus-client mkdocs python3-cryptography python3-segno python3-babel zbar-tools
    iperf3
)
PYPI_PACKAGES=(
    SQLAlchemy croniter sdnotify orjson pytest hypothesis ruff mypy types-croniter atheris 'aiogram>=3,<4' prometheus_client 'psycopg[binary]' mkdocs cryptography segno babel
)
VENV=${AWGD_TEST_VENV:-.venv}
PYTEST_TIMEOUT=${AWGD_PYTEST_TIMEOUT:-1500}

export PYTHONPATH="$PWD:$PWD/client:$PWD/fleet"
export PYTHONDONTWRITEBYTECODE=1
if [ -n "$QUICK" ] && [ -x "${AWGD_TEST_VENV:-.venv}/bin/python" ]; then
    exec "${AWGD_TEST_VENV:-.venv}/bin/python" -m pytest -p no:cacheprovider "$@"
fi

# shellcheck source=tests/install.sh
. tests/install.sh
ensure_apt "${APT_PACKAGES[@]}" "${WIREGUARD_PACKAGES[@]}"
ensure_apt_not_started "${DOCKER_PACKAGES[@]}" "${PROMETHEUS_PACKAGES[@]}" "${POSTGRES_PACKAGES[@]}"

printf '\n=== virtualenv %s with the newest releases\n' "$VENV"
ensure_venv "$VENV" "${PYPI_PACKAGES[@]}"
"$VENV/bin/python" -m pip list 2>/dev/null | grep -iE '^(sqlalchemy|croniter|sdnotify|orjson|pytest|hypothesis|psycopg) '

if [ -n "$QUICK" ]; then
    exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"
fi

say "leg 1: ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "leg 1: mypy --strict (awgd/, client/)"
"$VENV/bin/mypy"
say "leg 1: pytest, newest releases ($("$VENV/bin/python" --version))"
timeout "$PYTEST_TIMEOUT" "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"

if [ $# -eq 0 ] || [ -n "${AWGD_FUZZ:-}" ]; then
    say "leg 1: coverage-guided fuzzing (atheris), ${AWGD_FUZZ_SECONDS:-60} s per target"
    AWGD_FUZZ_PYTHON="$VENV/bin/python" bash tests/fuzz/run.sh "${AWGD_FUZZ_SECONDS:-60}"
fi

say "leg 2: pytest, Debian 12 packages ($(/usr/bin/python3 --version))"
dpkg-query -W python3-sqlalchemy python3-croniter python3-sdnotify python3-pytest python3-hypothesis python3-prometheus-client \
    python3-psycopg2
timeout "$PYTEST_TIMEOUT" /usr/bin/python3 -m pytest -p no:cacheprovider "$@"

if [ "$(id -u)" -ne 0 ]; then
    say "packaging proof skipped: it needs root (debootstrap, systemd-nspawn)"
elif [ $# -gt 0 ] && [ -z "${AWGD_PACKAGE:-}" ]; then
    say "packaging proof skipped: pytest arguments were given (AWGD_PACKAGE=1 runs it anyway)"
else
    say "packaging proof (tests/package.sh)"
    bash tests/package.sh
fi
