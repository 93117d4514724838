"""Sandbox names (API.md section 4): readable when possible, always valid, stable and unique."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.naming import DNS1035_LABEL, is_dns1035_label, is_dns1123_label, label_value, sandbox_name
from tests.core.strategies import PROPERTY, labels, replica_indices, subdomains

DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HASHED = re.compile(r"^(?P<prefix>[a-z][-a-z0-9]*)-(?P<hash>[a-z2-7]{10})-(?P<index>[0-9]+)$")


@pytest.mark.parametrize(
    ("group", "agent", "index", "name"),
    [
        ("research-task", "planner", 0, "research-task-planner-0"),
        ("research-task", "coder", 12, "research-task-coder-12"),
        ("g", "a", 0, "g-a-0"),
    ],
)
def test_short_names_are_readable(group: str, agent: str, index: int, name: str) -> None:
    assert sandbox_name(group, agent, index) == name


@pytest.mark.parametrize(
    ("group", "agent", "why"),
    [
        ("a" * 40, "b" * 30, "longer than 63"),
        ("team.research", "planner", "a dot is no DNS-1035 label character"),
        ("42-task", "planner", "a DNS-1035 label starts with a letter"),
    ],
)
def test_names_that_would_be_invalid_are_shortened_with_a_hash(group: str, agent: str, why: str) -> None:
    name = sandbox_name(group, agent, 3)

    assert is_dns1035_label(name), why
    match = HASHED.match(name)
    assert match, name
    assert match["index"] == "3"
    assert sandbox_name(group, agent, 3) == name


def test_a_hashed_name_keeps_a_readable_prefix() -> None:
    name = sandbox_name("nightly-research-task-for-the-platform-team", "literature-reviewer", 0)

    assert len(name) <= 63
    assert name.startswith("nightly-research-task-for-the-platform-team-lit")


def test_agents_whose_readable_prefix_is_cut_off_still_differ() -> None:
    group = "g" * 60
    names = {sandbox_name(group, f"agent-{i}", 0) for i in range(100)}

    assert len(names) == 100


def test_the_hash_separates_where_the_group_ends() -> None:
    assert sandbox_name("1a-b", "c", 0) != sandbox_name("1a", "b-c", 0)


@PROPERTY
@given(group=subdomains, agent=labels, index=replica_indices)
def test_every_name_is_a_short_dns1035_label_and_a_valid_object_name(
    group: str, agent: str, index: int
) -> None:
    name = sandbox_name(group, agent, index)

    assert len(name) <= 63
    assert DNS1035_LABEL.match(name)
    assert DNS1123_SUBDOMAIN.match(name)
    assert name == sandbox_name(group, agent, index)
    assert name.endswith(f"-{index}")


@PROPERTY
@given(
    group=subdomains,
    agents=st.lists(labels, min_size=1, max_size=8, unique=True),
    replicas=st.integers(min_value=1, max_value=12),
)
def test_names_are_unique_within_a_group(group: str, agents: list[str], replicas: int) -> None:
    names = [sandbox_name(group, a, i) for a in agents for i in range(replicas)]

    assert len(set(names)) == len(names)


@PROPERTY
@given(agent=labels)
def test_the_label_strategy_only_makes_names_validation_accepts(agent: str) -> None:
    assert is_dns1123_label(agent)


@pytest.mark.parametrize("name", ["coder\n", "coder\n\n", "a" * 64])
def test_names_with_a_trailing_newline_or_too_long_are_not_labels(name: str) -> None:
    assert not is_dns1123_label(name)
    assert not is_dns1035_label(name)
    assert label_value(name) != name


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("research-task", True),
        ("Research_Task.v2", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("team/research", False),
        ("-leading", False),
        ("", True),
    ],
)
def test_label_values_are_kept_when_valid_and_hashed_otherwise(value: str, valid: bool) -> None:
    out = label_value(value)

    assert (out == value) is valid
    assert len(out) <= 63
    assert re.match(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$", out)
    assert label_value(value) == out


@PROPERTY
@given(a=st.text(max_size=100), b=st.text(max_size=100))
def test_label_values_are_valid_and_distinct_for_distinct_long_inputs(a: str, b: str) -> None:
    pattern = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
    for value in (a, b):
        assert len(label_value(value)) <= 63
        assert pattern.match(label_value(value))
    if a != b:
        assert label_value(a) != label_value(b)
