"""The chart's unit tests run the real helm (no cluster): lint and template."""

from __future__ import annotations

import pytest

from tests.chart.helm import Helm, find_helm


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    return Helm(find_helm(), tmp_path_factory.mktemp("helm-home"))
