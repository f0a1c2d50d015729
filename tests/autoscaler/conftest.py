"""Fixtures shared by the Kubernetes adapter tests: the API emulator over real HTTP and the
real `kubernetes` client connected to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from autoscaler.connectors.kubernetes_api import KubernetesApi
from observer import conventions as c
from tests.autoscaler.k8s_emulator import Emulator, RunningEmulator


@pytest.fixture
def server() -> Iterator[RunningEmulator]:
    srv = RunningEmulator()
    yield srv
    srv.close()


@pytest.fixture
def em(server: RunningEmulator) -> Emulator:
    return server.emulator


@pytest.fixture
def api(server: RunningEmulator) -> Iterator[KubernetesApi]:
    a = KubernetesApi.connect(field_manager=c.K8S_FIELD_MANAGER, request_timeout_seconds=0.5, host=server.url)
    yield a
    a.close()
