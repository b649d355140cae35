"""The real klee client from PyPI (installed in the test environment), as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

KLEE = str(Path(sys.executable).parent / "klee")


def run_klee(socket: Path | str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`klee ARGS` against the daemon on `socket`; never a traceback, and exit 0 when `check`."""
    r = subprocess.run([KLEE, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "KLEE_HOST": f"http://{socket}", "COLUMNS": "200"})
    assert "Traceback" not in r.stderr + r.stdout, r.stderr + r.stdout
    if check:
        assert r.returncode == 0, r.stderr + r.stdout
    return r
