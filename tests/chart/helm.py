"""Running the real ``helm`` against the chart: rendering for the unit tests, installing for the e2e tests.

The binary comes from ``AGENTGROUP_HELM``, else from the control-plane build (``hack/controlplane/build.sh``
builds helm from its pinned module beside kube-apiserver; a second call returns at once). Helm's cache,
config and data folders point into a temporary folder, so a test never reads or writes ``~/.config/helm``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from agentgroup.devcluster import REPO_ROOT, build_binaries

CHART = REPO_ROOT / "deploy" / "helm" / "agentgroup"
RELEASE = "agentgroup"
NAMESPACE = "agentgroup-system"


def find_helm() -> Path:
    """``AGENTGROUP_HELM``, else the helm the control-plane build produced."""
    override = os.environ.get("AGENTGROUP_HELM")
    path = Path(override) if override else build_binaries() / "helm"
    if not os.access(path, os.X_OK):
        source = "AGENTGROUP_HELM" if override else "hack/controlplane/build.sh"
        raise RuntimeError(f"helm not found at {path} (from {source})")
    return path


@dataclass(frozen=True)
class HelmResult:
    code: int
    stdout: str
    stderr: str
    command: str

    @property
    def ok(self) -> bool:
        return self.code == 0

    def __str__(self) -> str:
        return f"$ {self.command}\nexit code {self.code}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


class Helm:
    """helm with a private home folder and, for a cluster, its kubeconfig."""

    def __init__(self, binary: Path, home: Path, *, kubeconfig: Path | None = None) -> None:
        self.binary = binary
        self.home = home
        self.kubeconfig = kubeconfig
        for sub in ("cache", "config", "data"):
            (home / sub).mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "HELM_CACHE_HOME": str(self.home / "cache"),
            "HELM_CONFIG_HOME": str(self.home / "config"),
            "HELM_DATA_HOME": str(self.home / "data"),
        }
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        else:
            env.pop("KUBECONFIG", None)
        return env

    def run(self, *args: str, check: bool = False, timeout: float = 120.0) -> HelmResult:
        """Run ``helm ARGS``; with ``check`` a non-zero exit fails the test with both outputs."""
        done = subprocess.run(
            [str(self.binary), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env(),
            stdin=subprocess.DEVNULL,
            check=False,
        )
        result = HelmResult(done.returncode, done.stdout, done.stderr, "helm " + shlex.join(args))
        if check and not result.ok:
            raise AssertionError(f"helm failed:\n{result}")
        return result

    def template_text(
        self,
        *args: str,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        values: Mapping[str, Any] | None = None,
    ) -> str:
        """``helm template`` of the chart (hooks included); ``values`` are passed as a values file."""
        extra: list[str] = []
        if values is not None:
            path = self.home / "values.yaml"
            path.write_text(yaml.safe_dump(dict(values)))
            extra = ["-f", str(path)]
        return self.run(
            "template", release, str(CHART), "--namespace", namespace, *extra, *args, check=True
        ).stdout

    def template(
        self,
        *args: str,
        release: str = RELEASE,
        namespace: str = NAMESPACE,
        values: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """The rendered objects, parsed."""
        text = self.template_text(*args, release=release, namespace=namespace, values=values)
        return [doc for doc in yaml.safe_load_all(text) if doc]


def find(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    """The objects of ``kind`` (and ``name``), in rendering order."""
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: Sequence[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``) that is not a Helm hook."""
    found = [o for o in find(objects, kind, name) if not is_hook(o)]
    assert len(found) == 1, (
        f"expected one {kind} {name or ''}, found {[o['metadata']['name'] for o in found]}"
    )
    return found[0]


def is_hook(obj: Mapping[str, Any]) -> bool:
    return "helm.sh/hook" in (obj.get("metadata", {}).get("annotations") or {})
