"""The shipped examples say what they claim: good ones validate clean, examples/bad/<Reason>.yaml
yields exactly <Reason>."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentgroup.inputs import Document, read
from shared.findings import Reason
from shared.models import KIND, RUNTIME_KINDS
from shared.policy import POLICY_KIND, AgentGroupPolicy
from shared.rules import RuntimeKey, validate

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
GOOD = sorted((EXAMPLES / "good").glob("*.yaml"))
BAD = sorted(p for p in (EXAMPLES / "bad").glob("*.yaml") if p.stem in set(Reason))


def documents(paths: list[Path]) -> list[Document]:
    return [doc for p in paths for doc in read(str(p))]


def good_runtimes() -> set[RuntimeKey]:
    return {(d.kind, d.obj["metadata"]["name"]) for d in documents(GOOD) if d.kind in RUNTIME_KINDS}


def the_group(path: Path) -> Document:
    (doc,) = [d for d in read(str(path)) if d.kind == KIND]
    return doc


def test_the_good_example_holds_a_group_and_the_runtimes_it_needs() -> None:
    docs = documents(GOOD)
    groups = [d for d in docs if d.kind == KIND]

    assert [g.obj["metadata"]["name"] for g in groups] == ["research-task"]
    assert good_runtimes() == {
        ("AgentRuntime", "planner-rt"),
        ("AgentRuntime", "reviewer-rt"),
        ("CodeInterpreter", "py-interp"),
    }
    assert all("namespace" not in d.obj["metadata"] for d in docs), "kubectl -n chooses the namespace"
    first_group = min(i for i, d in enumerate(docs) if d.kind == KIND)
    assert all(d.kind in RUNTIME_KINDS for d in docs[:first_group]), "runtimes are applied first"


def test_every_good_group_validates_clean() -> None:
    for doc in documents(GOOD):
        if doc.kind == KIND:
            verdict = validate(doc.obj, runtimes=good_runtimes())
            assert (verdict.violations, verdict.warnings) == ((), ()), doc.where


def test_there_is_one_bad_example_per_reason_code_of_the_rule_table() -> None:
    not_rules = {Reason.INVALID_SPEC, Reason.DUPLICATE_DEPENDENCY}
    assert {p.stem for p in BAD} == {r.value for r in Reason} - not_rules


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_each_bad_example_yields_its_reason_only(path: Path) -> None:
    policies = [
        AgentGroupPolicy.model_validate(d.obj)
        for d in read(str(EXAMPLES / "bad" / "PolicyViolation.policy.yaml"))
        if d.kind == POLICY_KIND
    ]

    verdict = validate(the_group(path).obj, runtimes=good_runtimes(), policies=policies)

    assert {v.reason for v in verdict.violations} == {path.stem}
    assert verdict.warnings == ()
    assert f"# {path.stem}: " in path.read_text(), "the header says what is wrong"


def test_many_violations_reports_every_rule_at_once() -> None:
    verdict = validate(the_group(EXAMPLES / "bad" / "many-violations.yaml").obj, runtimes=good_runtimes())

    assert {v.reason for v in verdict.violations} == {r.value for r in Reason} - {
        Reason.NO_AGENTS,
        Reason.POLICY_VIOLATION,
        Reason.INVALID_SPEC,
        Reason.DUPLICATE_DEPENDENCY,
    }
    assert [w.reason for w in verdict.warnings] == [Reason.DUPLICATE_DEPENDENCY]
