from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.k8s.control_plane import KubeCluster


@pytest.fixture(scope="module")
def api(kube_cluster: KubeCluster) -> Iterator[Any]:
    """The official client's ApiClient, as the admin."""
    with kube_cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(kube_cluster: KubeCluster) -> str:
    return kube_cluster.create_namespace("k8s")
