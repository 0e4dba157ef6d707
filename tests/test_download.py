"""The downloader against a real HTTP server on 127.0.0.1 and against folder mirrors."""

from __future__ import annotations

import gzip
import multiprocessing
import struct
import time

import numpy as np
import pytest

from mnist_mlp import datasets, download
from mnist_mlp.errors import DownloadError

FAST = download.FetchOptions(
    connect_timeout=2, read_timeout=0.5, retries=1, backoff=0.01, progress=False
)


def use_mirrors(monkeypatch, tiny, *bases):
    monkeypatch.setitem(
        datasets.DATASETS,
        "tiny",
        datasets.DatasetSpec("tiny", tiny.spec.resources, tuple(bases), tiny.spec.classes),
    )


def assert_arrays(entries, tiny):
    assert set(entries) == set(tiny.arrays)
    for key, entry in entries.items():
        np.testing.assert_array_equal(entry.array, tiny.arrays[key])
        np.testing.assert_array_equal(np.load(entry.path), tiny.arrays[key])


def cache_files(tmp_path):
    folder = tmp_path / "cache" / "tiny"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_happy_path_over_http(server, tiny, monkeypatch, tmp_path):
    server.serve("/a", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/a/")
    entries = download.ensure("tiny", options=FAST)
    assert_arrays(entries, tiny)
    assert all(e.fetched and e.source.startswith(server.url) for e in entries.values())
    assert len(server.hits) == 4
    assert cache_files(tmp_path) == sorted(
        f"{k}.{ext}" for k in tiny.arrays for ext in ("json", "npy")
    )


def test_uncompressed_and_recompressed_copies_are_accepted(server, tiny, monkeypatch, tmp_path):
    import gzip

    server.serve("/raw", tiny.idx)  # no gzip at all
    files = {n: gzip.compress(tiny.idx[n], compresslevel=1) for n in tiny.idx}  # other bytes
    assert files != tiny.gz
    server.serve("/re", files)
    use_mirrors(monkeypatch, tiny, server.url + "/raw/")
    assert_arrays(download.ensure("tiny", tmp_path / "c1", options=FAST), tiny)
    use_mirrors(monkeypatch, tiny, server.url + "/re/")
    assert_arrays(download.ensure("tiny", tmp_path / "c2", options=FAST), tiny)


def test_404_then_good_mirror(server, tiny, monkeypatch):
    server.serve("/good", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/missing/", server.url + "/good/")
    entries = download.ensure("tiny", options=FAST)
    assert_arrays(entries, tiny)
    assert all("/good/" in e.source for e in entries.values())
    # 404 is not transient: one request per file to the dead mirror, no retries.
    assert sum(h.startswith("/missing/") for h in server.hits) == 4


def test_html_page_with_status_200_is_refused(server, tiny, monkeypatch):
    page = b"<!DOCTYPE html><html><body>Moved. Please update your bookmarks.</body></html>"
    for name in tiny.gz:
        server.route(f"/dead/{name}", page, headers={"Content-Type": "text/html"})
    use_mirrors(monkeypatch, tiny, server.url + "/dead/")
    with pytest.raises(DownloadError, match="HTML page"):
        download.ensure("tiny", options=FAST)
    server.serve("/good", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/dead/", server.url + "/good/")
    assert_arrays(download.ensure("tiny", options=FAST), tiny)


def test_a_corrupt_header_whose_dimensions_overflow_moves_on_to_the_next_mirror(
    server, tiny, monkeypatch
):
    # 24 bytes: three dimensions of 2**31 whose product is 0 in 64-bit arithmetic, and a payload
    # of 8 bytes; a size check in int64 would have let it through to reshape.
    corrupt = struct.pack(">HBB3I", 0, 0x08, 3, 2**31, 2**31, 2**31) + b"\0" * 8
    for name in tiny.gz:
        server.route(f"/corrupt/{name}", gzip.compress(corrupt))
    use_mirrors(monkeypatch, tiny, server.url + "/corrupt/")
    with pytest.raises(DownloadError, match=r"beyond any array's size"):
        download.ensure("tiny", options=FAST)
    server.serve("/good", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/corrupt/", server.url + "/good/")
    assert_arrays(download.ensure("tiny", options=FAST), tiny)


def test_truncated_body_is_refused(server, tiny, monkeypatch, tmp_path):
    name = next(iter(tiny.gz))
    # The server promises the full length and closes early, as a dropped connection does.
    server.route(
        f"/cut/{name}", tiny.gz[name][:200], headers={"Content-Length": str(len(tiny.gz[name]))}
    )
    use_mirrors(monkeypatch, tiny, server.url + "/cut/")
    with pytest.raises(DownloadError, match="truncated"):
        download.ensure("tiny", options=FAST)
    assert cache_files(tmp_path) == []


def test_truncated_file_with_honest_length_is_refused(tmp_path, tiny, monkeypatch):
    mirror = tiny.write_mirror(tmp_path / "mirror")
    name = tiny.spec.resources[0].filename
    data = tiny.gz[name]
    (mirror / "tiny" / name).write_bytes(data[: len(data) // 2])
    monkeypatch.setenv("MNIST_MLP_MIRROR", str(mirror))
    with pytest.raises(DownloadError, match="truncated gzip"):
        download.ensure("tiny", options=FAST)
    assert cache_files(tmp_path) == []


def test_wrong_checksum_is_refused(server, tiny, monkeypatch):
    bad = {}
    for name, raw in tiny.idx.items():
        flipped = bytearray(raw)
        flipped[-1] ^= 1
        bad[name] = bytes(flipped)
    server.serve("/evil", bad)
    use_mirrors(monkeypatch, tiny, server.url + "/evil/")
    with pytest.raises(DownloadError, match="sha256"):
        download.ensure("tiny", options=FAST)


def test_stalled_server_is_bounded_by_the_read_timeout(server, tiny, monkeypatch):
    for name in tiny.gz:
        server.route(f"/slow/{name}", b"", headers={"Content-Length": "1000"}, stall=10)
    server.serve("/good", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/slow/", server.url + "/good/")
    start = time.monotonic()
    entries = download.ensure("tiny", options=FAST)
    elapsed = time.monotonic() - start
    assert_arrays(entries, tiny)
    # 4 files x 2 attempts x 0.5 s read timeout, far below the 10 s stall.
    assert elapsed < 8
    assert sum(h.startswith("/slow/") for h in server.hits) == 8


def test_every_mirror_failing_names_each(server, tiny, monkeypatch, tmp_path):
    server.route("/html/" + tiny.spec.resources[0].filename, b"<html>error</html>")
    server.route("/boom/" + tiny.spec.resources[0].filename, b"", status=503)
    # port 9 (discard) has no listener
    use_mirrors(
        monkeypatch,
        tiny,
        server.url + "/html/",
        server.url + "/boom/",
        server.url + "/none/",
        "http://127.0.0.1:9/",
    )
    monkeypatch.setenv("MNIST_MLP_MIRROR", str(tmp_path / "no-such-folder"))
    with pytest.raises(DownloadError) as info:
        download.ensure("tiny", options=FAST)
    message = str(info.value)
    assert "\n" not in message
    assert "no-such-folder" in message and "No such file" in message
    assert "/html/" in message and "HTML page" in message
    assert "/boom/" in message and "HTTP 503" in message
    assert "/none/" in message and "HTTP 404" in message
    assert "127.0.0.1:9/" in message and "connection refused" in message
    # 503 is transient: retried once.
    assert sum(h.startswith("/boom/") for h in server.hits) == 2
    assert cache_files(tmp_path) == []


def test_cache_hit_makes_no_request(server, tiny, monkeypatch):
    server.serve("/a", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/a/")
    download.ensure("tiny", options=FAST)
    server.hits.clear()
    entries = download.ensure("tiny", options=FAST)
    assert server.hits == []
    assert_arrays(entries, tiny)
    assert not any(e.fetched for e in entries.values())
    assert all(e.source.startswith(server.url) for e in entries.values())


@pytest.mark.parametrize("damage", ["truncate", "edit", "garbage"])
def test_corrupt_cache_entry_is_fetched_again(server, tiny, monkeypatch, caplog, damage):
    server.serve("/a", tiny.gz)
    use_mirrors(monkeypatch, tiny, server.url + "/a/")
    path = download.ensure("tiny", options=FAST)["train-images"].path
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[:-100])
    elif damage == "edit":
        path.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    else:
        path.write_bytes(b"not a numpy file")
    server.hits.clear()
    with caplog.at_level("WARNING", logger="mnist_mlp"):
        entries = download.ensure("tiny", options=FAST)
    assert "corrupt" in caplog.text and "fetching it again" in caplog.text
    assert len(server.hits) == 1 and server.hits[0].endswith("train-images-idx3-ubyte.gz")
    assert entries["train-images"].fetched
    assert_arrays(entries, tiny)


def _ensure_in_child(queue):
    try:
        entries = download.ensure("tiny", options=FAST)
        queue.put(sorted(k for k in entries))
    except Exception as exc:  # pragma: no cover - reported to the parent
        queue.put(repr(exc))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_two_concurrent_downloads_both_end_with_a_good_cache(server, tiny, monkeypatch):
    # Slow each response down so the two processes really overlap.
    for name, data in tiny.gz.items():
        server.route(f"/a/{name}", data)
    use_mirrors(monkeypatch, tiny, server.url + "/a/")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ensure_in_child, args=(queue,)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results == [sorted(tiny.arrays)] * 2
    assert_arrays(download.ensure("tiny", options=FAST), tiny)
    # The lock makes the second process find the first one's cache: 4 requests, not 8.
    assert len(server.hits) == 4


def test_file_url_mirror(tmp_path, tiny, monkeypatch):
    mirror = tiny.write_mirror(tmp_path / "mirror")
    monkeypatch.setenv("MNIST_MLP_MIRROR", mirror.as_uri())
    assert_arrays(download.ensure("tiny", options=FAST), tiny)


def test_unknown_dataset():
    with pytest.raises(download.MlpError, match="choose one of mnist, fashion-mnist"):
        download.ensure("cifar")


def test_cache_root_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_MLP_HOME", str(tmp_path / "env"))
    assert download.cache_root() == tmp_path / "env"
    assert download.cache_root(tmp_path / "cfg") == tmp_path / "cfg"
    monkeypatch.delenv("MNIST_MLP_HOME")
    assert download.cache_root().name == "mnist_mlp"


def test_mnist_mirrors_are_declared_in_order():
    mirrors = datasets.DATASETS["mnist"].mirrors
    assert "ossci-datasets.s3.amazonaws.com" in mirrors[0]
    assert "cvdf-datasets" in mirrors[1]
    assert not any("lecun.com" in m for m in mirrors)


@pytest.mark.realdata
@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_real_datasets_from_the_mirror(real_env, tmp_path, monkeypatch, name):
    fresh = tmp_path / "fresh"
    entries = download.ensure(name, fresh, download.FetchOptions(progress=False))
    assert all(e.fetched for e in entries.values())
    assert entries["train-images"].array.shape == (60000, 28, 28)
    assert entries["test-images"].array.shape == (10000, 28, 28)
    assert entries["train-labels"].array.shape == (60000,)
    assert entries["test-labels"].array.shape == (10000,)
    if name == "mnist":
        counts = np.bincount(entries["train-labels"].array, minlength=10).tolist()
        assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    start = time.monotonic()
    again = download.ensure(name, fresh, download.FetchOptions(progress=False))
    assert not any(e.fetched for e in again.values())
    assert time.monotonic() - start < 5  # generous: a cache hit only loads and hashes 55 MB
