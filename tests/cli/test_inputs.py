"""Reading manifests: formats, positions and the messages for input that cannot be read."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from agentgroup.inputs import InputError, files, read


def obj(kind: str, name: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": kind, "metadata": {"name": name}}


def names(path: Path | str, stdin: str = "") -> list[tuple[int, str]]:
    return [(d.line, d.obj["metadata"]["name"]) for d in read(str(path), io.StringIO(stdin))]


def test_yaml_documents_carry_the_line_they_start_on(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("# comment\nkind: A\nmetadata: {name: a}\n---\n\n---\nkind: B\nmetadata:\n  name: b\n")

    assert names(path) == [(2, "a"), (7, "b")]


def test_a_json_stream_carries_lines_too(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(obj("A", "a"), indent=2) + "\n\n" + json.dumps(obj("B", "b")) + "\n")

    assert names(path) == [(1, "a"), (9, "b")]


def test_lists_contribute_their_items_including_nested_lists(tmp_path: Path) -> None:
    inner = {"kind": "AgentRuntimeList", "items": [obj("AgentRuntime", "rt")]}
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [obj("A", "a"), inner]}))

    assert names(path) == [(1, "a"), (1, "rt")]


def test_a_list_item_without_kind_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("kind: List\nitems:\n- {kind: A, metadata: {name: a}}\n- {metadata: {name: b}}\n")

    with pytest.raises(InputError, match=r"x\.yaml:1: items\[1\] of document 1 has no kind"):
        read(str(path))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- a\n- b\n", "x.yaml:1: document 1 is not an object"),
        ("kind: 7\n", "x.yaml:1: document 1 has no kind"),
        (
            'kind: A\nname: "unterminated\n',
            "x.yaml:3:1: could not parse YAML: found unexpected end of stream",
        ),
        ("kind: A\n\tname: x\n", "x.yaml:2:1: could not parse YAML: found character '\\t'"),
    ],
)
def test_unreadable_yaml(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(text)

    with pytest.raises(InputError) as err:
        read(str(path))
    assert str(err.value).startswith(f"{tmp_path}/{message}")


def test_a_yaml_error_keeps_its_context(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text('kind: A\nname: "unterminated\n')

    with pytest.raises(InputError, match=r"\(while scanning a quoted scalar\)$"):
        read(str(path))


def test_timestamps_stay_strings_as_in_the_api(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("kind: A\nmetadata: {name: a, creationTimestamp: 2026-01-02T03:04:05Z}\n")

    (doc,) = read(str(path))

    assert doc.obj["metadata"]["creationTimestamp"] == "2026-01-02T03:04:05Z"


def test_a_byte_order_mark_is_accepted_and_other_encodings_are_named(tmp_path: Path) -> None:
    bom = tmp_path / "bom.yaml"
    bom.write_bytes(b"\xef\xbb\xbfkind: A\nmetadata: {name: a}\n")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"kind: A\nmetadata: {name: caf\xe9}\n")

    assert names(bom) == [(1, "a")]
    with pytest.raises(InputError, match=r"latin\.yaml: not UTF-8 text .*; save it as UTF-8"):
        read(str(latin))


def test_stdin_and_files_without_a_manifest_suffix_are_sniffed(tmp_path: Path) -> None:
    stream = json.dumps(obj("A", "a")) + json.dumps(obj("B", "b"))
    odd = tmp_path / "manifest.txt"
    odd.write_text(stream)

    assert names("-", stream) == [(1, "a"), (1, "b")]
    assert names(odd) == [(1, "a"), (1, "b")]
    assert names("-", "kind: A\nmetadata: {name: y}\n") == [(1, "y")]
    assert read("-", io.StringIO(stream))[0].source == "<stdin>"


def test_directories_list_manifests_recursively_in_sorted_order(tmp_path: Path) -> None:
    for rel in ["b/2.yml", "a.yaml", "b/1.json", "b/c/0.yaml", "README.md", "b-c.yaml"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")

    assert [Path(p).relative_to(tmp_path).as_posix() for p in files(str(tmp_path))] == [
        "a.yaml",
        "b/1.json",
        "b/2.yml",
        "b/c/0.yaml",
        "b-c.yaml",
    ]
    assert files(str(tmp_path / "README.md")) == [str(tmp_path / "README.md")]
    assert files("-") == ["-"]
