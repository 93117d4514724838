"""The ``agentgroup`` entry point: subcommand discovery, exit statuses, and the last-resort error line."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agentgroup import cli


@pytest.fixture
def commands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Subcommand modules of every sort: working, failing at run time, missing, with a missing import."""
    pkg = tmp_path / "fakecmds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    register = """
        def register(subparsers):
            p = subparsers.add_parser({name!r}, help='the {name} command')
            p.set_defaults(func=run)
    """
    (pkg / "ok.py").write_text(
        textwrap.dedent(register.format(name="ok")) + "\ndef run(args):\n    return 0\n"
    )
    (pkg / "crash.py").write_text(
        textwrap.dedent(register.format(name="crash")) + "\ndef run(args):\n    raise RuntimeError('boom')\n"
    )
    (pkg / "needs_dep.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        cli,
        "SUBCOMMANDS",
        {"ok": "fakecmds.ok", "crash": "fakecmds.crash", "later": "fakecmds.later", "gone": "nopkg.cli"},
    )
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)


@pytest.mark.usefixtures("commands")
def test_modules_not_in_this_build_yet_are_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0

    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines() if " command" in line]
    assert listed == ["ok", "crash"]


@pytest.mark.usefixtures("commands")
def test_a_missing_dependency_of_an_existing_module_is_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "dep", "fakecmds.needs_dep")

    with pytest.raises(ModuleNotFoundError, match="a_dependency_that_is_not_installed"):
        cli.main(["--help"])


@pytest.mark.usefixtures("commands")
def test_only_the_chosen_command_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cli.SUBCOMMANDS, "dep", "fakecmds.needs_dep")

    assert cli.main(["ok"]) == 0


@pytest.mark.usefixtures("commands")
def test_an_unexpected_error_is_one_line_and_exit_70(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["crash"]) == 70

    err = capsys.readouterr().err
    assert err.startswith("agentgroup: internal error: RuntimeError: boom\n")
    assert f"{cli.DEBUG_ENV}=1" in err


@pytest.mark.usefixtures("commands")
def test_debug_mode_shows_the_real_exception(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.DEBUG_ENV, "1")

    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["crash"])


@pytest.mark.usefixtures("commands")
def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: agentgroup" in capsys.readouterr().err
