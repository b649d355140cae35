#!/bin/sh
# Installs what kleenenet needs on Debian/Ubuntu (iproute2, nftables, the user-mode drivers' pasta
# and slirp4netns, a Python >= 3.11 venv in .venv). Idempotent: does nothing that is already done.
set -eu
cd "$(dirname "$0")/.."

need=""
for pkg in iproute2 nftables util-linux passt slirp4netns; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need python3-venv"
command -v python3 >/dev/null || need="$need python3"
if [ -n "$need" ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
    echo "kleenenet needs Python 3.11 or newer (found $(python3 --version))" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    # compat: a plain path in a .pth file; the default's import hook costs every start ~15 ms
    .venv/bin/pip install -q --disable-pip-version-check -e '.[test]' --config-settings editable_mode=compat
    touch .venv/.installed
fi
