import os
import shutil

import pytest

from tests.linux.world import World


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/linux/" in str(item.fspath):
            item.add_marker(pytest.mark.linux)


@pytest.fixture
def world(tmp_path):
    if os.geteuid() != 0 or not shutil.which("nft"):
        pytest.fail("the Linux integration tests need root and nftables (see README)")
    w = World(tmp_path)
    try:
        yield w
    finally:
        w.destroy()
