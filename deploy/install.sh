#!/usr/bin/env bash
# Install msixd and msixctl on this host and start msixd serving it.
#
#   sudo deploy/install.sh            # install, start, and show `msixctl list`
#   sudo deploy/install.sh --no-start # install only
#
# Installs into a virtual environment at $PREFIX (default /opt/msixd) built
# with the system's Python, links the entry points into /usr/local/bin,
# installs the systemd unit, the msixd and msixd-admin groups (sysusers.d),
# the vfio-pci entry of modules-load.d and /etc/msixd/msixd.toml.example.
# With systemd running, msixd runs as msixd.service; in a chroot (an image being
# built) the unit is enabled, to start at the next boot; without systemd (a
# container), msixd runs as a background process logging to /var/log/msixd.log.
set -euo pipefail
# Members of the msixd groups run the installed msixctl: everything installed is world-readable.
umask 022

PREFIX=${PREFIX:-/opt/msixd}
SOCKET=${MSIXD_SOCKET:-/run/msixd/msixd.sock}
start=1
[[ ${1:-} == --no-start ]] && start=0
src=$(cd "$(dirname "$0")/.." && pwd)

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: run as root (sudo $0)" >&2
    exit 1
fi

# The system's Python, never the first python3 on PATH: a per-user interpreter
# (pyenv, ~/.local) lies in a home directory that the msixd groups' members
# cannot enter, and that the unit hides from msixd itself (ProtectHome=yes).
PYTHON=/usr/bin/python3
if [[ ! -x $PYTHON ]]; then
    apt-get update -qq && apt-get install -y -qq python3 python3-venv >/dev/null
fi
$PYTHON -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || {
    echo "install.sh: msixd needs Python 3.11 or newer as $PYTHON (it is $($PYTHON --version 2>&1))" >&2
    exit 1
}
if ! $PYTHON -c 'import ensurepip, venv' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi

echo "installing msixd into $PREFIX"
# An environment an earlier install built from another interpreter is rebuilt.
if [[ -f $PREFIX/pyvenv.cfg ]] && ! grep -qx "home = $(dirname "$PYTHON")" "$PREFIX/pyvenv.cfg"; then
    $PYTHON -m venv --clear "$PREFIX"
fi
[[ -x $PREFIX/bin/python ]] || $PYTHON -m venv "$PREFIX"
"$PREFIX/bin/pip" install --quiet --upgrade pip
"$PREFIX/bin/pip" install --quiet "$src"
ln -sf "$PREFIX/bin/msixd" /usr/local/bin/msixd
ln -sf "$PREFIX/bin/msixctl" /usr/local/bin/msixctl

# The unit, its groups, its configuration directory and an example configuration.
install -D -m 0644 "$src/systemd/msixd.service" /etc/systemd/system/msixd.service
install -D -m 0644 "$src/systemd/msixd.sysusers.conf" /etc/sysusers.d/msixd.conf
install -D -m 0644 "$src/systemd/msixd.tmpfiles.conf" /etc/tmpfiles.d/msixd.conf
install -D -m 0644 "$src/deploy/msixd.toml.example" /etc/msixd/msixd.toml.example
install -D -m 0644 "$src/systemd/msixd.modules-load.conf" /etc/modules-load.d/msixd.conf
if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers /etc/sysusers.d/msixd.conf
else
    getent group msixd >/dev/null || groupadd --system msixd
    getent group msixd-admin >/dev/null || groupadd --system msixd-admin
fi

[[ $start == 1 ]] || exit 0

# In a chroot, a process started here would keep running on the host, chrooted:
# enable the unit for the image's own boot instead.
in_chroot() {
    local pid1
    if pid1=$(stat -Lc %d:%i /proc/1/root/. 2>/dev/null); then
        [[ $pid1 != "$(stat -Lc %d:%i /)" ]]  # / is not PID 1's root
    else
        # PID 1's root is not ours to read (a sandbox), or /proc is not mounted.
        # mountinfo shows mount points relative to our root and leaves out those
        # outside it (proc(5)): in a chroot into a directory, none is at "/".
        ! awk '$5 == "/" { found = 1 } END { exit !found }' /proc/self/mountinfo 2>/dev/null
    fi
}
if in_chroot; then
    if command -v systemctl >/dev/null; then
        systemctl enable msixd
        echo "in a chroot: msixd.service is enabled and starts at the next boot"
    else
        echo "in a chroot without systemd: start msixd where this image runs"
    fi
    exit 0
fi

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
    # Load vfio-pci now rather than at the next boot: the unit needs it before it starts.
    systemctl restart systemd-modules-load.service
    systemctl enable msixd
    systemctl restart msixd   # returns once msixd is ready (Type=notify)
else
    modprobe vfio-pci 2>/dev/null || echo "note: could not load vfio-pci here; load it on the host to bind devices"
    if pid=$(pgrep -f "$PREFIX/bin/msixd" 2>/dev/null); then
        kill $pid && sleep 1
    fi
    echo "no systemd here: starting msixd in the background (log: /var/log/msixd.log)"
    MSIXD_SOCKET=$SOCKET setsid "$PREFIX/bin/msixd" --config /etc/msixd/msixd.toml >>/var/log/msixd.log 2>&1 </dev/null &
fi

for _ in $(seq 600); do  # up to 2 minutes: a slow machine takes tens of seconds to start msixd
    msixctl --socket "$SOCKET" status >/dev/null 2>&1 && break
    sleep 0.2
done
msixctl --socket "$SOCKET" list
