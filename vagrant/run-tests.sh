#!/bin/sh
# Run the jail integration suite (tests/jails, and vagrant/test_custom_network.py) on a machine prepared by
# vagrant/provision.sh.  As root:  vagrant/run-tests.sh [pytest options]
set -eu

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${KLEENENET_VENV:-/usr/local/kleenenet-venv}

if [ "$(id -u)" -ne 0 ]; then
	echo "run-tests.sh: run as root (the suite creates jails, interfaces and pf anchors)" >&2
	exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
	echo "run-tests.sh: no virtualenv at $VENV: run vagrant/provision.sh first" >&2
	exit 1
fi

cd "$REPO"
exec "$VENV/bin/python" -m pytest -m freebsd tests/jails vagrant/test_custom_network.py -v "$@"
