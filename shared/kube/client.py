"""Building an authenticated API client the way kubectl and controller-runtime do."""

from __future__ import annotations

import os
from pathlib import Path

from kubernetes.aio.client import ApiClient, Configuration
from kubernetes.aio.config import ConfigException, load_incluster_config, load_kube_config

IN_CLUSTER_ENV = "KUBERNETES_SERVICE_HOST"


class KubeConfigError(Exception):
    """No usable cluster configuration; the message names where we looked and how to fix it."""


def _default_kubeconfig() -> str:
    return os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")


def _any_file(path: str) -> bool:
    """``path`` may be a KUBECONFIG-style list; kubectl merges the files that exist."""
    return any(Path(p).expanduser().is_file() for p in path.split(os.pathsep) if p)


async def _load_file(config: Configuration, path: str, context: str | None) -> None:
    if not _any_file(path):
        raise KubeConfigError(
            f"kubeconfig {path!r} does not exist: pass --kubeconfig PATH or set KUBECONFIG"
            " to a file kubectl can use, or run inside a cluster"
        )
    try:
        await load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=config, persist_config=False
        )
    except (ConfigException, OSError, ValueError, KeyError, TypeError) as exc:
        where = f"context {context!r} of {path!r}" if context else repr(path)
        raise KubeConfigError(
            f"cannot use kubeconfig {where}: {exc}; check it with `kubectl --kubeconfig {path} config view`"
        ) from exc


async def api_client(kubeconfig: str | None = None, context: str | None = None) -> ApiClient:
    """An ``ApiClient`` for ``kubeconfig``, else in-cluster, else ``$KUBECONFIG`` / ``~/.kube/config``.

    A ``context`` always selects a kubeconfig file, as with kubectl. Raises :class:`KubeConfigError`.
    """
    config = Configuration()
    if kubeconfig:
        await _load_file(config, kubeconfig, context)
    elif os.environ.get(IN_CLUSTER_ENV) and context is None:
        try:
            load_incluster_config(client_configuration=config)  # type: ignore[no-untyped-call]
        except (ConfigException, OSError) as exc:
            raise KubeConfigError(
                f"{IN_CLUSTER_ENV} is set but the in-cluster configuration is unusable: {exc};"
                " mount a service account token or pass --kubeconfig PATH"
            ) from exc
    else:
        await _load_file(config, _default_kubeconfig(), context)
    return ApiClient(configuration=config)
