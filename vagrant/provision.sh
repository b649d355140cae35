#!/bin/sh
# Prepare a throwaway FreeBSD 14 machine (the Vagrant VM, or the CI VM) for the
# jail integration suite: packages, a virtualenv with kleenenet installed from
# the checkout, pf with kleenenet's anchors, if_bridge/if_epair, forwarding,
# and the rc.d script.  Run as root:  sh vagrant/provision.sh /path/to/repo
#
# This rewrites /etc/pf.conf: use it only on a machine made for the tests.
set -eu

REPO=${1:-/vagrant}
VENV=${KLEENENET_VENV:-/usr/local/kleenenet-venv}
PYTHON=python3.11

if [ "$(id -u)" -ne 0 ]; then
	echo "provision.sh: run as root" >&2
	exit 1
fi
if [ ! -f "$REPO/pyproject.toml" ]; then
	echo "provision.sh: $REPO is not a kleenenet checkout" >&2
	exit 1
fi

echo "==> first boot"
# The official images run freebsd-update (and pkg) once at first boot and then
# reboot (rc.d firstboot scripts; /etc/rc reboots when /firstboot-reboot
# exists as it removes /firstboot).  Vagrant can reach sshd before that, so the
# reboot would cut this script off: turn the first-boot updates off for later
# boots, drop a pending reboot request until the first boot is over, and wait
# for it.
sysrc firstboot_freebsd_update_enable=NO firstboot_pkgs_enable=NO >/dev/null 2>&1 || true
waited=0
while [ -e /firstboot ] && [ "$waited" -lt 900 ]; do
	if [ -e /firstboot-reboot ]; then
		chflags -R 0 /firstboot-reboot && rm -rf /firstboot-reboot
		echo "provision.sh: dropped the first-boot reboot request" >&2
	fi
	sleep 1
	waited=$((waited + 1))
done
rm -rf /firstboot-reboot

echo "==> packages"
# pydantic-core has no FreeBSD wheel on PyPI (building it needs Rust), so
# pydantic comes from the package and the virtualenv sees the system
# site-packages; so do aiohttp (the daemon's HTTP server) and PyYAML (for klee,
# Kleene's client in the `test` extra), which have no FreeBSD wheels either.
# The rest (click, jinja2, pytest, hypothesis, kleene-cli and its httpx, rich,
# websockets) is pure Python.
export ASSUME_ALWAYS_YES=yes
# sudo: run-tests.sh is started with `vagrant ssh -c 'sudo ...'`, and some boxes lack it.
pkg install -y sudo python311 py311-pip py311-sqlite3 py311-pydantic2 py311-aiohttp py311-yaml
# py-libzfs (the devel/py-libzfs port) for containers made from ZFS images;
# without it tests/jails/test_zfs.py is skipped.
if ! pkg install -y py311-libzfs; then
	echo "provision.sh: warning: py311-libzfs is not available: the ZFS image test will be skipped" >&2
fi

echo "==> virtualenv $VENV"
if [ ! -x "$VENV/bin/python" ]; then
	# --without-pip: the venv uses py311-pip from the system site-packages.
	"$PYTHON" -m venv --system-site-packages --without-pip "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --editable "${REPO}[test]"
ln -sf "$VENV/bin/kleenenet" /usr/local/bin/kleenenet

echo "==> kernel modules"
for mod in pf if_bridge if_epair; do
	kldload -n "$mod"
done
# pf is loaded at boot by rc.d/pf (pf_enable); the others through kld_list.
for mod in if_bridge if_epair; do
	case " $(sysrc -n kld_list 2>/dev/null || true) " in
	*" $mod "*) ;;
	*) sysrc kld_list+="$mod" ;;
	esac
done

echo "==> forwarding, bridge filtering"
sysctl net.inet.ip.forwarding=1 net.inet6.ip6.forwarding=1
sysrc gateway_enable=YES ipv6_gateway_enable=YES
# As `kleenenet doctor` recommends: pf filters jails' routed traffic on the bridge
# interface, not bridged frames on every member. (sysctl.kld.d: applied when
# if_bridge is loaded at boot, on releases whose rc.subr reads it.)
sysctl net.link.bridge.pfil_member=0 net.link.bridge.pfil_bridge=0
mkdir -p /etc/sysctl.kld.d
printf '%s\n' net.link.bridge.pfil_member=0 net.link.bridge.pfil_bridge=0 > /etc/sysctl.kld.d/if_bridge.conf

echo "==> pf"
# kleenenet's pf fragment (its anchor lines, and `pass quick on lo0`): the suite
# checks the file users include.  kleenenet's loopback networks carry jail-to-jail
# and jail-to-host traffic over lo0, and the host reaches published ports over
# lo0, so this ruleset must not `set skip on lo0`.  `pass all` keeps ssh.
cat > /etc/pf.conf <<PF
# Test machine for kleenenet's jail suite (written by vagrant/provision.sh).
include "$REPO/pf/kleenenet.conf"
pass all
PF
pfctl -n -f /etc/pf.conf
pfctl -f /etc/pf.conf
if ! pfctl -s info | grep -q "Enabled"; then
	pfctl -e
fi
sysrc pf_enable=YES pf_rules=/etc/pf.conf

echo "==> rc.d/kleenenet"
install -m 0555 "$REPO/rc.d/kleenenet" /usr/local/etc/rc.d/kleenenet
sysrc kleenenet_enable=YES
# A smoke test of the script; the suite itself uses its own state directories.
if ! service kleenenet start; then
	echo "provision.sh: warning: 'service kleenenet start' failed" >&2
fi

echo "==> ready: run vagrant/run-tests.sh as root"
