"""Finding the cluster: an explicit kubeconfig, in-cluster, then $KUBECONFIG; clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from shared.kube.client import KubeConfigError, api_client

pytestmark = pytest.mark.anyio


def write_kubeconfig(path: Path, server: str = "https://127.0.0.1:6443") -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "one", "cluster": {"server": server, "insecure-skip-tls-verify": True}},
            {"name": "two", "cluster": {"server": "https://10.0.0.2:6443", "insecure-skip-tls-verify": True}},
        ],
        "users": [{"name": "dev", "user": {"token": "t0k3n"}}],
        "contexts": [
            {"name": "first", "context": {"cluster": "one", "user": "dev"}},
            {"name": "second", "context": {"cluster": "two", "user": "dev"}},
        ],
        "current-context": "first",
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(autouse=True)
def outside_a_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


async def test_an_explicit_kubeconfig_is_loaded(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config")
    async with await api_client(str(path)) as api:
        assert api.configuration.host == "https://127.0.0.1:6443"
        assert (await api.configuration.auth_settings())["BearerToken"]["value"] == "Bearer t0k3n"


async def test_a_context_selects_the_cluster(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config")
    async with await api_client(str(path), context="second") as api:
        assert api.configuration.host == "https://10.0.0.2:6443"


async def test_kubeconfig_env_is_the_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config", server="https://192.0.2.1:6443")
    monkeypatch.setenv("KUBECONFIG", str(path))
    async with await api_client() as api:
        assert api.configuration.host == "https://192.0.2.1:6443"


async def test_a_context_wins_over_in_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBECONFIG", str(write_kubeconfig(tmp_path / "config")))
    async with await api_client(context="second") as api:
        assert api.configuration.host == "https://10.0.0.2:6443"


async def test_a_missing_kubeconfig_names_the_path_and_the_fix(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(
        KubeConfigError, match=r"does not exist: pass --kubeconfig PATH or set KUBECONFIG"
    ) as e:
        await api_client(str(missing))
    assert str(missing) in str(e.value)


async def test_no_configuration_anywhere_names_the_default_location(tmp_path: Path) -> None:
    with pytest.raises(KubeConfigError) as e:
        await api_client()
    assert str(tmp_path / "home" / ".kube" / "config") in str(e.value)


async def test_an_unknown_context_is_a_clear_error(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "config")
    with pytest.raises(KubeConfigError, match="context 'third'"):
        await api_client(str(path), context="third")


async def test_a_broken_kubeconfig_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(KubeConfigError, match=r"cannot use kubeconfig .*kubectl --kubeconfig"):
        await api_client(str(path))


async def test_in_cluster_without_a_service_account_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(
        KubeConfigError, match="KUBERNETES_SERVICE_HOST is set but the in-cluster configuration"
    ):
        await api_client()
