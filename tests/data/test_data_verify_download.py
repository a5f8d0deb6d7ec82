import hashlib
import io
import urllib.error

import pytest

import gsa.data.download as download_mod
from gsa.data import DataError, download_file, verify_file
from gsa.data.checksums import STAMP_NAME, verify_file_cached


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
    out = download_file("http://example.invalid/thing.zip", dest, md5=hashlib.md5(data).hexdigest(),
                        sha1=hashlib.sha1(data).hexdigest(), size=len(data))
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
