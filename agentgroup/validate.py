"""``agentgroup validate``: the admission rules of API.md section 3, offline (API.md section 7).

Exit status: 0 when every AgentGroup is allowed, 1 when any is denied, 2 for unreadable input or bad
usage. ``-o json`` prints::

    {"results": [{"source": ..., "namespace": ..., "name": ..., "allowed": ...,
                  "violations": [{"field": ..., "reason": ..., "message": ...}],
                  "warnings": [{"field": ..., "reason": ..., "message": ...}]}]}

Warnings have the same shape as violations. Findings of ``dryrun`` policies never deny; text output
shows them as notes. Diagnostics (ignored documents, unchecked runtimes) go to stderr.

Runtimes (CodeInterpreters, AgentRuntimes) in ``-f`` inputs and ``--runtimes`` files, and with
``--cluster`` those in the current kubeconfig's cluster, count as existing in their namespace.
Policies are read from ``--policy`` files only, so a policy lying in a manifest folder is never
applied by accident. A policy applies where its namespaceSelector matches the namespace's labels: those
of a v1 Namespace among the ``-f`` inputs, else only ``kubernetes.io/metadata.name`` (a note says so
when a policy selects by other labels).
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import ValidationError

from agentgroup.inputs import STDIN, Document, InputError, files, read
from shared.findings import Verdict
from shared.models import API_VERSION, GROUP, KIND, RUNTIME_KINDS
from shared.naming import is_dns1123_label
from shared.policy import NAMESPACE_NAME_LABEL, POLICY_KIND, AgentGroupPolicy
from shared.rules import RuntimeKey, validate

DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True, slots=True)
class Result:
    source: str
    namespace: str
    name: str
    verdict: Verdict

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "namespace": self.namespace,
            "name": self.name,
            "allowed": self.verdict.allowed,
            "violations": [f.as_dict() for f in self.verdict.violations],
            "warnings": [f.as_dict() for f in self.verdict.warnings],
        }

    def as_text(self) -> str:
        v = self.verdict
        lines = [f"{self.namespace}/{self.name} ({self.source}): {'allowed' if v.allowed else 'denied'}"]
        lines += [f"  {f}" for f in v.violations]
        lines += [f"  warning: {f}" for f in v.warnings]
        lines += [f"  dryrun (not enforced): {f}" for f in v.dryrun]
        return "\n".join(lines)


def _metadata(doc: Document) -> Mapping[str, Any]:
    """``doc``'s metadata, which must at least name the object."""
    meta = doc.obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    if not isinstance(meta, Mapping) or not isinstance(name, str) or not name:
        raise InputError(f"{doc.where}: {doc.kind} has no metadata.name; give every object a name")
    return meta


@dataclass(frozen=True, slots=True)
class _Group:
    source: str
    namespace: str
    name: str
    obj: dict[str, Any]
    """The object as read, with its namespace filled in."""


@dataclass
class _Inputs:
    """What the input files hold, sorted by role."""

    namespace: str | None
    groups: list[_Group] = field(default_factory=list)
    runtimes: defaultdict[str, set[RuntimeKey]] = field(default_factory=lambda: defaultdict(set))
    policies: list[AgentGroupPolicy] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def identity(self, doc: Document, *, namespaced: bool = True) -> tuple[str, str]:
        """(namespace, name) of ``doc``: a missing namespace is ``--namespace`` or ``default``."""
        meta = _metadata(doc)
        name = meta["name"]
        ns = meta.get("namespace") if namespaced else None
        if ns is not None and not isinstance(ns, str):
            raise InputError(f'{doc.where}: {doc.kind} "{name}": metadata.namespace must be a string')
        if ns and self.namespace and ns != self.namespace:
            raise InputError(
                f'{doc.where}: {doc.kind} "{name}" is in namespace "{ns}", but --namespace is '
                f'"{self.namespace}"; drop one of them (kubectl apply refuses this too)'
            )
        return ns or self.namespace or DEFAULT_NAMESPACE, name

    def ignore(self, doc: Document, why: str) -> None:
        self.notes.append(f"{doc.where}: ignored {doc.api_version or '(no apiVersion)'} {doc.kind}: {why}")

    def add_group(self, doc: Document) -> None:
        ns, name = self.identity(doc)
        obj = {**doc.obj, "metadata": {**_metadata(doc), "namespace": ns}}
        self.groups.append(_Group(doc.source, ns, name, obj))

    def add_runtime(self, doc: Document) -> None:
        ns, name = self.identity(doc)
        self.runtimes[ns].add((doc.kind, name))

    def add_namespace(self, doc: Document) -> None:
        _, name = self.identity(doc, namespaced=False)
        labels = _metadata(doc).get("labels") or {}
        if not isinstance(labels, Mapping) or not all(isinstance(v, str) for v in labels.values()):
            raise InputError(f'{doc.where}: Namespace "{name}": metadata.labels must map strings to strings')
        # Kubernetes sets this label on every namespace.
        self.namespace_labels[name] = {**{str(k): v for k, v in labels.items()}, NAMESPACE_NAME_LABEL: name}

    def add_policy(self, doc: Document) -> None:
        _, name = self.identity(doc, namespaced=False)
        try:
            self.policies.append(AgentGroupPolicy.model_validate(doc.obj))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors(include_url=False)
            )
            raise InputError(f'{doc.where}: AgentGroupPolicy "{name}" is invalid: {problems}') from err


def _is_runtime(doc: Document) -> bool:
    return doc.kind in RUNTIME_KINDS and doc.api_version == API_VERSION


def _is_policy(doc: Document) -> bool:
    return doc.kind == POLICY_KIND and doc.api_version == API_VERSION


def _is_namespace(doc: Document) -> bool:
    return doc.kind == "Namespace" and doc.api_version == "v1"


def _manifest(inputs: _Inputs, doc: Document) -> None:
    """A ``-f`` document: groups are validated, runtimes count as existing."""
    if doc.kind == KIND:
        inputs.add_group(doc)  # a wrong apiVersion is reported by the rules (InvalidSpec)
    elif _is_runtime(doc):
        inputs.add_runtime(doc)
    elif _is_namespace(doc):
        inputs.add_namespace(doc)
    elif _is_policy(doc):
        inputs.ignore(doc, "policies are applied only from --policy files")
    else:
        inputs.ignore(doc, f"not an AgentGroup or an agentcube runtime of {GROUP}")


def _runtime_file(inputs: _Inputs, doc: Document) -> None:
    if _is_runtime(doc):
        inputs.add_runtime(doc)
    else:
        inputs.ignore(doc, "--runtimes files supply CodeInterpreters and AgentRuntimes only")


def _policy_file(inputs: _Inputs, doc: Document) -> None:
    if _is_policy(doc):
        inputs.add_policy(doc)
    else:
        inputs.ignore(doc, f"--policy files supply {POLICY_KIND} objects only")


def _load(args: argparse.Namespace) -> tuple[_Inputs, list[str]]:
    """Every input sorted by role, and one message per unreadable file or object."""
    inputs = _Inputs(args.namespace)
    errors: list[str] = []
    sources: list[tuple[Sequence[str], Callable[[_Inputs, Document], None]]] = [
        (args.filenames, _manifest),
        (args.runtimes or (), _runtime_file),
        (args.policies or (), _policy_file),
    ]
    for paths, handle in sources:
        for path in paths:
            try:
                names = files(path)
            except InputError as err:
                errors.append(str(err))
                continue
            for name in names:
                try:
                    for doc in read(name):
                        handle(inputs, doc)
                except InputError as err:
                    errors.append(str(err))
    return inputs, errors


def _cluster_runtimes(
    namespaces: Iterable[str], kubeconfig: str | None
) -> tuple[dict[str, set[RuntimeKey]], list[str]]:
    """The runtimes in ``namespaces`` of the kubeconfig's cluster, and notes about them."""
    # Imported here: the offline command does not need the asynchronous client stack.
    import asyncio

    from shared.kube import ApiError, Kube, KubeConfigError, api_client
    from shared.kube.resources import AGENT_RUNTIMES, CODE_INTERPRETERS

    found: dict[str, set[RuntimeKey]] = defaultdict(set)
    notes: list[str] = []

    async def fetch() -> None:
        async with Kube(await api_client(kubeconfig)) as kube:
            for res in (CODE_INTERPRETERS, AGENT_RUNTIMES):
                for ns in namespaces:
                    try:
                        items, _ = await kube.list(res, ns)
                    except ApiError as err:
                        if not err.is_not_found:
                            raise
                        notes.append(f"--cluster: the cluster does not serve {res}; is agentcube installed?")
                        break
                    found[ns].update((res.kind, item["metadata"]["name"]) for item in items)

    try:
        asyncio.run(fetch())
    except KubeConfigError as err:
        raise InputError(f"--cluster: {err}") from err
    except ApiError as err:
        raise InputError(
            f"--cluster: cannot list the runtimes: {err}; check that `kubectl get agentruntimes` works"
        ) from err
    return found, notes


def _unknown_namespace_notes(inputs: _Inputs) -> list[str]:
    """One note per group namespace whose labels a policy's namespaceSelector would need but nobody gave."""
    selective = sorted(
        p.metadata.name
        for p in inputs.policies
        if p.spec.namespace_selector.match_expressions
        or set(p.spec.namespace_selector.match_labels) - {NAMESPACE_NAME_LABEL}
    )
    if not selective:
        return []
    unknown = sorted({g.namespace for g in inputs.groups} - set(inputs.namespace_labels))
    names = ", ".join(f'"{n}"' for n in selective)
    return [
        f'namespace "{ns}" is not among the inputs, so policies selecting namespaces by label ({names}) '
        f"see only {NAMESPACE_NAME_LABEL}={ns}; add its Namespace object with -f to apply them as the "
        "cluster would"
        for ns in unknown
    ]


def _usage_problems(args: argparse.Namespace) -> list[str]:
    """What argparse cannot check on its own."""
    problems = []
    if [*args.filenames, *(args.runtimes or ()), *(args.policies or ())].count(STDIN) > 1:
        problems.append("'-' (stdin) can be read only once")
    if args.kubeconfig and not args.cluster:
        problems.append("--kubeconfig is used only with --cluster")
    return problems


def _report(results: Sequence[Result], notes: Sequence[str], output: str) -> None:
    if output == "json":
        out = {"results": [r.as_json() for r in results]}
        sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for r in results:
        print(r.as_text())
    denied = sum(not r.verdict.allowed for r in results)
    noun = "group" if len(results) == 1 else "groups"
    print(f"{len(results)} {noun}: {len(results) - denied} allowed, {denied} denied")


def run(args: argparse.Namespace) -> int:
    if problems := _usage_problems(args):
        print("\n".join(f"agentgroup validate: error: {p}" for p in problems), file=sys.stderr)
        return 2
    inputs, errors = _load(args)
    check_runtimes = bool(inputs.runtimes or args.runtimes or args.cluster)
    if args.cluster and not errors:
        try:
            cluster, notes = _cluster_runtimes(sorted({g.namespace for g in inputs.groups}), args.kubeconfig)
        except InputError as err:
            errors.append(str(err))
        else:
            inputs.notes += notes
            for ns, keys in cluster.items():
                inputs.runtimes[ns] |= keys
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 2
    if not check_runtimes and inputs.groups:
        print(
            "warning: runtime references were not checked: the inputs hold no CodeInterpreter or "
            "AgentRuntime; pass --runtimes PATH or --cluster to check them",
            file=sys.stderr,
        )
    inputs.notes += _unknown_namespace_notes(inputs)
    results = [
        Result(
            g.source,
            g.namespace,
            g.name,
            validate(
                g.obj,
                runtimes=inputs.runtimes.get(g.namespace, set()) if check_runtimes else None,
                policies=inputs.policies,
                namespace_labels=inputs.namespace_labels.get(g.namespace),
            ),
        )
        for g in inputs.groups
    ]
    _report(results, inputs.notes, args.output)
    return 1 if any(not r.verdict.allowed for r in results) else 0


def _namespace(value: str) -> str:
    if not is_dns1123_label(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a namespace name (a DNS-1123 label)")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "validate",
        help="check AgentGroup manifests offline with the webhook's rules",
        description="Check AgentGroup manifests with the same rules as the admission webhook. "
        "Exit status: 0 all allowed, 1 any denied, 2 unreadable input or bad usage.",
    )
    path_help = "a file, a directory (its *.yaml, *.yml, *.json, recursively) or - for stdin"
    p.add_argument(
        "-f",
        "--filename",
        dest="filenames",
        action="append",
        required=True,
        metavar="PATH",
        help=f"manifests to check, repeatable: {path_help}; Namespaces in them lend their labels to "
        "policies' namespaceSelectors",
    )
    p.add_argument(
        "--runtimes",
        action="append",
        metavar="PATH",
        help="CodeInterpreters and AgentRuntimes that exist (besides those in -f), repeatable",
    )
    p.add_argument(
        "--policy",
        dest="policies",
        action="append",
        metavar="PATH",
        help="AgentGroupPolicy objects to apply, repeatable",
    )
    p.add_argument(
        "-n",
        "--namespace",
        type=_namespace,
        help="the namespace of objects without metadata.namespace (default: default)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="also count the runtimes that exist in the current kubeconfig's cluster",
    )
    p.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="the kubeconfig for --cluster (default: $KUBECONFIG, then ~/.kube/config)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    p.set_defaults(func=run)
