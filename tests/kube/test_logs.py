"""Process logging: one JSON object per line with the record's extra keys, or readable text."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import datetime

import pytest

from agentgroup.logs import setup_logging


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_json_lines_carry_the_extra_keys(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    logging.getLogger("agentgroup.controller").info(
        "created sandbox %s", "x", extra={"group": "ns/name", "sandbox": "x"}
    )
    [line] = lines(capsys)
    entry = json.loads(line)
    assert entry.keys() == {"ts", "level", "logger", "msg", "group", "sandbox"}
    assert entry["level"] == "info"
    assert entry["logger"] == "agentgroup.controller"
    assert entry["msg"] == "created sandbox x"
    assert (entry["group"], entry["sandbox"]) == ("ns/name", "x")
    assert datetime.fromisoformat(entry["ts"]).tzinfo is not None


def test_a_traceback_stays_inside_one_json_line(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logging.getLogger("x").exception("reconcile failed", extra={"group": "ns/g"})
    [line] = lines(capsys)
    entry = json.loads(line)
    assert entry["level"] == "error"
    assert entry["group"] == "ns/g"
    assert "Traceback" in entry["exc"]
    assert "RuntimeError: boom" in entry["exc"]


def test_values_json_cannot_encode_are_written_as_text(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    logging.getLogger("x").info("odd", extra={"thing": frozenset({3}), "path": object})
    entry = json.loads(lines(capsys)[0])
    assert entry["thing"] == "frozenset({3})"
    assert entry["path"] == "<class 'object'>"


def test_the_level_filters_records(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning", "json")
    log = logging.getLogger("x")
    log.info("quiet")
    log.warning("loud")
    assert [json.loads(line)["msg"] for line in lines(capsys)] == ["loud"]


def test_text_format_is_readable_with_extras(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("debug", "text")
    logging.getLogger("agentgroup.webhook").debug("denied", extra={"group": "ns/g"})
    [line] = lines(capsys)
    assert line.endswith("DEBUG   agentgroup.webhook: denied group=ns/g")


def test_uvicorn_logs_go_through_the_same_handler(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    logging.getLogger("uvicorn.error").info("Started server process")
    assert json.loads(lines(capsys)[0])["logger"] == "uvicorn.error"


def test_setting_up_twice_does_not_duplicate_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "json")
    setup_logging("info", "json")
    logging.getLogger("x").info("once")
    assert len(lines(capsys)) == 1


@pytest.mark.parametrize(
    ("level", "fmt", "message"), [("loud", "json", "log level"), ("info", "xml", "log format")]
)
def test_bad_settings_are_clear_errors(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        setup_logging(level, fmt)  # type: ignore[arg-type]
