# Sourced by tests/run.sh and tests/demo.sh: install what is missing, once.

ensure_apt() {
    local missing=() pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        printf 'missing Debian packages (run as root to install them): %s\n' "${missing[*]}" >&2
        return 1
    fi
    printf '=== apt-get install %s\n' "${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # --no-install-recommends: wireguard-tools would otherwise pull in a whole kernel.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {  # ensure_venv DIR PIP-PACKAGES...
    local venv=$1
    shift
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$venv/bin/python" -m pip install -q --upgrade "$@"
    # The console scripts, and a check of pyproject.toml; setuptools' build chatter only on failure.
    local log
    log=$(mktemp)
    if ! "$venv/bin/python" -m pip install -q --no-deps --force-reinstall . >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        return 1
    fi
    rm -f "$log"
}

ensure_venv_once() {  # ensure_venv_once DIR PIP-PACKAGES...: ensure_venv, skipped when done
    # A warm rerun (the demo's) installs nothing again: the stamp records what was installed
    # for which pyproject.toml; anything else changed, and it is done again.
    local venv=$1 stamp want
    stamp="$1/.awgd-installed"
    want=$(printf '%s\n' "$@" | cat - pyproject.toml client/pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
        printf '=== virtualenv %s: ready\n' "$venv"
        return 0
    fi
    printf '=== virtualenv %s\n' "$venv"
    ensure_venv "$@"
    printf '%s\n' "$want" >"$stamp"
}

WIREGUARD_PACKAGES=(wireguard-go wireguard-tools iproute2 iputils-ping)
# Amnezia's server container (tests/test_amnezia.py): the tests start an engine of their own,
# with no firewall rules and no bridge; iptables-save proves the firewall untouched.
DOCKER_PACKAGES=(docker.io busybox-static iptables)
# The exporter's tests (tests/test_exporter.py) start a Prometheus server of their own and run
# its promtool; the packaged service must not start on install (ensure_apt_not_started).
PROMETHEUS_PACKAGES=(prometheus)
# The fleet tests make their own throwaway cluster with postgresql-15's initdb and pg_ctl; the
# packaged cluster must not start on install (ensure_apt_not_started). python3-psycopg2 is
# the driver Debian 12 ships (leg 2); leg 1 takes psycopg from PyPI.
POSTGRES_PACKAGES=(postgresql-15 postgresql-client-15 python3-psycopg2)

ensure_apt_not_started() {
    # Debian starts a package's services on install; docker.service would rewrite the firewall
    # (FORWARD policy DROP, NAT rules) of the machine the tests run on. policy-rc.d says no.
    local policy=/usr/sbin/policy-rc.d made=
    if [ "$(id -u)" -eq 0 ] && [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made=1
    fi
    local status=0
    ensure_apt "$@" || status=$?
    if [ -n "$made" ]; then rm -f "$policy"; fi
    return $status
}
