"""Fixtures of the FreeBSD platform's tests."""

from __future__ import annotations

import itertools

import pytest

from tests.freebsd.bench import Bench


@pytest.fixture(autouse=True)
def fixed_ids(monkeypatch):
    """Ids count up (000000000001, ...) so plans are the same on every run."""
    counter = itertools.count(1)

    def new_id():
        return f"{next(counter):012x}"
    monkeypatch.setattr("kleenenet.service.new_id", new_id)
    monkeypatch.setattr("kleenenet.store.new_id", new_id)


@pytest.fixture
def bench(tmp_path):
    """A store and a simulated host in a fresh state directory."""
    return Bench(tmp_path / "state")
