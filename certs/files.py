"""Publishing certificate files atomically, in the layout of a mounted Secret.

``write_cert_files`` lays files out the way the kubelet does for Secret volumes
(its "AtomicWriter"): the real files live in a timestamped folder, ``..data``
is a symlink to it, and each visible name (``tls.crt`` ...) is a symlink
through ``..data``. Publishing a new set writes a new folder and swaps
``..data`` with one ``os.replace``, so a reader never sees a new certificate
with an old key. The webhook's reloader therefore behaves the same whether the
files come from the rotator (self-managed mode) or from a mounted Secret
(cert-manager and user-provided modes).

Readers should use :func:`read_cert_files` (or resolve :func:`data_dir` once)
so that all files of one load come from the same generation.
"""

from __future__ import annotations

import os
import secrets
import shutil
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["DATA_LINK", "data_dir", "read_cert_files", "write_cert_files", "write_plain"]

DATA_LINK = "..data"
_PRIVATE_SUFFIXES = (".key",)


def data_dir(directory: Path) -> Path:
    """The folder holding the current generation (``directory`` itself for a plain folder)."""
    link = directory / DATA_LINK
    if link.is_symlink():
        return directory / os.readlink(link)
    return directory


def read_cert_files(directory: Path, names: Iterable[str]) -> dict[str, bytes]:
    """Read ``names`` from one generation of ``directory``.

    Raises ``FileNotFoundError`` naming the missing file. A concurrent swap is
    retried; the previous generation is kept until the next write for readers holding a resolved path.
    """
    names = list(names)
    while True:
        base = data_dir(directory)
        try:
            return {name: (base / name).read_bytes() for name in names}
        except FileNotFoundError:
            if data_dir(directory) == base:
                raise
            # ..data moved on while we read: read the new generation.


def _current(directory: Path, names: Iterable[str]) -> dict[str, bytes] | None:
    try:
        return read_cert_files(directory, names)
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_cert_files(directory: Path, files: Mapping[str, bytes]) -> bool:
    """Publish ``files`` atomically in ``directory``; return False if they were already there.

    Key files (``*.key``) are created with mode 0600. Only this function may
    write to ``directory``: plain files there with the same names are replaced
    by symlinks.
    """
    for name in files:
        if not name or "/" in name or name.startswith(".."):
            raise ValueError(f"invalid file name {name!r}")
    directory.mkdir(parents=True, exist_ok=True)
    if _current(directory, files) == dict(files):
        return False

    generation = f"..{time.strftime('%Y_%m_%d_%H_%M_%S', time.gmtime())}.{secrets.token_hex(4)}"
    gen_dir = directory / generation
    gen_dir.mkdir(mode=0o755)
    for name, content in files.items():
        mode = 0o600 if name.endswith(_PRIVATE_SUFFIXES) else 0o644
        fd = os.open(gen_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
    _fsync_dir(gen_dir)

    previous = data_dir(directory)
    _replace_symlink(directory / DATA_LINK, generation)
    for name in files:
        link = directory / name
        target = f"{DATA_LINK}/{name}"
        if not (link.is_symlink() and os.readlink(link) == target):
            _replace_symlink(link, target)
    _fsync_dir(directory)
    _prune(directory, keep={generation, previous.name})
    return True


def _replace_symlink(link: Path, target: str) -> None:
    tmp = link.with_name(f"{link.name}.tmp-{secrets.token_hex(4)}")
    os.symlink(target, tmp)
    os.replace(tmp, link)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(directory: Path, keep: set[str]) -> None:
    for p in directory.iterdir():
        if p.name.startswith("..") and p.name not in keep and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)


def write_plain(directory: Path, files: Mapping[str, bytes]) -> None:
    """Write plain files, each atomically (temp file + ``os.replace``); keys get mode 0600.

    For ``agentgroup certs generate``: a folder a human (or ``kubectl create
    secret tls``) reads, where the symlink layout would only confuse.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        mode = 0o600 if name.endswith(_PRIVATE_SUFFIXES) else 0o644
        tmp = directory / f".{name}.tmp-{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
