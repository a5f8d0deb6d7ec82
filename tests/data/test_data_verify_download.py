import hashlib
import io
import json
import os
import stat
import urllib.error

import pytest

import gsa.data.download as download_mod
from gsa.data import DataError, download_file, verify_file
from gsa.data.checksums import STAMP_NAME, mark_verified, verify_file_cached


@pytest.fixture
def blob(tmp_path):
    data = b"genuine bytes " * 1000
    path = tmp_path / "file.bin"
    path.write_bytes(data)
    return path, data, hashlib.md5(data).hexdigest(), hashlib.sha1(data).hexdigest()


def test_verify_ok_returns_digests(blob):
    path, data, md5, sha1 = blob
    assert verify_file(path, md5, sha1, expected_size=len(data)) == {"md5": md5, "sha1": sha1}
    assert verify_file(path, expected_md5=["0" * 32, md5.upper()]) == {"md5": md5}  # any accepted value


def test_data_error_is_value_error():
    assert issubclass(DataError, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(DataError) as e:
        verify_file(tmp_path / "nope.zip", "a" * 32, hint="rerun with --download")
    msg = str(e.value)
    assert "nope.zip" in msg and "missing" in msg and "a" * 32 in msg and "--download" in msg
    assert "\n" not in msg


def test_truncated_file(blob):
    path, data, md5, _ = blob
    path.write_bytes(data[:-10])
    with pytest.raises(DataError) as e:
        verify_file(path, md5, expected_size=len(data))
    msg = str(e.value)
    assert str(path) in msg and "truncated" in msg and f"{len(data):,}" in msg and f"{len(data) - 10:,}" in msg
    assert md5 in msg


def test_corrupt_file(blob):
    path, data, md5, sha1 = blob
    path.write_bytes(b"X" + data[1:])
    with pytest.raises(DataError) as e:
        verify_file(path, md5, expected_size=len(data))
    msg = str(e.value)
    found = hashlib.md5(b"X" + data[1:]).hexdigest()
    assert str(path) in msg and "corrupt" in msg and md5 in msg and found in msg
    with pytest.raises(DataError, match="sha1"):
        verify_file(path, expected_sha1=sha1)


def test_verified_stamp_skips_rehash_until_file_changes(blob, monkeypatch):
    path, data, md5, _ = blob
    verify_file_cached(path, md5)
    assert (path.parent / STAMP_NAME).is_file()
    import gsa.data.checksums as cs

    calls = []
    real = cs._hash_file
    monkeypatch.setattr(cs, "_hash_file", lambda p, a: calls.append(p) or real(p, a))
    verify_file_cached(path, md5)
    assert calls == []  # remembered
    path.write_bytes(b"Y" * len(data))  # same size, new content and mtime
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    with pytest.raises(DataError, match="corrupt"):
        verify_file_cached(path, md5)
    assert calls


def _hash_calls(monkeypatch):
    import gsa.data.checksums as cs

    calls = []
    real = cs._hash_file
    monkeypatch.setattr(cs, "_hash_file", lambda p, a: calls.append(p) or real(p, a))
    return calls


def _plant(path, data, md5, how, tmp_path, monkeypatch):
    """Replace ``path`` by corrupt bytes of the same size, with a stamp claiming it was verified."""
    genuine = path.stat()
    path.write_bytes(b"X" + data[1:])
    st = path.stat()
    if how == "old-format stamp":  # what the unsigned stamps held: name, size, mtime, expectations
        entry = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": [md5], "sha1": [], "expected_size": None}
        (path.parent / STAMP_NAME).write_text(json.dumps({path.name: entry}))
    elif how == "guessed mac":
        entry = {
            "size": st.st_size,
            "mtime_ns": st.st_mtime_ns,
            "ctime_ns": st.st_ctime_ns,
            "inode": st.st_ino,
            "md5": [md5],
            "sha1": [],
            "expected_size": None,
            "mac": "0" * 64,
        }
        (path.parent / STAMP_NAME).write_text(json.dumps({path.name: entry}))
    elif how == "signed by another user":  # a genuine stamp made with someone else's key
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-user"))
        mark_verified(path, md5)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg_cache"))
    else:  # "replayed": this user's genuine stamp of the good file, which was rewritten in place
        os.utime(path, ns=(genuine.st_atime_ns, genuine.st_mtime_ns))  # same inode, size and mtime


@pytest.mark.parametrize("how", ["old-format stamp", "guessed mac", "signed by another user", "replayed"])
def test_forged_stamp_does_not_skip_hashing(blob, monkeypatch, tmp_path, how):
    path, data, md5, _ = blob
    verify_file_cached(path, md5)  # a genuine stamp of the good file
    mtime, ino = path.stat().st_mtime_ns, path.stat().st_ino
    _plant(path, data, md5, how, tmp_path, monkeypatch)
    if how == "replayed":
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == (mtime, ino) and path.stat().st_size == len(data)
    calls = _hash_calls(monkeypatch)
    with pytest.raises(DataError, match="corrupt"):
        verify_file_cached(path, md5)
    assert calls == [path]


def test_genuine_stamp_is_signed_with_a_private_key(blob, monkeypatch, tmp_path):
    path, data, md5, _ = blob
    verify_file_cached(path, md5)
    stamp = json.loads((path.parent / STAMP_NAME).read_text())[path.name]
    assert len(stamp["mac"]) == 64 and stamp["inode"] == path.stat().st_ino
    key = tmp_path / "xdg_cache" / "gsa" / "stamp.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    calls = _hash_calls(monkeypatch)
    verify_file_cached(path, md5)
    assert calls == []  # the genuine stamp still skips hashing
    key.chmod(0o644)  # a key others can read is no secret: nothing is trusted, nothing is signed
    verify_file_cached(path, md5)
    assert calls == [path]


class _FakeResponse(io.BytesIO):
    def __init__(self, data, length=True):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))} if length else {}


def _serve(monkeypatch, payloads):
    seen = []

    def fake_open(url, timeout=60.0):
        seen.append(url)
        if isinstance(payloads, Exception):
            raise payloads
        return _FakeResponse(payloads)

    monkeypatch.setattr(download_mod, "open_url", fake_open)
    return seen


def test_download_writes_verified_file(tmp_path, monkeypatch):
    data = b"payload" * 5000
    seen = _serve(monkeypatch, data)
    dest = tmp_path / "sub" / "thing.zip"
    out = download_file(
        "http://example.invalid/thing.zip",
        dest,
        md5=hashlib.md5(data).hexdigest(),
        sha1=hashlib.sha1(data).hexdigest(),
        size=len(data),
    )
    assert out == dest and dest.read_bytes() == data
    assert seen == ["http://example.invalid/thing.zip"]
    assert [p.name for p in dest.parent.iterdir()] == ["thing.zip"]  # no temp file left


def test_download_corrupt_leaves_nothing(tmp_path, monkeypatch):
    _serve(monkeypatch, b"evil")
    dest = tmp_path / "thing.zip"
    with pytest.raises(DataError) as e:
        download_file("http://example.invalid/thing.zip", dest, md5="0" * 32)
    assert "thing.zip" in str(e.value) and "0" * 32 in str(e.value) and "corrupt" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_download_truncated_and_network_error(tmp_path, monkeypatch):
    _serve(monkeypatch, b"short")
    with pytest.raises(DataError, match="truncated"):
        download_file("http://example.invalid/a", tmp_path / "a", size=100)
    _serve(monkeypatch, urllib.error.URLError("no route"))
    with pytest.raises(DataError, match="could not download"):
        download_file("http://example.invalid/b", tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_network_is_refused_by_default(tmp_path):
    with pytest.raises(AssertionError, match="tried to open"):
        download_file("http://example.invalid/x", tmp_path / "x")
