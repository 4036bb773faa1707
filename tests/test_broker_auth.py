"""The broker's password and ACL files on disk: written atomically, durably, and never readable by
anybody else, not even for a moment while they are being written."""

from __future__ import annotations

import os
import stat

import pytest

from devices import broker_auth
from devices.broker_auth import Account
from devices.credentials import hash_password

ACCOUNTS = [
    Account("eldercare-service", hash_password("service-secret"), "service"),
    Account("wb-0001", hash_password("device-secret"), "device"),
]


@pytest.fixture()
def open_umask():
    """The most permissive umask: whatever the files get, they get it from the code, not from it."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_the_files_are_never_readable_by_others_while_written(tmp_path, monkeypatch, open_umask):
    auth = tmp_path / "auth"
    seen: list[tuple[str, str, int]] = []  # (what, file name, mode)
    real_chmod, real_replace, real_fsync = os.chmod, os.replace, os.fsync

    def chmod(path, mode, *args, **kwargs):
        seen.append(("chmod", os.path.basename(path), stat.S_IMODE(os.stat(path).st_mode)))
        return real_chmod(path, mode, *args, **kwargs)

    def replace(src, dst, *args, **kwargs):
        seen.append(("replace", os.path.basename(src), stat.S_IMODE(os.stat(src).st_mode)))
        return real_replace(src, dst, *args, **kwargs)

    def fsync(fd):
        info = os.fstat(fd)
        what = "fsync-dir" if stat.S_ISDIR(info.st_mode) else "fsync"
        seen.append((what, "", stat.S_IMODE(info.st_mode)))
        return real_fsync(fd)

    monkeypatch.setattr(os, "chmod", chmod)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    assert broker_auth.write_files(ACCOUNTS, auth / "passwd", auth / "acl")

    files = [(what, mode) for what, _name, mode in seen if what != "fsync-dir"]
    assert files, "the files' modes were observed while being written"
    assert all(mode & 0o077 == 0 for _what, mode in files), f"readable by others: {seen}"
    whats = [what for what, _name, _mode in seen]
    for _ in ("passwd", "acl"):
        # Each file: its data on disk before the rename, the rename on disk after it.
        i = whats.index("replace")
        assert "fsync" in whats[:i], f"renamed before its data was synced: {whats}"
        assert "fsync-dir" in whats[i + 1 :], f"the directory was not synced: {whats}"
        whats = whats[i + 1 :]
    for name in ("passwd", "acl"):
        assert stat.S_IMODE((auth / name).stat().st_mode) == 0o600
    assert sorted(p.name for p in auth.iterdir()) == ["acl", "passwd"], "no temporary file left"


def test_a_planted_temporary_file_is_neither_followed_nor_used(tmp_path, open_umask):
    """Somebody who can write to the directory plants the old fixed temporary name as a link to a
    file of theirs: the password hashes must not end up there, nor the link become the passwd."""
    auth = tmp_path / "auth"
    auth.mkdir()
    stolen = tmp_path / "stolen"
    (auth / ".passwd.tmp").symlink_to(stolen)
    assert broker_auth.write_files(ACCOUNTS, auth / "passwd", auth / "acl")
    assert not stolen.exists(), "the hashes were written through the planted link"
    assert not (auth / "passwd").is_symlink()
    assert (auth / "passwd").read_text() == broker_auth.render_passwd(ACCOUNTS)
    assert stat.S_IMODE((auth / "passwd").stat().st_mode) == 0o600


def test_unchanged_files_are_not_rewritten(tmp_path):
    auth = tmp_path / "auth"
    assert broker_auth.write_files(ACCOUNTS, auth / "passwd", auth / "acl")
    before = (auth / "passwd").stat().st_ino, (auth / "acl").stat().st_ino
    assert not broker_auth.write_files(ACCOUNTS, auth / "passwd", auth / "acl")
    assert ((auth / "passwd").stat().st_ino, (auth / "acl").stat().st_ino) == before
