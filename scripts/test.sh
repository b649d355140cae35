#!/bin/sh
# Runs the whole test suite (unit + Linux integration). Needs root: the integration tests build
# throwaway network namespaces and never touch the machine's own.
set -eu
. "$(dirname "$0")/as-root.sh"
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Two workers: each test builds namespaces of its own, and most of a test's time is spent waiting
# for processes and packets, so two at once take half the time even on two CPUs (-n 0: one).
# A file's tests stay together, in their order, with their module fixtures.
exec .venv/bin/python -m pytest -q -n 2 --dist loadfile "$@"
