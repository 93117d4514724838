"""``agentgroup certs generate`` and ``agentgroup certs check``.

Top-level imports stay light (argparse and the standard library): the
``agentgroup`` entry point imports this module for every command.

Exit codes: 0 ok, 1 problems found by ``check``, 2 bad usage or unreadable
input (always a message naming the file, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from certs.check import CertInfo, Problem
    from certs.rotator import RotatorSettings

__all__ = ["add_rotator_arguments", "parse_duration", "register", "rotator_settings"]

_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+)([dhms])")

#: Names written by ``generate`` and read by ``check``; ca.key stays next to ca.crt for later renewals.
CA_CRT, CA_KEY, TLS_CRT, TLS_KEY = "ca.crt", "ca.key", "tls.crt", "tls.key"


def parse_duration(text: str) -> timedelta:
    """``3650d``, ``8760h``, ``1h30m``, ``90s`` -> timedelta (argparse type)."""
    value = text.strip().lower()
    if not value or _DURATION.sub("", value):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: use e.g. 365d, 12h, 1h30m, 90s")
    seconds = sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(value))
    if seconds <= 0:
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return timedelta(seconds=seconds)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``certs generate`` and ``certs check`` to the ``agentgroup`` command."""
    certs = subparsers.add_parser(
        "certs",
        help="make and check the webhook's TLS certificates",
        description="Make and check the webhook's TLS certificates (for manual installs and the demo; "
        "the chart's default self-managed mode needs neither).",
    )
    sub = certs.add_subparsers(dest="certs_command", metavar="{generate,check}", required=True)

    gen = sub.add_parser(
        "generate",
        help="create a CA and a serving certificate for the webhook Service",
        description="Write ca.crt, ca.key, tls.crt and tls.key into DIR. An existing CA in DIR "
        "(ca.crt + ca.key) is reused, so running it again renews the serving certificate only.",
    )
    gen.add_argument("--service", required=True, help="the webhook Service's name")
    gen.add_argument("--namespace", required=True, help="the webhook Service's namespace")
    gen.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the files into")
    gen.add_argument("--cluster-domain", default="cluster.local", help="default: %(default)s")
    gen.add_argument("--dns-name", action="append", default=[], help="an extra DNS SAN (repeatable)")
    gen.add_argument("--ip", action="append", default=[], help="an IP SAN, e.g. 127.0.0.1 (repeatable)")
    gen.add_argument(
        "--ca-validity", type=parse_duration, default=timedelta(days=3650), help="default: 3650d"
    )
    gen.add_argument("--validity", type=parse_duration, default=timedelta(days=365), help="default: 365d")
    gen.add_argument("--new-ca", action="store_true", help="replace an existing CA in DIR")
    gen.set_defaults(func=_generate)

    chk = sub.add_parser(
        "check",
        help="print validity and SANs of the certificates in DIR, and every problem",
        description="Check tls.crt, tls.key and ca.crt (and ca.key if present) in DIR: parse, validity, "
        "key match, signature, SANs. Exit 0 if usable, 1 if problems were found, 2 if unreadable.",
    )
    chk.add_argument("dir", type=Path, metavar="DIR")
    chk.add_argument("--service", help="check the SANs cover this Service (with --namespace)")
    chk.add_argument("--namespace", help="the Service's namespace")
    chk.add_argument("--cluster-domain", default="cluster.local", help="default: %(default)s")
    chk.add_argument("--dns-name", action="append", default=[], help="a DNS name the certificate must cover")
    chk.add_argument("-o", "--output", choices=("text", "json"), default="text")
    chk.set_defaults(func=_check)


def _err(msg: str) -> int:
    print(f"agentgroup certs: {msg}", file=sys.stderr)
    return 2


def _read(path: Path) -> bytes:
    """Read a file; OSError's message names the path."""
    return path.read_bytes()


def _generate(args: argparse.Namespace) -> int:
    from certs import pki
    from certs.check import check_ca, service_dns_names
    from certs.files import write_plain

    out: Path = args.out
    if out.exists() and not out.is_dir():
        return _err(f"{out} exists and is not a directory: pass a folder to --out")
    now = datetime.now(UTC)
    names = list(service_dns_names(args.service, args.namespace, args.cluster_domain))
    names += [n for n in args.dns_name if n not in names]
    try:
        import ipaddress

        for ip in args.ip:
            ipaddress.ip_address(ip)
    except ValueError as e:
        return _err(f"--ip: {e}")

    ca: pki.KeyPair | None = None
    ca_crt, ca_key = out / CA_CRT, out / CA_KEY
    if not args.new_ca and ca_crt.exists() and ca_key.exists():
        try:
            ca = pki.KeyPair(_read(ca_crt), _read(ca_key))
        except OSError as e:
            return _err(f"cannot read the existing CA: {e}")
        problems = [
            p
            for p in check_ca(
                ca.cert_pem, key_pem=ca.key_pem, now=now, file=str(ca_crt), key_file=str(ca_key)
            )
            if p.severity == "error"
        ]
        if problems:
            for p in problems:
                print(f"agentgroup certs: {p}", file=sys.stderr)
            return _err(f"the existing CA in {out} is unusable: fix it, or pass --new-ca to replace it")
        print(f"reusing the CA in {ca_crt}")
    elif ca_crt.exists() != ca_key.exists() and not args.new_ca:
        present = ca_crt if ca_crt.exists() else ca_key
        return _err(
            f"{present} exists without its partner file: restore it, or pass --new-ca to replace the CA"
        )
    if ca is None:
        ca = pki.new_ca(f"{args.service}.{args.namespace} webhook CA", valid_for=args.ca_validity, now=now)
    try:
        serving = pki.new_serving_cert(ca, names, ip_addresses=args.ip, valid_for=args.validity, now=now)
        write_plain(
            out,
            {CA_CRT: ca.cert_pem, CA_KEY: ca.key_pem, TLS_CRT: serving.cert_pem, TLS_KEY: serving.key_pem},
        )
    except OSError as e:
        return _err(f"cannot write to {out}: {e}")
    cert = serving.certificate
    until = f"{cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
    print(f"wrote {out / TLS_CRT} and {out / TLS_KEY} (valid until {until})")
    print(f"SANs: {', '.join(names + list(args.ip))}")
    print(f"CA: {ca_crt} (its key {ca_key} is secret: keep it out of the cluster and out of git)")
    print(f"caBundle for the ValidatingWebhookConfiguration: base64 -w0 {ca_crt}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from certs.check import check_ca, check_pair, describe, parse_certificates, service_dns_names

    directory: Path = args.dir
    if not directory.is_dir():
        return _err(f"{directory} is not a directory: pass the folder holding tls.crt, tls.key and ca.crt")
    if bool(args.service) != bool(args.namespace):
        return _err("--service and --namespace go together")
    names = list(args.dns_name)
    if args.service:
        names = list(service_dns_names(args.service, args.namespace, args.cluster_domain)) + names

    files: dict[str, bytes] = {}
    for name in (TLS_CRT, TLS_KEY, CA_CRT, CA_KEY):
        path = directory / name
        if name == CA_KEY and not path.exists():
            continue
        try:
            files[name] = _read(path)
        except FileNotFoundError:
            return _err(
                f"{path} does not exist: generate it with `agentgroup certs generate --out {directory}`"
            )
        except OSError as e:
            return _err(f"cannot read {path}: {e}")

    now = datetime.now(UTC)
    fraction = 1 / 3
    problems: list[Problem] = check_pair(
        files[TLS_CRT],
        files[TLS_KEY],
        now=now,
        ca_pem=files[CA_CRT],
        dns_names=names,
        cert_file=str(directory / TLS_CRT),
        key_file=str(directory / TLS_KEY),
        ca_file=str(directory / CA_CRT),
        renew_fraction=fraction,
    )
    ca_problems = check_ca(
        files[CA_CRT],
        now=now,
        file=str(directory / CA_CRT),
        key_pem=files.get(CA_KEY),
        key_file=str(directory / CA_KEY),
        renew_fraction=fraction,
    )
    problems += [p for p in ca_problems if p not in problems]
    infos: dict[str, list[CertInfo]] = {
        name: [describe(c) for c in parse_certificates(files[name], name)[0]] for name in (TLS_CRT, CA_CRT)
    }
    errors = [p for p in problems if p.severity == "error"]
    if args.output == "json":
        _print_json(sys.stdout, directory, infos, problems, ok=not errors)
    else:
        _print_text(sys.stdout, directory, infos, problems, now)
    return 1 if errors else 0


def _info_dict(info: CertInfo) -> dict[str, Any]:
    return {
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial,
        "notBefore": info.not_before.isoformat(),
        "notAfter": info.not_after.isoformat(),
        "dnsNames": list(info.dns_names),
        "ipAddresses": list(info.ip_addresses),
        "isCA": info.is_ca,
        "sha256": info.sha256,
    }


def _print_json(
    out: TextIO, directory: Path, infos: dict[str, list[CertInfo]], problems: list[Problem], *, ok: bool
) -> None:
    doc = {
        "dir": str(directory),
        "ok": ok,
        "certificates": {name: [_info_dict(i) for i in lst] for name, lst in infos.items()},
        "problems": [
            {"file": p.file, "code": p.code, "message": p.message, "severity": p.severity} for p in problems
        ],
    }
    json.dump(doc, out, indent=2)
    out.write("\n")


def _print_text(
    out: TextIO, directory: Path, infos: dict[str, list[CertInfo]], problems: list[Problem], now: datetime
) -> None:
    for name, lst in infos.items():
        for i, info in enumerate(lst):
            label = name if len(lst) == 1 else f"{name} [{i + 1}/{len(lst)}]"
            left = info.not_after - now
            state = "EXPIRED" if left <= timedelta(0) else f"{left.days}d left"
            out.write(f"{directory / label}:\n")
            out.write(f"  subject:    {info.subject}\n")
            out.write(f"  issuer:     {info.issuer}\n")
            out.write(
                f"  valid:      {info.not_before:%Y-%m-%d %H:%M:%S} to {info.not_after:%Y-%m-%d %H:%M:%S} UTC"
            )
            out.write(f" ({state})\n")
            if info.dns_names or info.ip_addresses:
                out.write(f"  SANs:       {', '.join(info.dns_names + info.ip_addresses)}\n")
            if info.is_ca:
                out.write("  CA:         yes\n")
    if problems:
        out.write("problems:\n" if any(p.severity == "error" for p in problems) else "warnings:\n")
        for p in problems:
            out.write(f"  {p}\n")
    else:
        out.write("ok: the certificate, key and CA match and are valid\n")


# --------------------------------------------------------------------------- flags for the webhook process

CERT_MODES = ("self-managed", "cert-manager", "secret")


def add_rotator_arguments(parser: argparse.ArgumentParser) -> None:
    """The certificate flags of ``agentgroup webhook`` (read back with :func:`rotator_settings`)."""
    g = parser.add_argument_group(
        "certificates",
        "self-managed: the built-in rotator keeps CA and serving certificate in --cert-secret, writes them "
        "to --cert-dir and keeps the caBundle of --webhook-config true; cert-manager / secret: --cert-dir "
        "is a mounted Secret and the caBundle belongs to cert-manager's cainjector / to you.",
    )
    g.add_argument("--cert-mode", choices=CERT_MODES, default="secret", help="default: %(default)s")
    g.add_argument(
        "--cert-secret", default="agentgroup-webhook-certs", metavar="NAME", help="default: %(default)s"
    )
    g.add_argument(
        "--cert-namespace", metavar="NS", help="namespace of --cert-secret (default: --service-namespace)"
    )
    g.add_argument(
        "--service-name", metavar="NAME", help="the webhook Service (its DNS names go into the SANs)"
    )
    g.add_argument("--service-namespace", metavar="NS", help="the webhook Service's namespace")
    g.add_argument(
        "--webhook-config",
        metavar="NAME",
        default="",
        help="ValidatingWebhookConfiguration whose caBundle to keep true (default: none)",
    )
    g.add_argument("--cert-dns-name", action="append", default=[], metavar="NAME", help="an extra DNS SAN")
    g.add_argument("--cert-ip", action="append", default=[], metavar="IP", help="an IP SAN (local clusters)")
    g.add_argument("--ca-validity", type=parse_duration, default=timedelta(days=3650), help="default: 3650d")
    g.add_argument("--cert-validity", type=parse_duration, default=timedelta(days=365), help="default: 365d")
    g.add_argument(
        "--cert-overlap",
        type=parse_duration,
        default=timedelta(minutes=10),
        help="how long a replaced CA stays trusted (default: 10m)",
    )
    g.add_argument(
        "--cert-propagation",
        type=parse_duration,
        default=timedelta(minutes=1),
        help="wait after a new CA enters the caBundle before serving certificates it signs (default: 1m)",
    )
    g.add_argument(
        "--cert-sync-interval",
        type=parse_duration,
        default=timedelta(seconds=30),
        help="how often each replica re-reads the Secret (default: 30s)",
    )


def rotator_settings(
    args: argparse.Namespace, cert_dir: Path, kubeconfig: str | None = None
) -> RotatorSettings:
    """Settings from :func:`add_rotator_arguments`' flags; ValueError names the flag to fix."""
    from certs.rotator import RotatorSettings

    if args.cert_mode == "self-managed" and not (args.service_name and args.service_namespace):
        raise ValueError("--cert-mode self-managed needs --service-name and --service-namespace")
    return RotatorSettings(
        secret_name=args.cert_secret,
        secret_namespace=args.cert_namespace or args.service_namespace or "default",
        service_name=args.service_name or "",
        service_namespace=args.service_namespace or "",
        out_dir=cert_dir,
        webhook_config_name=args.webhook_config or None,
        mode=args.cert_mode,
        extra_dns_names=tuple(args.cert_dns_name),
        ip_addresses=tuple(args.cert_ip),
        ca_validity=args.ca_validity,
        serving_validity=args.cert_validity,
        propagation=args.cert_propagation,
        overlap=args.cert_overlap,
        interval=args.cert_sync_interval,
        kubeconfig=kubeconfig,
    )
