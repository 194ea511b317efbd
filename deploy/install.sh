#!/usr/bin/env bash
# Install msixd and msixctl on this host and start msixd serving it.
#
#   sudo deploy/install.sh            # install, start, and show `msixctl list`
#   sudo deploy/install.sh --no-start # install only
#
# Installs into a virtual environment at $PREFIX (default /opt/msixd), links
# the entry points into /usr/local/bin, installs the systemd unit, the msixd
# and msixd-admin groups (sysusers.d) and /etc/msixd/msixd.toml.example. With
# systemd running, msixd runs as msixd.service; without it (a container), as a
# background process logging to /var/log/msixd.log.
set -euo pipefail

PREFIX=${PREFIX:-/opt/msixd}
SOCKET=${MSIXD_SOCKET:-/run/msixd/msixd.sock}
start=1
[[ ${1:-} == --no-start ]] && start=0
src=$(cd "$(dirname "$0")/.." && pwd)

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    echo "install.sh: msixd needs Python 3.11 or newer as python3" >&2
    exit 1
}
if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi

echo "installing msixd into $PREFIX"
[[ -x $PREFIX/bin/python ]] || python3 -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
"$PREFIX/bin/pip" install --quiet "$src"
ln -sf "$PREFIX/bin/msixd" /usr/local/bin/msixd
ln -sf "$PREFIX/bin/msixctl" /usr/local/bin/msixctl

# The unit, its groups, its configuration directory and an example configuration.
install -D -m 0644 "$src/systemd/msixd.service" /etc/systemd/system/msixd.service
install -D -m 0644 "$src/systemd/msixd.sysusers.conf" /etc/sysusers.d/msixd.conf
install -D -m 0644 "$src/systemd/msixd.tmpfiles.conf" /etc/tmpfiles.d/msixd.conf
install -D -m 0644 "$src/deploy/msixd.toml.example" /etc/msixd/msixd.toml.example
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers /etc/sysusers.d/msixd.conf
else
    getent group msixd >/dev/null || groupadd --system msixd
    getent group msixd-admin >/dev/null || groupadd --system msixd-admin
fi

[[ $start == 1 ]] || exit 0

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    systemctl enable --now msixd
    systemctl restart msixd
else
    if pid=$(pgrep -f "$PREFIX/bin/msixd" 2>/dev/null); then
        kill $pid && sleep 1
    fi
    echo "no systemd here: starting msixd in the background (log: /var/log/msixd.log)"
    MSIXD_SOCKET=$SOCKET setsid "$PREFIX/bin/msixd" --config /etc/msixd/msixd.toml >>/var/log/msixd.log 2>&1 </dev/null &
fi

for _ in $(seq 50); do
    msixctl --socket "$SOCKET" status >/dev/null 2>&1 && break
    sleep 0.2
done
msixctl --socket "$SOCKET" list
