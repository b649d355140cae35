"""Plans: the host operations of one use case, computed before anything is changed.

A plan is a list of steps. Each step says what it does (the text `--dry-run` prints and tests
compare), how to do it, and how to undo it. Executing a plan is the only side effect; when a step
fails, the steps already done are undone in reverse order and the error is raised.

Failpoints make the middle of a plan reachable from tests of the real binary:
KLEENENET_FAILPOINT=<plan>:<k>[:stop] fails (or, with `stop`, SIGSTOPs the process) just before
step k (1-based) of the plan named <plan>; k = number of steps + 1 is after the last step, before
the store commits.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from kleenenet.errors import HostError, KleenenetError


@dataclass
class Step:
    text: str
    do: Callable[[], object]
    undo: Callable[[], object] | None = None


@dataclass
class Plan:
    name: str
    steps: list[Step] = field(default_factory=list)
    # run after execution, whether it succeeded or not (e.g. closing a container's socket)
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    def add(self, text: str, do: Callable[[], object], undo: Callable[[], object] | None = None) -> None:
        self.steps.append(Step(text, do, undo))

    def extend(self, other: Plan) -> None:
        self.steps.extend(other.steps)
        self.cleanups.extend(other.cleanups)

    def lines(self) -> list[str]:
        return [s.text for s in self.steps]

    def __bool__(self) -> bool:
        return bool(self.steps)

    def dry_run(self, out: Callable[[str], None]) -> None:
        """Print what the plan would do."""
        try:
            for line in self.lines():
                out(line)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        for cleanup in self.cleanups:
            cleanup()

    def execute(self) -> None:
        done: list[Step] = []
        failpoint = _failpoint(self.name)
        try:
            for k, step in enumerate(self.steps, 1):
                if failpoint and failpoint[0] == k:
                    _fail(failpoint[1], f"failpoint {self.name}:{k} before: {step.text}")
                try:
                    step.do()
                except KleenenetError:
                    raise
                except Exception as e:
                    raise HostError(f"{step.text}: {e}") from e
                done.append(step)
            if failpoint and failpoint[0] == len(self.steps) + 1:
                _fail(failpoint[1], f"failpoint {self.name}:{failpoint[0]} after the last step")
        except BaseException:
            rollback(done)
            raise
        finally:
            self._cleanup()


def rollback(done: list[Step]) -> None:
    for step in reversed(done):
        if step.undo is None:
            continue
        try:
            step.undo()
        except Exception as e:  # keep undoing the rest; report what could not be undone
            print(f"kleenenet: rollback of '{step.text}' failed: {e}", file=sys.stderr)


def _fail(action: str, message: str) -> None:
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
    else:
        raise HostError(message)


def _failpoint(plan_name: str) -> tuple[int, str] | None:
    spec = os.environ.get("KLEENENET_FAILPOINT")
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    if name != plan_name:
        return None
    k, _, action = rest.partition(":")
    return int(k), action or "error"
