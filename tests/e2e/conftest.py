"""End-to-end fixtures: one real control plane per session (etcd, kube-apiserver, kube-controller-manager)
with our CRD and test copies of the upstream CRDs installed, and a fresh namespace per test.

A control plane that cannot be started fails every e2e test loudly (never a skip). When any test of
the session failed, the control plane's folder (certificates, kubeconfig, logs) is kept and its path
is printed at the end of the run.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from agentgroup.devcluster import CRDS, ControlPlaneError, LocalControlPlane
from tests.e2e import kube

_summary = pytest.StashKey[list[str]]()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in item.nodeid:
            item.add_marker(pytest.mark.e2e)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    lines = config.stash.get(_summary, [])
    if lines:
        terminalreporter.section("agentgroup control plane")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[LocalControlPlane]:
    """The session's control plane; kubectl helpers in tests.e2e.kube point at it."""
    summary = request.config.stash.setdefault(_summary, [])
    cp = LocalControlPlane(crds=CRDS)
    started = time.monotonic()
    error: ControlPlaneError | None = None
    try:
        cp.start()
    except ControlPlaneError as e:
        error = e
    if error is not None:
        # A failed start keeps its folder; the message names the component and ends with its log.
        pytest.fail(f"the e2e control plane did not start:\n{error}", pytrace=False)
    summary.append(
        f"started in {time.monotonic() - started:.1f} s (etcd, kube-apiserver, kube-controller-manager, "
        f"CRDs Established) at {cp.server}"
    )
    kube.use(cp)
    try:
        yield cp
    finally:
        kube.use(None)
        failed = request.session.testsfailed > 0
        cp.stop(keep=True if failed else None)
        if cp.root.exists():
            summary.append(
                f"folder kept: {cp.root} (logs in {cp.logs_dir}, admin kubeconfig {cp.kubeconfig})"
            )


@pytest.fixture
def namespace(cluster: LocalControlPlane) -> Iterator[str]:
    """A fresh namespace for one test, deleted afterwards (the namespace controller empties it)."""
    name = f"e2e-{uuid.uuid4().hex[:8]}"
    kube.kubectl("create", "namespace", name, check=True)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=True)
