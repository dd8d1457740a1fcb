from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pools.manager import PoolManager
from pools.settings import Settings
from tests.k8s.control_plane import kube_cluster, pytest_collection_modifyitems  # noqa: F401 - the real cluster


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def make_settings(home: Path, **overrides: object) -> Settings:
    # The test's temporary directory is a file root, as a project directory would be.
    base: dict[str, object] = {"enabled_task_types": ["analyze", "echo", "python", "shell"],
                               "default_pool": False, "file_roots": [str(home.parent)]}
    base.update(overrides)
    return Settings.load(home, **base)


@pytest.fixture
async def manager(home: Path) -> AsyncIterator[PoolManager]:
    async with PoolManager(make_settings(home)) as m:
        yield m


@pytest.fixture
def gate(tmp_path: Path) -> Path:
    """A file path a blocking test task waits for; create it to let the tasks finish."""
    return tmp_path / "gate"
