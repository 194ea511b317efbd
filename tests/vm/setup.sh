#!/usr/bin/env bash
# Fetch and cache what the real-kernel bench needs; idempotent, seconds when warm.
#
#   sudo tests/vm/setup.sh
#
# - qemu-system-x86, kmod and busybox-static from Debian's packages;
# - two stock Debian kernels, unpacked with dpkg -x (no install scripts run):
#   bookworm's 6.1 and bookworm-backports' 6.12, the newest of each;
# - their modules made visible at /lib/modules/<version> (the guest boots on
#   the host's root file system) and indexed with depmod;
# - a Debian bookworm root file system built with mmdebstrap from Debian's
#   packages, for the guest that boots with systemd as PID 1 (tests/vm/systemd_guest.py
#   copies it for each test session and installs the project into the copy).
# virtme-ng (vng) comes from PyPI with the project's test extra.
# Writes $CACHE/kernels.env: one line per kernel, KERNEL_<tag>=<vmlinuz path>.
set -euo pipefail

# Under /opt: the guest sees the host's /opt (through an overlay) but not its
# /var/cache, and virtme-ng links the modules from where the image lies.
CACHE=${MSIXD_BENCH_CACHE:-/opt/msixd-bench}
mkdir -p "$CACHE"

if [[ $EUID -ne 0 ]]; then
    echo "tests/vm/setup.sh: run as root" >&2
    exit 1
fi

missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v depmod >/dev/null || missing+=(kmod)
command -v busybox >/dev/null || missing+=(busybox-static)  # vng builds the guest's initramfs with it
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v mke2fs >/dev/null && command -v debugfs >/dev/null || missing+=(e2fsprogs)  # the systemd guest's disk
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# The Debian mirror this machine already uses, for the backports suite.
mirror=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/\?$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
[[ -n $mirror ]] || mirror=$(sed -n 's/^deb \(http[^ ]*\/debian\)\/\? bookworm .*/\1/p' /etc/apt/sources.list 2>/dev/null | head -n1)
[[ -n $mirror ]] || { echo "setup.sh: cannot find this machine's Debian mirror" >&2; exit 1; }

# A private apt configuration that knows only bookworm and bookworm-backports:
# the machine's own sources list is left alone.
apt_dir=$CACHE/apt
mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
echo "deb $mirror bookworm main
deb $mirror bookworm-updates main
deb ${mirror}-security bookworm-security main
deb $mirror bookworm-backports main" > "$apt_dir/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
          -o APT::Get::List-Cleanup=0)

newest() {  # newest package name matching an extended regex, from the private lists
    apt-cache "${apt_opts[@]}" search --names-only "$1" | awk '{print $1}' | sort -V | tail -n1
}

fetch_kernel() {  # tag regex
    local tag=$1 regex=$2 pkg dir version
    if [[ -f $CACHE/$tag.pkg ]]; then
        pkg=$(cat "$CACHE/$tag.pkg")
    else
        [[ -n $(ls "$apt_dir/lists" 2>/dev/null | grep -v partial) ]] || apt-get "${apt_opts[@]}" update -qq
        pkg=$(newest "$regex")
        [[ -n $pkg ]] || { echo "setup.sh: no package matches $regex" >&2; exit 1; }
    fi
    dir=$CACHE/$pkg
    if [[ ! -d $dir/boot ]]; then
        # apt's sandbox user cannot write to root's cache: download as root, quietly.
        (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root download -qq "$pkg")
        rm -rf "$dir.tmp" && dpkg -x "$apt_dir"/archives/"${pkg}"_*.deb "$dir.tmp" && mv "$dir.tmp" "$dir"
        rm -f "$apt_dir"/archives/"${pkg}"_*.deb
    fi
    echo "$pkg" > "$CACHE/$tag.pkg"
    version=$(basename "$(ls "$dir"/boot/vmlinuz-*)" | sed 's/^vmlinuz-//')
    # vng boots the image with <package>/lib/modules/<version>; the link makes
    # the same modules visible at /lib/modules/<version> for depmod and modinfo.
    mkdir -p /lib/modules
    [[ -e /lib/modules/$version ]] || ln -s "$dir/lib/modules/$version" "/lib/modules/$version"
    [[ -f $dir/lib/modules/$version/modules.dep ]] || depmod "$version"
    echo "KERNEL_${tag//./_}=$dir/boot/vmlinuz-$version"
}

{
    fetch_kernel 6.1 '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$'
    fetch_kernel 6.12 '^linux-image-6\.12\.[0-9]+\+deb12-amd64-unsigned$'
} > "$CACHE/kernels.env.tmp"
mv "$CACHE/kernels.env.tmp" "$CACHE/kernels.env"

# Debian's irqbalance, for the policy tests that coexist with it. Unpacked with
# dpkg -x like the kernels (no install scripts, no service): it is never
# installed on this host and runs only inside bench guests, started by the
# tests. Its libraries (glib, libcap-ng, libnuma, ncurses, libsystemd) are the
# host's own, which the guests share.
fetch_irqbalance() {
    local pkg=irqbalance dir
    if [[ ! -x $CACHE/irqbalance/usr/sbin/irqbalance ]]; then
        [[ -n $(ls "$apt_dir/lists" 2>/dev/null | grep -v partial) ]] || apt-get "${apt_opts[@]}" update -qq
        (cd "$apt_dir/archives" && apt-get "${apt_opts[@]}" -o APT::Sandbox::User=root download -qq "$pkg")
        dir=$CACHE/irqbalance
        rm -rf "$dir.tmp" && dpkg -x "$apt_dir"/archives/"${pkg}"_*.deb "$dir.tmp"
        dpkg-deb -f "$apt_dir"/archives/"${pkg}"_*.deb Version > "$dir.tmp/VERSION"
        rm -rf "$dir" && mv "$dir.tmp" "$dir"
        rm -f "$apt_dir"/archives/"${pkg}"_*.deb
    fi
    echo "IRQBALANCE=$CACHE/irqbalance/usr/sbin/irqbalance"
    echo "IRQBALANCE_VERSION=$(cat "$CACHE/irqbalance/VERSION")"
}
fetch_irqbalance > "$CACHE/irqbalance.env.tmp"
mv "$CACHE/irqbalance.env.tmp" "$CACHE/irqbalance.env"

# The systemd guest's root file system. irqbalance is there for tests that run
# it beside msixd, disabled so that only those tests start it; the serial
# console stays free of a login prompt; e1000e runs unthrottled (as in the
# other guests: QEMU 7.2 aborts when its throttling timer fires after MSI-X was
# disabled; the option is per board and every probe counts as a new one, up to
# 32, see tests/vm/bench.py). Rebuilt only when this recipe changes.
packages=systemd,systemd-sysv,udev,dbus,kmod,procps,iproute2,pciutils,passwd,python3,python3-venv,python3-pytest,irqbalance
hooks=(
    --customize-hook='chroot "$1" systemctl --quiet disable irqbalance.service'
    --customize-hook='chroot "$1" systemctl --quiet mask serial-getty@ttyS0.service'
    --customize-hook='echo "options e1000e InterruptThrottleRate=$(printf "0,%.0s" $(seq 31))0" > "$1/etc/modprobe.d/msixd-bench.conf"'
)
recipe=$(printf '%s\n' "$packages" "${hooks[@]}" "$mirror" | sha256sum | cut -c1-16)
rootfs=$CACHE/rootfs-bookworm
if [[ $(cat "$rootfs.recipe" 2>/dev/null) != "$recipe" ]]; then
    rm -rf "$rootfs" "$rootfs.tmp"
    mmdebstrap --quiet --variant=minbase --include="$packages" "${hooks[@]}" bookworm "$rootfs.tmp" \
        "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb ${mirror}-security bookworm-security main"
    mv "$rootfs.tmp" "$rootfs"
    echo "$recipe" > "$rootfs.recipe"
fi

cat "$CACHE/kernels.env" "$CACHE/irqbalance.env"
