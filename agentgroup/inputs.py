"""Reading Kubernetes objects from files, directories and stdin, the way ``kubectl apply -f`` does.

A path is a file, a directory (every ``*.yaml``, ``*.yml`` and ``*.json`` below it, in sorted order)
or ``-`` for stdin. A file holds one or more YAML documents or a stream of JSON values; a ``kind: List``
(or ``<Kind>List``) contributes its ``items``. Every problem is an :class:`InputError` whose message
starts with the file, and ``:<line>[:<column>]`` when there is one, so an editor can jump to it.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import yaml

STDIN = "-"
STDIN_SOURCE = "<stdin>"
YAML_SUFFIXES = (".yaml", ".yml")
SUFFIXES = (*YAML_SUFFIXES, ".json")
_NON_SPACE = re.compile(r"\S")


class InputError(Exception):
    """Input that cannot be read; the message names the file (and line) and what to do about it."""


@dataclass(frozen=True, slots=True)
class Document:
    """One object: where it came from and its content (a mapping with a string ``kind``)."""

    source: str
    line: int
    obj: Mapping[str, Any]

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion") or "")


class _Loader(yaml.SafeLoader):
    """YAML as the API server reads it: timestamps stay strings (``creationTimestamp`` is a string)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def files(path: str) -> list[str]:
    """The files ``path`` names: itself, or every manifest under a directory in sorted order."""
    if path == STDIN:
        return [STDIN]
    p = Path(path)
    if p.is_dir():
        found = sorted(
            (Path(root, name).relative_to(p).parts for root, _, names in os.walk(p) for name in names),
        )
        out = [os.path.join(path, *parts) for parts in found if parts[-1].endswith(SUFFIXES)]
        if not out:
            raise InputError(f"{path}: the directory holds no {', '.join(SUFFIXES)} files")
        return out
    if not p.exists():
        raise InputError(f"{path}: no such file or directory; check the path")
    return [path]


def _text(path: str, stdin: TextIO) -> str:
    if path == STDIN:
        return stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise InputError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8"
        ) from err
    except OSError as err:
        raise InputError(f"{path}: cannot read: {err.strerror}") from err


def _is_json(path: str, text: str) -> bool:
    if path.endswith(".json"):
        return True
    return not path.endswith(YAML_SUFFIXES) and text.lstrip()[:1] in ("{", "[")


def _yaml_documents(source: str, text: str) -> Iterator[tuple[int, Any]]:
    loader = _Loader(text)
    try:
        while loader.check_node():
            node = loader.get_node()
            assert node is not None  # check_node() saw one
            yield node.start_mark.line + 1, loader.construct_document(node)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        what = err.problem or err.context or "invalid YAML"
        if err.problem and err.context:
            what = f"{err.problem} ({err.context})"
        raise InputError(f"{where}: could not parse YAML: {what}") from err
    except yaml.YAMLError as err:
        raise InputError(f"{source}: could not parse YAML: {err}") from err
    finally:
        loader.dispose()


def _json_documents(source: str, text: str) -> Iterator[tuple[int, Any]]:
    """A stream of JSON values separated by whitespace (what ``kubectl get -o json`` pipes produce)."""
    decoder = json.JSONDecoder()
    pos, line = 0, 1
    while True:
        found = _NON_SPACE.search(text, pos)
        if found is None:
            return
        start = found.start()
        line += text.count("\n", pos, start)
        try:
            value, pos = decoder.raw_decode(text, start)
        except json.JSONDecodeError as err:
            raise InputError(f"{source}:{err.lineno}:{err.colno}: could not parse JSON: {err.msg}") from err
        yield line, value
        line += text.count("\n", start, pos)


def _objects(where: str, value: Any, what: str) -> Iterator[Mapping[str, Any]]:
    """``value`` itself, or the items of a List; each must be an object with a kind."""
    if not isinstance(value, Mapping):
        raise InputError(f"{where}: {what} is not an object (a YAML/JSON mapping with apiVersion and kind)")
    kind = value.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InputError(
            f"{where}: {what} has no kind; every object needs apiVersion and kind, for example "
            "apiVersion: runtime.agentcube.volcano.sh/v1alpha1 and kind: AgentGroup"
        )
    items = value.get("items")
    if kind.endswith("List") and isinstance(items, list):
        for i, item in enumerate(items):
            yield from _objects(where, item, f"items[{i}] of {what}")
    else:
        yield value


def read(path: str, stdin: TextIO = sys.stdin) -> list[Document]:
    """Every object in the file ``path`` (or stdin for ``-``); empty documents are skipped."""
    source = STDIN_SOURCE if path == STDIN else path
    text = _text(path, stdin)
    parse = _json_documents if _is_json(path, text) else _yaml_documents
    out: list[Document] = []
    for index, (line, value) in enumerate(parse(source, text), start=1):
        if value is None:
            continue
        where = f"{source}:{line}"
        out.extend(Document(source, line, obj) for obj in _objects(where, value, f"document {index}"))
    return out
