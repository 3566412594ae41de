#!/usr/bin/env bash
# The packaging proof, run by tests/run.sh as root: build the .deb, lint it, check the unit,
# install the package into a freshly debootstrapped Debian 12, boot that tree with
# systemd-nspawn (systemd 252 as PID 1) and check the service for real, run the test suite
# there against Debian's packaged libraries, then purge and look for leftovers.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== [%3ds] package: %s\n' "$SECONDS" "$*"; }
fail() { printf 'tests/package.sh: %s\n' "$*" >&2; exit 1; }

# shellcheck source=tests/install.sh
. tests/install.sh
ensure_apt debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
    lintian dpkg-dev debootstrap systemd-container systemd python3-sqlalchemy
ensure_apt_not_started "${POSTGRES_PACKAGES[@]}"

MIRROR=${AWGD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
WORK=$(mktemp -d /var/tmp/awgd-package.XXXXXX)
ROOTFS=$WORK/rootfs
NSPAWN_PID=
LEADER=
AMNEZIA_PID=
PG_PID=

cleanup() {
    if [ -n "$LEADER" ] && kill -0 "$LEADER" 2>/dev/null; then
        nsenter -t "$LEADER" -a systemctl poweroff >/dev/null 2>&1 || true
        for _ in $(seq 100); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    [ -n "$NSPAWN_PID" ] && kill -9 "$NSPAWN_PID" 2>/dev/null || true
    if [ -n "$AMNEZIA_PID" ]; then  # closing its stdin stops it; it removes its engine
        exec 7>&-
        for _ in $(seq 600); do kill -0 "$AMNEZIA_PID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$AMNEZIA_PID" 2>/dev/null && { cat "$WORK/amnezia.log"; kill "$AMNEZIA_PID"; }
        wait "$AMNEZIA_PID" || true
    fi
    if [ -n "$PG_PID" ]; then  # likewise the PostgreSQL cluster of awgd-mirror's check
        exec 8>&-
        wait "$PG_PID" || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# pyenv's Python comes first on PATH on these machines and breaks pybuild.
SYSTEM_PATH=/usr/sbin:/usr/bin:/sbin:/bin
nspawn() { PATH=$SYSTEM_PATH systemd-nspawn -q --register=no --keep-unit -D "$ROOTFS" --pipe "$@"; }
inside() { nsenter -t "$LEADER" -a env PATH=$SYSTEM_PATH "$@"; }

step "build the .deb (dpkg-buildpackage)"
mkdir "$WORK/awgd"
git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$WORK/awgd"
(cd "$WORK/awgd" && PATH=$SYSTEM_PATH dpkg-buildpackage -us -uc -b) >"$WORK/build.log" 2>&1 \
    || { cat "$WORK/build.log"; fail "dpkg-buildpackage failed"; }
# One build, four packages, each with its own Depends (debian/control).
PACKAGES=(awgd python3-awgd-client awgd-exporter awgd-mirror)
DEBS=()
for package in "${PACKAGES[@]}"; do
    deb=$(echo "$WORK/${package}"_*_all.deb)
    [ -f "$deb" ] || fail "dpkg-buildpackage made no $package package"
    DEBS+=("$deb")
    dpkg-deb -I "$deb" | sed -n 's/^ \(Package\|Depends\|Recommends\|Suggests\):/  \1:/p'
done
# Each part pulls only its own needs: the daemon neither Prometheus nor PostgreSQL's driver.
daemon_depends=$(dpkg-deb -f "${DEBS[0]}" Depends)
case "$daemon_depends" in *prometheus*|*psycopg*) fail "awgd depends on the exporter's or the mirror's needs: $daemon_depends" ;; esac
client_depends=$(dpkg-deb -f "${DEBS[1]}" Depends)
case "$client_depends" in *sqlalchemy*|*croniter*|*prometheus*) fail "the client library depends on $client_depends" ;; esac

step "lintian: no errors, no warnings"
lintian_out=$(lintian --fail-on error,warning "${DEBS[@]}" 2>&1 | grep -v 'running with root privileges' || true)
echo "${lintian_out:-  (clean)}"
echo "$lintian_out" | grep -qE '^[EW]: ' && fail "lintian reported errors or warnings"

step "systemd-analyze security --offline=true --threshold=20 (awgd, awgd-exporter, awgd-mirror)"
systemd-analyze security --offline=true --threshold=20 systemd/awgd.service | tail -1
systemd-analyze security --offline=true --threshold=20 systemd/awgd-exporter.service | tail -1
systemd-analyze security --offline=true --threshold=20 systemd/awgd-mirror.service | tail -1

step "debootstrap a minimal Debian 12"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus bookworm "$ROOTFS" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; fail "debootstrap failed"; }
echo "deb $MIRROR bookworm main" >"$ROOTFS/etc/apt/sources.list"

step "apt-get install the four packages inside (dependencies from Debian)"
cp "${DEBS[@]}" "$ROOTFS/root/"
nspawn sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '/root/%s ' "${DEBS[@]##*/}") wireguard-tools python3-pytest python3-hypothesis socat faketime iproute2 passwd curl \
    python3-psycopg2 python3-cryptography python3-segno python3-babel zbar-tools iperf3 iputils-ping" \
    >"$WORK/install.log" 2>&1 || { tail -30 "$WORK/install.log"; fail "installing the package failed"; }
grep -E "^Setting up (python3-)?awgd|Creating group" "$WORK/install.log" | sed 's/^/  /'

step "systemd-analyze verify prints nothing"
verify_out=$(systemd-analyze verify --root="$ROOTFS" --man=no awgd.service awgd-exporter.service awgd-mirror.service 2>&1 || true)
[ -z "$verify_out" ] || { echo "$verify_out"; fail "systemd-analyze verify complained"; }
echo "  (clean)"

# Amnezia's container on a Docker engine of the test's own (tests/helpers/amnezia.py), its
# socket bound into the booted tree as /run/docker.sock, with the docker CLI (it links only
# libc): awgd under its unit must reach the interface with `docker exec`.
AMNEZIA_BIND=()
amnezia_missing=$(python3 -c 'import sys; sys.path[:0] = ["tests/helpers"]; import amnezia, wgbed
print(amnezia.available() or wgbed.available(wgbed.AMNEZIAWG) or "")')
if [ -z "$amnezia_missing" ]; then
    step "a Docker engine with Amnezia's container amnezia-awg (AmneziaWG 3.1)"
    mkfifo "$WORK/amnezia.stop"
    python3 tests/helpers/amnezia.py serve "$WORK/amnezia.json" <"$WORK/amnezia.stop" >"$WORK/amnezia.log" 2>&1 &
    AMNEZIA_PID=$!
    exec 7>"$WORK/amnezia.stop"
    for _ in $(seq 1200); do
        [ -e "$WORK/amnezia.json" ] && break
        kill -0 "$AMNEZIA_PID" 2>/dev/null || break
        sleep 0.1
    done
    [ -e "$WORK/amnezia.json" ] || { cat "$WORK/amnezia.log"; fail "Amnezia's container did not come up"; }
    AMNEZIA_BIND=(--bind="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["socket"])' \
        "$WORK/amnezia.json")":/run/docker.sock)
    cp /usr/bin/docker "$ROOTFS/usr/local/bin/docker"
    echo "  (up)"
fi

step "boot the tree with systemd-nspawn -b"
PATH=$SYSTEM_PATH systemd-nspawn -q --register=no --keep-unit -D "$ROOTFS" "${AMNEZIA_BIND[@]}" -b \
    >"$WORK/boot.log" 2>&1 7>&- &
NSPAWN_PID=$!
for _ in $(seq 300); do
    LEADER=$(pgrep -P "$NSPAWN_PID" -x systemd || true)
    [ -n "$LEADER" ] && break
    sleep 0.1
done
[ -n "$LEADER" ] || { cat "$WORK/boot.log"; fail "the container's systemd did not start"; }
state=
for _ in $(seq 600); do  # until the container's systemd answers and has finished booting
    state=$(inside systemctl is-system-running 2>/dev/null || true)
    case "$state" in running | degraded) break ;; esac
    sleep 0.1
done
echo "  system: $state"
case "$state" in running | degraded) ;; *) cat "$WORK/boot.log"; fail "the container did not finish booting" ;; esac

step "awgd is active (READY=1 arrived)"
inside systemctl is-active awgd || { inside journalctl -u awgd --no-pager | tail -20; fail "awgd is not active"; }
inside systemctl show -p Type -p NRestarts -p StatusText awgd | sed 's/^/  /'

step "the sandbox lets awgd read the boot id (how it tells a reboot, accounting rule 1)"
inside systemctl restart awgd
inside awgctl sample >/dev/null
boot_warning=$(inside journalctl -u awgd --no-pager -o cat | grep "boot id unknown" || true)
[ -z "$boot_warning" ] || fail "awgd cannot read the boot id under its unit: $boot_warning"
echo "  (read)"

step "awgd dumps no core (it holds keys during an edit)"
core=$(inside systemctl show -p LimitCORE awgd)
echo "  $core"
[ "$core" = "LimitCORE=0" ] || fail "awgd.service does not set LimitCORE=0: $core"

step "the socket is srw-rw---- root awgd"
perms=$(inside stat -c '%A %U %G' /run/awgd/awgd.sock)
echo "  $perms"
[ "$perms" = "srw-rw---- root awgd" ] || fail "unexpected socket permissions: $perms"

step "a member of group awgd runs awgctl status; a user outside is refused"
inside useradd -M -G awgd alice
inside useradd -M bob
inside runuser -u alice -- awgctl status | sed 's/^/  /'
set +e
refused=$(inside runuser -u bob -- awgctl status 2>&1)
code=$?
set -e
echo "  bob: exit $code: $refused"
[ "$code" -eq 3 ] || fail "a user outside group awgd was not refused (exit $code)"

step "a member of awgd-admin manages; a member of awgd only reads, and is told which setting grants it"
inside useradd -M -G awgd,awgd-admin carol
nobody_key=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=
# The call itself (awgctl would first look the key up, a read): its refusal or its answer.
manage='import sys
from awgd_client import AwgdError, Client
try:
    Client().change("plan.clear", {"interface": "wg0", "public_key": sys.argv[1]})
except AwgdError as exc:
    print(exc)'
set +e
denied=$(inside runuser -u alice -- /usr/bin/python3 -c "$manage" "$nobody_key" 2>&1)
managed=$(inside runuser -u carol -- /usr/bin/python3 -c "$manage" "$nobody_key" 2>&1)
set -e
echo "  alice: $denied"
echo "  carol: $managed"
case "$denied" in *"rpc.admin_groups (awgd-admin)"*) ;; *) fail "alice's refusal does not name rpc.admin_groups" ;; esac
case "$managed" in *"permission denied"*|"") fail "a member of awgd-admin could not manage: $managed" ;; esac

step "systemctl reload awgd"
inside systemctl reload awgd
inside systemctl is-active awgd
inside journalctl -u awgd --no-pager -o cat | grep -q "config reloaded" || fail "no reload in the journal"

if [ -n "$AMNEZIA_PID" ]; then
    step "under its unit, awgd reads Amnezia's container with docker exec (tool auto, names)"
    cp "$ROOTFS/etc/awgd/awgd.toml" "$WORK/awgd.toml.orig"
    printf '[wireguard]\nexec_prefix = ["docker", "exec", "amnezia-awg"]\n' >"$ROOTFS/etc/awgd/awgd.toml"
    inside systemctl restart awgd
    inside awgctl sample >/dev/null || { inside journalctl -u awgd --no-pager | tail -20; fail "no sample through docker exec"; }
    inside awgctl status | sed 's/^/  /'
    peers=$(inside awgctl peers)
    echo "$peers" | sed 's/^/  /'
    python3 - "$WORK/amnezia.json" "$(inside awgctl --json status)" "$(inside awgctl --json peers)" <<'PY' \
        || fail "awgd under its unit did not read the container as expected"
import json, sys
manifest, status, peers = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), json.loads(sys.argv[3])
assert status["healthy"] and status["tool"] == "awg", status
assert [i["name"] for i in status["interfaces"]] == ["wg0"], status["interfaces"]
got = {p["public_key"]: (p.get("label"), p["period"]["rx_bytes"]) for p in peers["peers"]}
want = {p["public_key"]: p["label"] for p in manifest["peers"]}
assert {k: v[0] for k, v in got.items()} == want, got
assert all(rx > 0 for _, rx in got.values()), got
PY
    step "under its unit, awgctl peer add/block/remove change Amnezia's container (docker exec -i, wg0.conf, clientsTable)"
    newkey=$(wg genkey | wg pubkey)
    (umask 077 && wg genpsk >"$WORK/psk")
    inside awgctl peer add "$newkey" -i wg0 --preshared-key-file - --label "Added under the unit" <"$WORK/psk" \
        | sed 's/^/  /' || { inside journalctl -u awgd --no-pager | tail -20; fail "peer add under the unit failed"; }
    inside /usr/local/bin/docker exec amnezia-awg grep -q "PresharedKey = $(cat "$WORK/psk")" /opt/amnezia/awg/wg0.conf \
        || fail "the added peer's preshared key is not in wg0.conf"
    inside /usr/local/bin/docker exec amnezia-awg grep -q "Added under the unit" /opt/amnezia/awg/clientsTable \
        || fail "clientsTable was not kept in step"
    inside awgctl peer block "$newkey" | sed 's/^/  /'
    inside /usr/local/bin/docker exec amnezia-awg awg show wg0 allowed-ips | grep -q "^$newkey	(none)$" \
        || fail "the blocked peer still has allowed IPs"
    inside awgctl peer remove "$newkey" --yes | sed 's/^/  /'
    if inside /usr/local/bin/docker exec amnezia-awg grep -q "$newkey" /opt/amnezia/awg/wg0.conf; then fail "the removed peer is still in wg0.conf"; fi
    if inside journalctl -u awgd --no-pager -o cat | grep -qF "$(cat "$WORK/psk")"; then fail "the preshared key reached the journal"; fi
    denied=$(inside journalctl -u awgd --no-pager -o cat | grep -iE "permission denied|operation not permitted" || true)
    [ -z "$denied" ] || fail "the sandbox got in the way of docker exec: $denied"
    cp "$WORK/awgd.toml.orig" "$ROOTFS/etc/awgd/awgd.toml"
    inside systemctl restart awgd
else
    step "docker exec under the unit: skipped ($amnezia_missing)"
fi

step "awgd-exporter: disabled as installed; started, it serves awgd's metrics to curl with its token"
enabled=$(inside systemctl is-enabled awgd-exporter 2>/dev/null || true)
[ "$enabled" = disabled ] || fail "awgd-exporter.service is $enabled, not disabled"
token_perms=$(inside stat -c '%a %U' /etc/awgd/exporter-token)
[ "$token_perms" = "600 root" ] || fail "the exporter's token is $token_perms, not 600 root"
inside systemctl start awgd-exporter
scraped=
for _ in $(seq 100); do
    scraped=$(inside sh -c 'curl -fsS -H "Authorization: Bearer $(cat /etc/awgd/exporter-token)" http://127.0.0.1:9586/metrics' 2>/dev/null || true)
    [ -n "$scraped" ] && break
    sleep 0.1
done
code=$(inside curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9586/metrics || true)
[ "$code" = 401 ] || fail "awgd-exporter answered $code to a request without the token, not 401"
echo "$scraped" | grep -qx 'awgd_up 1.0' || { echo "$scraped" | head; inside journalctl -u awgd-exporter --no-pager | tail; \
    fail "awgd-exporter did not serve awgd_up 1"; }
echo "$scraped" | grep -E '^(awgd_up|awgd_healthy|awgd_info)' | sed 's/^/  /'
inside systemctl show -p User -p SupplementaryGroups -p DynamicUser awgd-exporter | sed 's/^/  /'
inside systemctl stop awgd-exporter

step "awgd-mirror: disabled as installed; started, it mirrors this node into a PostgreSQL"
enabled=$(inside systemctl is-enabled awgd-mirror 2>/dev/null || true)
[ "$enabled" = disabled ] || fail "awgd-mirror.service is $enabled, not disabled"
# A throwaway cluster on the host (the booted tree shares its network), with the schema and
# the node's role; the password reaches the unit as a systemd credential.
mkfifo "$WORK/pg.stop"
/usr/bin/python3 tests/helpers/postgres.py serve "$WORK/pg.json" <"$WORK/pg.stop" >"$WORK/pg.log" 2>&1 &
PG_PID=$!
exec 8>"$WORK/pg.stop"
for _ in $(seq 600); do
    [ -e "$WORK/pg.json" ] && break
    kill -0 "$PG_PID" 2>/dev/null || break
    sleep 0.1
done
[ -e "$WORK/pg.json" ] || { cat "$WORK/pg.log"; fail "the PostgreSQL cluster did not come up"; }
pg_field() { /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$WORK/pg.json" "$1"; }
printf '[fleet]\nurl = "postgresql://pkg-node@127.0.0.1:%s/awgd"\nnode = "pkg-node"\n' "$(pg_field port)" \
    >"$ROOTFS/etc/awgd/mirror.toml"
(umask 077 && pg_field password >"$ROOTFS/etc/awgd/fleet-password")
mkdir -p "$ROOTFS/etc/systemd/system/awgd-mirror.service.d"
printf '[Service]\nLoadCredential=fleet-password:/etc/awgd/fleet-password\n' \
    >"$ROOTFS/etc/systemd/system/awgd-mirror.service.d/credential.conf"
inside systemctl daemon-reload
inside systemctl start awgd-mirror
mirrored=
for _ in $(seq 300); do
    mirrored=$(psql -X -At "$(pg_field admin_url)" -c "SELECT node, version FROM awgd.awgd_fleet_nodes" 2>/dev/null || true)
    [ -n "$mirrored" ] && break
    sleep 0.1
done
[ -n "$mirrored" ] || { inside journalctl -u awgd-mirror --no-pager | tail; fail "awgd-mirror wrote nothing"; }
echo "  awgd_fleet_nodes: $mirrored"
inside systemctl show -p User -p SupplementaryGroups -p DynamicUser awgd-mirror | sed 's/^/  /'
# Its first round passes the (empty) fleet plans on: awgd takes them from the awgd-fleet group.
if inside journalctl -u awgd-mirror --no-pager | grep -q "does not take fleet plans"; then
    fail "awgd refused fleet.sync from awgd-mirror (the awgd-fleet group, rpc.fleet_groups)"
fi
inside systemctl stop awgd-mirror
rm -r "$ROOTFS/etc/awgd/mirror.toml" "$ROOTFS/etc/awgd/fleet-password" "$ROOTFS/etc/systemd/system/awgd-mirror.service.d"
inside systemctl daemon-reload
exec 8>&-
wait "$PG_PID" || { cat "$WORK/pg.log"; fail "the PostgreSQL cluster did not stop cleanly"; }
PG_PID=

step "the watchdog restarts a daemon whose loop is stopped (SIGSTOP)"
mkdir -p "$ROOTFS/etc/systemd/system/awgd.service.d"
printf '[Service]\nWatchdogSec=4s\n' >"$ROOTFS/etc/systemd/system/awgd.service.d/test-watchdog.conf"
inside systemctl daemon-reload
inside systemctl restart awgd
before=$(inside systemctl show -p MainPID --value awgd)
inside kill -STOP "$before"
restarted=
for _ in $(seq 300); do
    now=$(inside systemctl show -p MainPID --value awgd)
    if [ "$now" != "$before" ] && [ "$now" != 0 ] && inside systemctl is-active -q awgd; then restarted=$now; break; fi
    sleep 0.1
done
[ -n "$restarted" ] || fail "the watchdog did not restart awgd"
inside journalctl -u awgd --no-pager -o cat | grep -i "watchdog" | tail -1 | sed 's/^/  /'
echo "  restarted: main pid $before -> $restarted"
rm "$ROOTFS/etc/systemd/system/awgd.service.d/test-watchdog.conf"
rmdir "$ROOTFS/etc/systemd/system/awgd.service.d"
inside systemctl daemon-reload

step "systemctl stop awgd is clean"
inside systemctl stop awgd
result=$(inside systemctl show -p Result --value awgd)
echo "  result: $result"
[ "$result" = success ] || fail "awgd did not stop cleanly ($result)"
inside test ! -e /run/awgd/awgd.sock || fail "the socket was left behind"
inside journalctl -u awgd --no-pager -o cat | grep -q "^stopped" || fail "no clean stop in the journal"

step "the test suite, against Debian's packaged libraries"
mkdir "$ROOTFS/root/awgd-tests"
cp -r tests pyproject.toml "$ROOTFS/root/awgd-tests/"
inside sh -c 'cd /root/awgd-tests && python3 -m pytest -q -p no:cacheprovider -x tests' | tail -5
rm -rf "$ROOTFS/root/awgd-tests"

step "apt-get purge awgd takes the exporter and the mirror with it; then the library; nothing left"
inside sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq awgd' >"$WORK/purge.log" 2>&1 \
    || { cat "$WORK/purge.log"; fail "purge failed"; }
for package in awgd-exporter awgd-mirror; do
    state=$(inside dpkg-query -W -f '${db:Status-Status}' "$package" 2>/dev/null || true)
    [ -z "$state" ] || [ "$state" = not-installed ] || fail "$package is $state after purging awgd"
done
inside sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq python3-awgd-client' >>"$WORK/purge.log" 2>&1 \
    || { cat "$WORK/purge.log"; fail "purging the client library failed"; }
left=$(cd "$ROOTFS" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./var/lib/dpkg \
    -o -path ./var/cache/apt -o -path ./var/lib/apt -o -path ./var/log \) -prune -o -iname '*awgd*' -print \
    | grep -v "^./root/[a-z0-9-]*awgd[a-z-]*_[^/]*_all\.deb$" || true)
[ -z "$left" ] || { echo "$left"; fail "files left after purge"; }
echo "  (nothing left)"

step "done"
