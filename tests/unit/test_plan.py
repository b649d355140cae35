import pytest

from kleenenet.errors import HostError
from kleenenet.plan import Plan


def make_plan(log, fail_at=None):
    plan = Plan("demo")
    for i in range(1, 5):
        def do(i=i):
            if i == fail_at:
                raise OSError(f"step {i} broke")
            log.append(f"do {i}")
        plan.add(f"step {i}", do, lambda i=i: log.append(f"undo {i}"))
    plan.cleanups.append(lambda: log.append("cleanup"))
    return plan


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_failing_step_undoes_the_done_ones_in_reverse(k):
    log = []
    with pytest.raises(HostError, match=f"step {k}: step {k} broke"):
        make_plan(log, fail_at=k).execute()
    done = [f"do {i}" for i in range(1, k)]
    assert log == done + [f"undo {i}" for i in range(k - 1, 0, -1)] + ["cleanup"]


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_failpoint_fails_before_step_k(k, monkeypatch):
    monkeypatch.setenv("KLEENENET_FAILPOINT", f"demo:{k}")
    log = []
    with pytest.raises(HostError, match=f"failpoint demo:{k}"):
        make_plan(log).execute()
    assert log == [f"do {i}" for i in range(1, k)] + [f"undo {i}" for i in range(k - 1, 0, -1)] + ["cleanup"]


def test_failpoint_of_another_plan_is_ignored(monkeypatch):
    monkeypatch.setenv("KLEENENET_FAILPOINT", "other:1")
    log = []
    make_plan(log).execute()
    assert log == ["do 1", "do 2", "do 3", "do 4", "cleanup"]


def test_undo_failure_does_not_stop_the_rollback(capsys):
    log = []
    plan = Plan("demo")
    plan.add("a", lambda: log.append("do a"), lambda: log.append("undo a"))
    plan.add("b", lambda: log.append("do b"), lambda: 1 / 0)
    plan.add("c", lambda: 1 / 0)
    with pytest.raises(HostError):
        plan.execute()
    assert log == ["do a", "do b", "undo a"]
    assert "rollback of 'b' failed" in capsys.readouterr().err
