"""``agentgroup validate`` through the real entry point (API.md section 7)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli.conftest import ROOT, Run

RUNTIMES = "examples/good/01-runtimes.yaml"


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())
    return str(path)


def group_yaml(name: str = "g", namespace: str | None = None, runtime: str = "planner-rt") -> str:
    ns = f"\n  namespace: {namespace}" if namespace else ""
    return f"""\
apiVersion: runtime.agentcube.volcano.sh/v1alpha1
kind: AgentGroup
metadata:
  name: {name}{ns}
spec:
  agents:
  - name: a
    runtimeRef: {{kind: AgentRuntime, name: {runtime}}}
"""


def runtime_yaml(name: str, namespace: str | None = None) -> str:
    ns = f", namespace: {namespace}" if namespace else ""
    return f"""\
apiVersion: runtime.agentcube.volcano.sh/v1alpha1
kind: AgentRuntime
metadata: {{name: {name}{ns}}}
spec: {{podTemplate: {{spec: {{containers: [{{name: agent, image: busybox}}]}}}}}}
"""


# --- exit status and output -----------------------------------------------------------------------


def test_the_good_example_directory_is_allowed(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-f", "examples/good/")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "default/research-task (examples/good/02-group.yaml): allowed",
        "1 group: 1 allowed, 0 denied",
    ]
    assert proc.stderr == ""


def test_a_denied_group_lists_its_violations_and_exits_1(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-f", "examples/bad/UnknownAgent.yaml", "--runtimes", RUNTIMES)

    assert proc.returncode == 1
    assert proc.stdout.splitlines() == [
        "default/unknown-agent (examples/bad/UnknownAgent.yaml): denied",
        '  spec.dependencies[1].to: UnknownAgent: "ghost" is not an agent of this group',
        "1 group: 0 allowed, 1 denied",
    ]


def test_warnings_follow_the_violations_and_the_summary_counts_every_group(agentgroup: Run) -> None:
    proc = agentgroup(
        "validate", "-f", "examples/bad/many-violations.yaml", "-f", "examples/good", "--runtimes", RUNTIMES
    )

    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0] == "default/many-violations (examples/bad/many-violations.yaml): denied"
    assert len([line for line in lines if line.startswith("  spec.")]) == 10
    assert lines[11].startswith("  warning: spec.dependencies[4]: DuplicateDependency: ")
    assert lines[12:] == [
        "default/research-task (examples/good/02-group.yaml): allowed",
        "2 groups: 1 allowed, 1 denied",
    ]


def test_json_output_has_the_documented_shape(agentgroup: Run) -> None:
    proc = agentgroup(
        "validate",
        "-o",
        "json",
        "-f",
        "examples/bad/many-violations.yaml",
        "-f",
        "examples/good/02-group.yaml",
        "--runtimes",
        RUNTIMES,
    )

    assert proc.returncode == 1
    out = json.loads(proc.stdout)
    assert list(out) == ["results"]
    bad, good = out["results"]
    for result in (bad, good):
        assert list(result) == ["source", "namespace", "name", "allowed", "violations", "warnings"]
        for finding in result["violations"] + result["warnings"]:
            assert list(finding) == ["field", "reason", "message"]
    assert (bad["source"], bad["namespace"], bad["name"], bad["allowed"]) == (
        "examples/bad/many-violations.yaml",
        "default",
        "many-violations",
        False,
    )
    assert bad["violations"][0] == {
        "field": "spec.agents[1].name",
        "reason": "InvalidAgentName",
        "message": "\"Coder\" is not a DNS-1123 label: use at most 63 lower-case letters, digits and '-', "
        "starting and ending with a letter or digit",
    }
    assert [w["reason"] for w in bad["warnings"]] == ["DuplicateDependency"]
    assert good == {
        "source": "examples/good/02-group.yaml",
        "namespace": "default",
        "name": "research-task",
        "allowed": True,
        "violations": [],
        "warnings": [],
    }


def test_json_output_without_groups_is_an_empty_list(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-o", "json", "-f", RUNTIMES)

    assert (proc.returncode, json.loads(proc.stdout)) == (0, {"results": []})


# --- inputs ---------------------------------------------------------------------------------------


def test_stdin_yaml(agentgroup: Run) -> None:
    text = (ROOT / RUNTIMES).read_text() + "---\n" + (ROOT / "examples/bad/RuntimeNotFound.yaml").read_text()

    proc = agentgroup("validate", "-f", "-", stdin=text)

    assert proc.returncode == 1
    assert proc.stdout.splitlines()[:2] == [
        "default/runtime-not-found (<stdin>): denied",
        '  spec.agents[1].runtimeRef: RuntimeNotFound: CodeInterpreter "r-interp" does not exist in '
        'namespace "default"; create it first or fix runtimeRef',
    ]


def test_stdin_json_stream_and_kind_list(agentgroup: Run) -> None:
    group = {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "metadata": {"name": "from-json"},
        "spec": {"agents": [{"name": "a", "runtimeRef": {"kind": "AgentRuntime", "name": "rt"}}]},
    }
    runtimes = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
                "kind": "AgentRuntime",
                "metadata": {"name": "rt"},
            }
        ],
    }

    proc = agentgroup(
        "validate", "-o", "json", "-f", "-", stdin=json.dumps(runtimes) + "\n" + json.dumps(group)
    )

    assert proc.returncode == 0, proc.stderr
    assert [(r["source"], r["name"], r["allowed"]) for r in json.loads(proc.stdout)["results"]] == [
        ("<stdin>", "from-json", True)
    ]


def test_a_directory_is_read_recursively_in_sorted_order(agentgroup: Run, tmp_path: Path) -> None:
    write(tmp_path / "b" / "two.yml", group_yaml("two"))
    write(tmp_path / "a.yaml", group_yaml("one"))
    write(tmp_path / "c" / "d" / "three.json", json.dumps({**_group_json("three")}))
    write(tmp_path / "notes.txt", "not a manifest")

    proc = agentgroup("validate", "-f", str(tmp_path))

    assert proc.returncode == 0, proc.stderr
    assert [line.split(" ")[0] for line in proc.stdout.splitlines()[:-1]] == [
        "default/one",
        "default/two",
        "default/three",
    ]


def _group_json(name: str) -> dict[str, object]:
    return {
        "apiVersion": "runtime.agentcube.volcano.sh/v1alpha1",
        "kind": "AgentGroup",
        "metadata": {"name": name},
        "spec": {"agents": [{"name": "a", "runtimeRef": {"kind": "AgentRuntime", "name": "planner-rt"}}]},
    }


def test_multi_document_yaml_with_empty_documents(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "all.yaml", "---\n" + group_yaml("one") + "---\n---\n" + group_yaml("two"))

    proc = agentgroup("validate", "-f", path, "--runtimes", RUNTIMES)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "2 groups: 2 allowed, 0 denied"


def test_runtimes_count_only_in_their_own_namespace(agentgroup: Run, tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml",
        runtime_yaml("rt", "team-a")
        + "---\n"
        + group_yaml("in-a", "team-a", "rt")
        + "---\n"
        + group_yaml("in-b", "team-b", "rt"),
    )

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 1
    assert "team-a/in-a (" in proc.stdout
    assert proc.stdout.splitlines()[1:3] == [
        f"team-b/in-b ({path}): denied",
        '  spec.agents[0].runtimeRef: RuntimeNotFound: AgentRuntime "rt" does not exist in namespace '
        '"team-b"; create it first or fix runtimeRef',
    ]


def test_runtimes_option_takes_a_directory(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-f", "examples/bad/RuntimeNotFound.yaml", "--runtimes", "examples/good")

    assert proc.returncode == 1
    assert "RuntimeNotFound" in proc.stdout
    assert "note: examples/good/02-group.yaml:4: ignored" in proc.stderr


def test_namespace_option_places_objects_without_a_namespace(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-n", "team-a", "-f", "examples/good/02-group.yaml", "--runtimes", RUNTIMES)

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("team-a/research-task (examples/good/02-group.yaml): allowed\n")


def test_namespace_option_conflicting_with_the_object_is_an_error(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", group_yaml("g", "team-b"))

    proc = agentgroup("validate", "-n", "team-a", "-f", path)

    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f'{path}:1: AgentGroup "g" is in namespace "team-b", but --namespace is "team-a"; '
        "drop one of them (kubectl apply refuses this too)"
    )


def test_without_runtimes_references_are_not_checked_and_a_warning_says_so(agentgroup: Run) -> None:
    proc = agentgroup("validate", "-f", "examples/bad/RuntimeNotFound.yaml")

    assert proc.returncode == 0
    assert proc.stderr == (
        "warning: runtime references were not checked: the inputs hold no CodeInterpreter or "
        "AgentRuntime; pass --runtimes PATH or --cluster to check them\n"
    )


def test_other_documents_are_ignored_with_a_note(agentgroup: Run, tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n---\n" + group_yaml("g"),
    )

    text = agentgroup("validate", "-f", path, "--runtimes", RUNTIMES)
    as_json = agentgroup("validate", "-o", "json", "-f", path, "--runtimes", RUNTIMES)

    assert text.returncode == as_json.returncode == 0
    assert text.stderr == (
        f"note: {path}:1: ignored v1 ConfigMap: not an AgentGroup or an agentcube runtime of "
        "runtime.agentcube.volcano.sh\n"
    )
    assert as_json.stderr == ""


def test_an_agentgroup_of_another_api_version_is_denied(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "g.yaml", group_yaml().replace("v1alpha1", "v1beta1"))

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 1
    assert "  kind: InvalidSpec: expected apiVersion runtime.agentcube.volcano.sh/v1alpha1" in proc.stdout


# --- policies -------------------------------------------------------------------------------------


def test_policy_violation(agentgroup: Run) -> None:
    proc = agentgroup(
        "validate",
        "-f",
        "examples/bad/PolicyViolation.yaml",
        "--policy",
        "examples/bad/PolicyViolation.policy.yaml",
        "--runtimes",
        RUNTIMES,
    )

    assert proc.returncode == 1
    assert proc.stdout.splitlines()[1] == (
        '  spec.agents[1].replicas: PolicyViolation: policy "small-fleets" allows at most 3 replicas '
        'per agent, got 8 for "coder"'
    )


@pytest.mark.parametrize(
    ("action", "status", "line"),
    [
        ("warn", 0, '  warning: spec.agents: PolicyViolation: policy "p" allows at most 1 agent, got 3'),
        ("dryrun", 0, '  dryrun (not enforced): spec.agents: PolicyViolation: policy "p" allows at most'),
        ("deny", 1, '  spec.agents: PolicyViolation: policy "p" allows at most 1 agent, got 3'),
    ],
)
def test_policy_actions(agentgroup: Run, tmp_path: Path, action: str, status: int, line: str) -> None:
    policy = write(
        tmp_path / "p.yaml",
        f"""
        apiVersion: runtime.agentcube.volcano.sh/v1alpha1
        kind: AgentGroupPolicy
        metadata: {{name: p}}
        spec: {{enforcementAction: {action}, maxAgents: 1}}
        """,
    )

    proc = agentgroup("validate", "-f", "examples/good", "--policy", policy)

    assert proc.returncode == status
    assert proc.stdout.splitlines()[1].startswith(line)


POLICY_CHECK = ("-n", "team-a", "-f", "examples/policy-check/wide-sweep.yaml", "--runtimes", RUNTIMES)


def test_a_namespace_among_the_inputs_lends_its_labels_to_namespace_selectors(agentgroup: Run) -> None:
    policy = ("--policy", "examples/policies/team-limits.yaml")  # selects team-tier=standard

    labelled = agentgroup("validate", *POLICY_CHECK, "-f", "examples/policy-check/team-a.yaml", *policy)
    unknown = agentgroup("validate", *POLICY_CHECK, *policy)

    assert labelled.returncode == 1
    assert labelled.stdout.splitlines()[1] == (
        '  spec.agents: PolicyViolation: policy "team-limits" allows at most 10 agents, got 12'
    )
    assert labelled.stderr == ""
    assert unknown.returncode == 0
    assert unknown.stderr == (
        'note: namespace "team-a" is not among the inputs, so policies selecting namespaces by label '
        '("team-limits") see only kubernetes.io/metadata.name=team-a; add its Namespace object with -f '
        "to apply them as the cluster would\n"
    )


def test_every_example_policy_applies_to_the_example_group(agentgroup: Run) -> None:
    proc = agentgroup(
        "validate", *POLICY_CHECK, "-f", "examples/policy-check/team-a.yaml", "--policy", "examples/policies"
    )

    assert proc.returncode == 1
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0] == "team-a/wide-sweep (examples/policy-check/wide-sweep.yaml): denied"
    assert [line.split(": PolicyViolation: ")[0] for line in lines[1:4]] == [
        "  spec.agents",
        "  warning: metadata.labels",
        "  dryrun (not enforced): spec.agents[0].runtimeRef.kind",
    ]
    assert sum('policy "cold-only-rollout"' in line for line in lines) == 12


def test_a_policy_among_the_manifests_is_not_applied(agentgroup: Run) -> None:
    proc = agentgroup(
        "validate",
        "-f",
        "examples/bad/PolicyViolation.yaml",
        "-f",
        "examples/bad/PolicyViolation.policy.yaml",
    )

    assert proc.returncode == 0
    assert "AgentGroupPolicy: policies are applied only from --policy files" in proc.stderr


def test_an_invalid_policy_is_an_input_error(agentgroup: Run, tmp_path: Path) -> None:
    policy = write(
        tmp_path / "p.yaml",
        """
        apiVersion: runtime.agentcube.volcano.sh/v1alpha1
        kind: AgentGroupPolicy
        metadata: {name: p}
        spec: {enforcementAction: block}
        """,
    )

    proc = agentgroup("validate", "-f", "examples/good", "--policy", policy)

    assert proc.returncode == 2
    assert proc.stderr.startswith(f'{policy}:1: AgentGroupPolicy "p" is invalid: spec.enforcementAction: ')


# --- unreadable input and bad usage ---------------------------------------------------------------


def test_malformed_yaml_names_file_line_and_column(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", "apiVersion: v1\nkind: AgentGroup\nmetadata:\n  name: a: b\n")

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == f"{path}:4:10: could not parse YAML: mapping values are not allowed here\n"


def test_malformed_json_names_file_line_and_column(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "x.json", '{\n  "kind": "AgentGroup",\n  "metadata": {name}\n}\n')

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 2
    assert proc.stderr == (
        f"{path}:3:16: could not parse JSON: Expecting property name enclosed in double quotes\n"
    )


def test_a_document_without_kind_names_file_line_and_document(agentgroup: Run, tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml", group_yaml() + "---\n# the second one\napiVersion: v1\nmetadata: {name: x}\n"
    )

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 2
    assert proc.stderr.startswith(
        f"{path}:11: document 2 has no kind; every object needs apiVersion and kind"
    )


def test_an_object_without_a_name_is_an_input_error(agentgroup: Run, tmp_path: Path) -> None:
    path = write(tmp_path / "x.yaml", group_yaml().replace("name: g", "labels: {}"))

    proc = agentgroup("validate", "-f", path)

    assert proc.returncode == 2
    assert proc.stderr == f"{path}:1: AgentGroup has no metadata.name; give every object a name\n"


def test_every_unreadable_input_is_reported(agentgroup: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()

    proc = agentgroup(
        "validate", "-f", "no/such/file.yaml", "-f", str(empty), "--runtimes", "missing-runtimes/"
    )

    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "no/such/file.yaml: no such file or directory; check the path",
        f"{empty}: the directory holds no .yaml, .yml, .json files",
        "missing-runtimes/: no such file or directory; check the path",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["validate"], "the following arguments are required: -f/--filename"),
        (["validate", "-f", "examples/good", "-o", "yaml"], "argument -o/--output: invalid choice: 'yaml'"),
        (["validate", "-f", "examples/good", "-n", "Team_A"], "'Team_A' is not a namespace name"),
        (["validate", "-f", "-", "--runtimes", "-"], "'-' (stdin) can be read only once"),
        (["validate", "-f", "examples/good", "--bogus"], "unrecognized arguments: --bogus"),
        (
            ["validate", "-f", "examples/good", "--kubeconfig", "kc"],
            "--kubeconfig is used only with --cluster",
        ),
        (["valdiate"], "invalid choice: 'valdiate'"),
        ([], "usage: agentgroup"),
    ],
)
def test_bad_usage_exits_2_with_a_message(agentgroup: Run, args: list[str], message: str) -> None:
    proc = agentgroup(*args)

    assert proc.returncode == 2
    assert message in proc.stderr


def test_cluster_with_an_unusable_kubeconfig_exits_2(agentgroup: Run, tmp_path: Path) -> None:
    missing = tmp_path / "no-kubeconfig"

    proc = agentgroup(
        "validate",
        "-f",
        "examples/good",
        "--cluster",
        env={"KUBECONFIG": str(missing), "KUBERNETES_SERVICE_HOST": ""},
    )

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"--cluster: kubeconfig '{missing}' does not exist")


def test_cluster_that_cannot_be_reached_exits_2(agentgroup: Run, tmp_path: Path) -> None:
    kubeconfig = write(
        tmp_path / "kubeconfig",
        """
        apiVersion: v1
        kind: Config
        clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
        users: [{name: u, user: {token: t}}]
        contexts: [{name: x, context: {cluster: c, user: u}}]
        current-context: x
        """,
    )

    proc = agentgroup("validate", "-f", "examples/good", "--cluster", "--kubeconfig", kubeconfig)

    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("--cluster: cannot list the runtimes: ConnectionError: GET /apis/")
    assert proc.stderr.rstrip().endswith("check that `kubectl get agentruntimes` works")


# --- the command itself ---------------------------------------------------------------------------


def test_version_and_help(agentgroup: Run) -> None:
    version = agentgroup("--version")
    helps = agentgroup("--help")

    assert version.returncode == helps.returncode == 0
    assert version.stdout.startswith("agentgroup 0.")
    assert "validate" in helps.stdout


def test_a_reader_that_stops_early_gets_no_traceback(tmp_path: Path) -> None:
    path = write(tmp_path / "many.yaml", "---\n".join(group_yaml(f"g{i}") for i in range(3000)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentgroup", "validate", "-f", path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None

    first = proc.stdout.readline()
    proc.stdout.close()  # like `| head -1`
    err = proc.stderr.read()

    assert proc.wait(timeout=60) == 1
    assert first == f"default/g0 ({path}): allowed\n"
    assert "Traceback" not in err
    assert "BrokenPipeError" not in err
