#!/usr/bin/env bash
# Installs the two packages, runs them, starts the server as its own user
# the way its systemd unit does, against a simulator, then removes,
# reinstalls and purges, checking what each step keeps. Needs root and a
# machine where the packages may be installed (CI's, or a throwaway one).
#
#   bash pkg/debian/test-install.sh aimlvid_X_arch.deb aimlvid-server_X_arch.deb X.Y.Z
set -euo pipefail
cli_deb=$1 server_deb=$2 version=$3

if [ "$(id -u)" != 0 ]; then
    echo "test-install.sh installs packages: run it as root" >&2
    exit 2
fi
work=$(mktemp -d)
sim_pid= server_pid=
cleanup() {
    [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null || true
    [ -n "$sim_pid" ] && kill "$sim_pid" 2>/dev/null || true
    dpkg --purge aimlvid-server aimlvid >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "test-install: $*" >&2; exit 1; }
step() { echo "test-install: $*"; }
mode_owner() { stat -c '%a %U:%G' "$1"; }

step "install"
dpkg -i "$cli_deb" "$server_deb" >/dev/null
aimlvid --version | grep -qx "aimlvid $version" || fail "aimlvid --version: $(aimlvid --version)"
aimlvid-server --version | grep -qx "aimlvid-server $version" || fail "aimlvid-server --version"
for page in aimlvid aimlvid-server; do
    [ -s "/usr/share/man/man1/$page.1.gz" ] || fail "no man page for $page"
    if command -v man >/dev/null; then
        MANWIDTH=80 man -l "/usr/share/man/man1/$page.1.gz" 2>/dev/null | grep -q "$page" || fail "man -l $page"
    fi
done
[ -s /usr/share/bash-completion/completions/aimlvid ] || fail "no bash completion"
getent passwd aimlvid >/dev/null || fail "postinst made no user"
[ "$(mode_owner /var/lib/aimlvid)" = "750 aimlvid:aimlvid" ] || fail "/var/lib/aimlvid is $(mode_owner /var/lib/aimlvid)"
[ "$(mode_owner /etc/aimlvid/server.env)" = "600 root:root" ] || fail "server.env is $(mode_owner /etc/aimlvid/server.env)"
unit=/lib/systemd/system/aimlvid-server.service
for option in "User=aimlvid" "ProtectSystem=strict" "NoNewPrivileges=yes" "StateDirectory=aimlvid" \
    "EnvironmentFile=/etc/aimlvid/server.env"; do
    grep -qx "$option" "$unit" || fail "the unit lacks $option"
done
if command -v systemd-analyze >/dev/null; then
    # Checks the unit's syntax and that its binaries exist; needs no running systemd.
    systemd-analyze verify "$unit" 2>&1 | { grep -v -e "^$" -e "Failed to connect" -e "not supported" -e "/proc/" -e "Command .man " || true; } >"$work/verify"
    if grep -q "aimlvid-server.service" "$work/verify"; then
        cat "$work/verify" >&2
        fail "systemd-analyze verify found problems in the unit"
    fi
fi

step "start the server as its unit does, against a simulator"
port=$((20000 + RANDOM % 20000))
aimlvid sim --port "$port" --time-scale 1000 -q &
sim_pid=$!
for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$port/v1/models" 2>/dev/null && break
    sleep 0.1
done
cat >>/etc/aimlvid/server.env <<EOF
AIMLAPI_API_KEY=sim-key
AIMLAPI_BASE_URL=http://127.0.0.1:$port
EOF
# The simulator runs 1000 times faster than the API: so must the polls.
cat >>/etc/aimlvid/server.toml <<EOF

[poll]
first_delay_secs = 0.05
interval_secs = 0.05
max_interval_secs = 0.5
EOF
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
# What systemd does: read the environment file as root, change to the
# state directory, drop to the unit's user, run ExecStart.
start_server() {
    (
        set -a
        # shellcheck disable=SC1091
        . /etc/aimlvid/server.env
        set +a
        cd /var/lib/aimlvid
        # shellcheck disable=SC2086
        exec setpriv --reuid=aimlvid --regid=aimlvid --init-groups --no-new-privs -- $exec_start
    ) >"$work/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null http://127.0.0.1:8787/healthz 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$work/server.log" >&2
    fail "the server did not come up"
}
stop_server() {
    kill -TERM "$server_pid"
    wait "$server_pid" || true
    server_pid=
}
start_server
as_service() { setpriv --reuid=aimlvid --regid=aimlvid --init-groups -- "$@"; }
key=$(cd /var/lib/aimlvid && as_service aimlvid-server keys create ci --config /etc/aimlvid/server.toml | head -n 1)
[ -n "$key" ] || fail "keys create printed no key"
grep -q "sim-key" "$work/server.log" && fail "the server logged the upstream key"
# The server sees keys made by the command within a second.
for _ in $(seq 1 50); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $key" \
        "http://127.0.0.1:8787/v2/video/generations?generation_id=none")
    [ "$code" = 404 ] && break
    sleep 0.1
done
[ "$code" = 404 ] || fail "the new key is refused ($code)"
result=$(
    cd "$work"
    AIMLAPI_BASE_URL=http://127.0.0.1:8787 AIMLAPI_API_KEY=$key AIMLVID_TIME_SCALE=1000 AIMLVID_JOURNAL=$work/journal \
        aimlvid --json generate -m google/veo-3.1-t2v-fast -p "packaged" -o "$work/out.mp4" | tail -n 1
) || { cat "$work/server.log" >&2; fail "a generation through the installed server failed"; }
[ -s "$work/out.mp4" ] || fail "no video came back"
id=$(printf '%s' "$result" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p')
[ -n "$id" ] || fail "no generation id in $result"
stop_server
db=/var/lib/aimlvid/aimlvid-server.db
[ "$(mode_owner "$db")" = "600 aimlvid:aimlvid" ] || fail "the database is $(mode_owner "$db")"

step "remove: the binaries go, the database, user and secrets stay"
dpkg -r aimlvid-server >/dev/null
[ ! -e /usr/bin/aimlvid-server ] || fail "the binary is still there"
[ -s "$db" ] || fail "remove deleted the database"
getent passwd aimlvid >/dev/null || fail "remove deleted the user"
grep -q "^AIMLAPI_API_KEY=sim-key" /etc/aimlvid/server.env || fail "remove lost the secrets"

step "reinstall: the same keys and jobs"
dpkg -i "$server_deb" >/dev/null
(cd /var/lib/aimlvid && as_service aimlvid-server keys list --config /etc/aimlvid/server.toml) | grep -q "^ci\b" \
    || fail "the key made before the reinstall is gone"
grep -q "^AIMLAPI_API_KEY=sim-key" /etc/aimlvid/server.env || fail "reinstall replaced the secrets"
grep -q "^first_delay_secs = 0.05" /etc/aimlvid/server.toml || fail "reinstall replaced the edited settings"
start_server
job=$(curl -fsS -H "Authorization: Bearer $key" "http://127.0.0.1:8787/v2/video/generations?generation_id=$id") \
    || fail "the job made before the reinstall is gone"
stop_server
printf '%s' "$job" | grep -q '"status":"completed"' || fail "the job came back as $job"

step "purge: nothing is left"
dpkg --purge aimlvid-server >/dev/null
[ ! -e /var/lib/aimlvid ] || fail "purge left /var/lib/aimlvid"
[ ! -e /etc/aimlvid ] || fail "purge left /etc/aimlvid"
getent passwd aimlvid >/dev/null && fail "purge left the user"
dpkg -r aimlvid >/dev/null
[ ! -e /usr/bin/aimlvid ] || fail "aimlvid is still installed"
step "ok"
