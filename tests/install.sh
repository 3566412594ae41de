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

WIREGUARD_PACKAGES=(wireguard-go wireguard-tools iproute2 iputils-ping)
