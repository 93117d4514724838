"""The one Kubernetes access layer: client setup, raw-JSON requests, list+watch caches."""

from shared.kube.client import KubeConfigError, api_client
from shared.kube.informer import EventType, Handler, Informer
from shared.kube.raw import ApiError, Kube, PatchType
from shared.kube.resources import Resource

__all__ = [
    "ApiError",
    "EventType",
    "Handler",
    "Informer",
    "Kube",
    "KubeConfigError",
    "PatchType",
    "Resource",
    "api_client",
]
