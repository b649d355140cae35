#!/bin/sh
# Runs the whole test suite (unit + Linux integration). Needs root: the integration tests build
# throwaway network namespaces and never touch the machine's own.
set -eu
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
