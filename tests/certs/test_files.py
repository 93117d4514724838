from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certs.files import DATA_LINK, data_dir, read_cert_files, write_cert_files, write_plain

NAMES = ("tls.crt", "tls.key", "ca.crt")


def files(tag: str) -> dict[str, bytes]:
    return {name: f"{tag}:{name}".encode() for name in NAMES}


def generations(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("..") and p.name != DATA_LINK)


def test_first_write_lays_out_a_mounted_secret(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert write_cert_files(out, files("a")) is True
    assert (out / DATA_LINK).is_symlink()
    for name in NAMES:
        assert os.readlink(out / name) == f"{DATA_LINK}/{name}"
        assert (out / name).read_bytes() == f"a:{name}".encode()
    assert stat.S_IMODE((data_dir(out) / "tls.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((data_dir(out) / "tls.crt").stat().st_mode) == 0o644
    assert read_cert_files(out, NAMES) == files("a")


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    write_cert_files(tmp_path, files("a"))
    before = data_dir(tmp_path)
    assert write_cert_files(tmp_path, files("a")) is False
    assert data_dir(tmp_path) == before


def test_new_content_swaps_generation_and_keeps_only_the_previous_one(tmp_path: Path) -> None:
    write_cert_files(tmp_path, files("a"))
    first = data_dir(tmp_path)
    write_cert_files(tmp_path, files("b"))
    second = data_dir(tmp_path)
    assert second != first
    assert first.exists()  # a reader that resolved ..data just before the swap can still finish
    assert read_cert_files(tmp_path, NAMES) == files("b")
    write_cert_files(tmp_path, files("c"))
    assert not first.exists()
    assert generations(tmp_path) == sorted([second.name, data_dir(tmp_path).name])
    assert read_cert_files(tmp_path, NAMES) == files("c")


def test_a_plain_folder_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_bytes(b"old")
    assert read_cert_files(tmp_path, ["tls.crt"]) == {"tls.crt": b"old"}
    write_cert_files(tmp_path, files("a"))
    assert (tmp_path / "tls.crt").is_symlink()
    assert read_cert_files(tmp_path, NAMES) == files("a")


def test_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"tls\.key"):
        read_cert_files(tmp_path, ["tls.key"])


@pytest.mark.parametrize("name", ["", "../x", "a/b", "..data"])
def test_unsafe_names_are_rejected(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="invalid file name"):
        write_cert_files(tmp_path, {name: b"x"})


def test_write_plain(tmp_path: Path) -> None:
    out = tmp_path / "new"
    write_plain(out, {"ca.crt": b"c", "ca.key": b"k"})
    assert (out / "ca.crt").read_bytes() == b"c"
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600
    write_plain(out, {"ca.crt": b"c2"})
    assert (out / "ca.crt").read_bytes() == b"c2"
    assert sorted(p.name for p in out.iterdir()) == ["ca.crt", "ca.key"]  # no temp files left
