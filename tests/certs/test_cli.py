from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certs import pki
from certs.check import service_dns_names
from certs.cli import add_rotator_arguments, parse_duration, register, rotator_settings


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="agentgroup")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def generate(out: Path, *extra: str) -> int:
    return run("certs", "generate", "--service", "wh", "--namespace", "ag", "--out", str(out), *extra)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("365d", timedelta(days=365)), ("1h30m", timedelta(minutes=90)), ("90s", timedelta(seconds=90))],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1x", "10", "0s", "-1d", "1d 2h"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="invalid duration"):
        parse_duration(text)


def test_generate_then_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert generate(out, "--ip", "127.0.0.1") == 0
    printed = capsys.readouterr().out
    assert "SANs: wh, wh.ag, wh.ag.svc, wh.ag.svc.cluster.local, 127.0.0.1" in printed
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert (out / "tls.key").stat().st_mode & 0o077 == 0
    assert run("certs", "check", str(out), "--service", "wh", "--namespace", "ag") == 0
    printed = capsys.readouterr().out
    assert "SANs:       wh, wh.ag, wh.ag.svc, wh.ag.svc.cluster.local, 127.0.0.1" in printed
    assert "ok: the certificate, key and CA match and are valid" in printed


def test_generate_again_reuses_the_ca_unless_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate(tmp_path) == 0
    ca = (tmp_path / "ca.crt").read_bytes()
    leaf = (tmp_path / "tls.crt").read_bytes()
    assert generate(tmp_path) == 0
    assert "reusing the CA" in capsys.readouterr().out
    assert (tmp_path / "ca.crt").read_bytes() == ca
    assert (tmp_path / "tls.crt").read_bytes() != leaf
    assert generate(tmp_path, "--new-ca") == 0
    assert (tmp_path / "ca.crt").read_bytes() != ca


def test_generate_refuses_half_a_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.key").write_bytes(b"x")
    assert generate(tmp_path) == 2
    assert f"{tmp_path / 'ca.key'} exists without its partner file" in capsys.readouterr().err


def test_generate_refuses_a_broken_ca(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "ca.crt").write_bytes(b"junk")
    (tmp_path / "ca.key").write_bytes(b"junk")
    assert generate(tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'ca.crt'}: CorruptPEM" in err
    assert "--new-ca" in err


def test_generate_bad_usage(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert generate(tmp_path / "file") == 2
    assert "is not a directory" in capsys.readouterr().err
    assert generate(tmp_path / "d", "--ip", "300.1.1.1") == 2
    assert "--ip" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        generate(tmp_path, "--validity", "1y")
    assert exit_info.value.code == 2


def write(directory: Path, **files: bytes) -> Path:
    directory.mkdir(exist_ok=True)
    for name, content in files.items():
        (directory / name.replace("_", ".")).write_bytes(content)
    return directory


def test_check_reports_each_problem_with_its_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    now = datetime.now(UTC)
    ca = pki.new_ca("ca", valid_for=timedelta(days=10), now=now - timedelta(days=5))
    expired = pki.new_serving_cert(ca, ["wh"], valid_for=timedelta(days=1), now=now - timedelta(days=3))
    d = write(tmp_path / "x", tls_crt=expired.cert_pem, tls_key=ca.key_pem, ca_crt=ca.cert_pem)
    assert run("certs", "check", str(d), "--service", "wh", "--namespace", "ag") == 1
    out = capsys.readouterr().out
    assert f"{d / 'tls.key'}: KeyMismatch" in out
    assert f"{d / 'tls.crt'}: Expired" in out
    assert f"{d / 'tls.crt'}: WrongSANs" in out
    assert "EXPIRED" in out


def test_check_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    generate(tmp_path)
    capsys.readouterr()
    assert run("certs", "check", str(tmp_path), "--dns-name", "other.example", "-o", "json") == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert [(p["code"], p["file"]) for p in doc["problems"]] == [("WrongSANs", str(tmp_path / "tls.crt"))]
    assert doc["certificates"]["tls.crt"][0]["dnsNames"] == list(service_dns_names("wh", "ag"))
    assert doc["certificates"]["ca.crt"][0]["isCA"] is True


def test_check_warns_but_passes_when_renewal_is_due(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    now = datetime.now(UTC)
    ca = pki.new_ca("ca", valid_for=timedelta(days=100), now=now - timedelta(days=1))
    leaf = pki.new_serving_cert(ca, ["wh"], valid_for=timedelta(days=30), now=now - timedelta(days=25))
    d = write(tmp_path / "x", tls_crt=leaf.cert_pem, tls_key=leaf.key_pem, ca_crt=ca.cert_pem)
    assert run("certs", "check", str(d)) == 0
    assert f"warning: {d / 'tls.crt'}: ExpiresSoon" in capsys.readouterr().out


def test_check_unreadable_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("certs", "check", str(tmp_path / "missing")) == 2
    assert "is not a directory" in capsys.readouterr().err
    write(tmp_path / "x", tls_crt=b"", tls_key=b"")
    assert run("certs", "check", str(tmp_path / "x")) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x' / 'ca.crt'} does not exist" in err
    assert "Traceback" not in err
    assert run("certs", "check", str(tmp_path / "x"), "--service", "wh") == 2
    assert "--service and --namespace go together" in capsys.readouterr().err


def test_check_corrupt_files_exit_1_naming_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = write(tmp_path / "x", tls_crt=b"junk", tls_key=b"junk", ca_crt=b"junk")
    assert run("certs", "check", str(d)) == 1
    out = capsys.readouterr().out
    for name in ("tls.crt", "tls.key", "ca.crt"):
        assert f"{d / name}: CorruptPEM" in out


def webhook_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="agentgroup webhook")
    add_rotator_arguments(parser)
    return parser.parse_args(list(argv))


def test_rotator_flags_default_to_files_provided(tmp_path: Path) -> None:
    settings = rotator_settings(webhook_args(), tmp_path)
    assert settings.mode == "secret"
    assert settings.out_dir == tmp_path


def test_rotator_flags_self_managed(tmp_path: Path) -> None:
    args = webhook_args(
        "--cert-mode=self-managed",
        "--service-name=wh",
        "--service-namespace=ag",
        "--webhook-config=agentgroup-webhook",
        "--cert-ip=127.0.0.1",
        "--cert-validity=2h",
        "--cert-sync-interval=5s",
    )
    settings = rotator_settings(args, tmp_path, kubeconfig="/kc")
    assert (settings.secret_name, settings.secret_namespace) == ("agentgroup-webhook-certs", "ag")
    assert settings.webhook_config_name == "agentgroup-webhook"
    assert settings.dns_names == service_dns_names("wh", "ag")
    assert settings.ip_addresses == ("127.0.0.1",)
    assert settings.serving_validity == timedelta(hours=2)
    assert settings.interval == timedelta(seconds=5)
    assert settings.kubeconfig == "/kc"


def test_rotator_flags_errors_name_the_flag(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--service-name and --service-namespace"):
        rotator_settings(webhook_args("--cert-mode=self-managed"), tmp_path)
    with pytest.raises(ValueError, match="not an IP address"):
        rotator_settings(
            webhook_args(
                "--cert-mode=self-managed", "--service-name=a", "--service-namespace=b", "--cert-ip=x"
            ),
            tmp_path,
        )
