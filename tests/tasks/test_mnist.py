import functools
import hashlib
import http.server
import importlib
import os
import re
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from grokwidgets.tasks import mnist

# ``grokwidgets.tasks.mnist`` as an attribute is the function; the module is in sys.modules.
mod = importlib.import_module("grokwidgets.tasks.mnist")

SHARED = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist.npz").resolve()
needs_shared = pytest.mark.skipif(
    not SHARED.is_file(), reason=f"needs the shared MNIST file at {SHARED} (../shared is absent)"
)

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
FIRST_1000_COUNTS = [97, 116, 99, 93, 105, 92, 94, 117, 87, 100]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real ~/.cache, no GROKWIDGETS_DATA, and downloads only from this machine."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GROKWIDGETS_DATA", raising=False)
    real_download = mod._download

    def local_only(url, dest):
        assert url.startswith("http://127.0.0.1:"), f"test tried to download from {url}"
        assert tmp_path in dest.parents, f"test tried to write to {dest}"
        return real_download(url, dest)

    monkeypatch.setattr(mod, "_download", local_only)


@pytest.fixture
def no_shared(monkeypatch):
    monkeypatch.setattr(mod, "_shared_candidates", lambda: [])


@pytest.fixture
def cache_file(tmp_path):
    return tmp_path / "xdg-cache" / "grokwidgets" / "mnist.npz"


@pytest.fixture(scope="module")
def raw():
    if not SHARED.is_file():
        pytest.skip(f"needs the shared MNIST file at {SHARED} (../shared is absent)")
    with np.load(SHARED, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def copy_real(dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(SHARED, dest)
    return dest


def corrupt_copy(dest: Path) -> Path:
    data = bytearray(SHARED.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(bytes(data))
    return dest


# --- the real file -----------------------------------------------------------------------------


@needs_shared
def test_default_is_omnigrok_subset(raw):
    task = mnist(path=str(SHARED))
    assert task.kind == "classification" and task.n_outputs == 10
    assert task.x_train.shape == (1000, 784) and task.x_test.shape == (10000, 784)
    assert task.x_train.dtype == torch.float32 and task.y_train.dtype == torch.int64
    assert torch.bincount(task.y_train, minlength=10).tolist() == FIRST_1000_COUNTS
    assert torch.bincount(task.y_test, minlength=10).tolist() == TEST_COUNTS
    # the first images, in order, scaled by 1/255
    expected = raw["x_train"][:1000].reshape(1000, 784).astype(np.float64) / 255
    np.testing.assert_allclose(task.x_train.numpy(), expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(task.y_test.numpy(), raw["y_test"])


@needs_shared
def test_pixel_range():
    task = mnist(path=str(SHARED), n_test=500)
    for x in (task.x_train, task.x_test):
        assert float(x.min()) == 0.0 and float(x.max()) == 1.0
        assert torch.equal((x * 255).round() / 255, x)  # exactly k/255
    assert 0.1 < float(task.x_train.mean()) < 0.15  # MNIST's mean pixel is about 0.13


@needs_shared
def test_full_training_set_label_counts():
    task = mnist(path=str(SHARED), n_train=60000, n_test=1)
    assert torch.bincount(task.y_train, minlength=10).tolist() == TRAIN_COUNTS


@needs_shared
def test_label_noise_flips_an_exact_share_of_training_labels_to_wrong_classes(raw):
    clean = mnist(path=str(SHARED), n_train=2000, n_test=300)
    noisy = mnist(path=str(SHARED), n_train=2000, n_test=300, label_noise=0.2, noise_seed=3)
    again = mnist(path=str(SHARED), n_train=2000, n_test=300, label_noise=0.2, noise_seed=3)
    other = mnist(path=str(SHARED), n_train=2000, n_test=300, label_noise=0.2, noise_seed=4)
    changed = (noisy.y_train != clean.y_train).nonzero().flatten()
    assert len(changed) == 400  # exactly 20%, every one to a wrong class
    assert changed.tolist() == noisy.meta["noisy_rows"]
    assert noisy.meta["clean_labels"] == clean.y_train[changed].tolist()
    assert torch.equal(noisy.x_train, clean.x_train) and torch.equal(noisy.y_test, clean.y_test)
    assert torch.equal(noisy.y_train, again.y_train)
    assert not torch.equal(noisy.y_train, other.y_train)
    # the wrong class is uniform over the nine others: shifts 1..9 each about 400 / 9 times
    shift = ((noisy.y_train[changed] - clean.y_train[changed]) % 10).tolist()
    counts = np.bincount(shift, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 20 and counts[1:].max() < 75
    assert "label_noise=0.2" in noisy.name and noisy.config["label_noise"] == 0.2
    assert "noisy_rows" not in clean.meta


@needs_shared
def test_seeded_subsets(raw):
    a = mnist(path=str(SHARED), n_train=300, n_test=200, seed=1)
    b = mnist(path=str(SHARED), n_train=300, n_test=200, seed=1)
    c = mnist(path=str(SHARED), n_train=300, n_test=200, seed=2)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    # every image is a distinct real image with its own label, and not simply the first ones
    index = {row.tobytes(): i for i, row in enumerate(raw["x_train"].reshape(60000, 784))}
    pixels = (a.x_train.numpy() * 255).round().astype(np.uint8)
    idx = [index[row.tobytes()] for row in pixels]
    assert len(set(idx)) == 300 and idx != list(range(300)) and max(idx) > 1000
    np.testing.assert_array_equal(a.y_train.numpy(), raw["y_train"][idx])


@needs_shared
def test_repeated_calls_hash_once(monkeypatch, tmp_path):
    copy = copy_real(tmp_path / "once" / "mnist.npz")
    calls = []
    real_sha = mod._sha256

    def counting(path):
        calls.append(path)
        return real_sha(path)

    monkeypatch.setattr(mod, "_sha256", counting)
    mnist(path=str(copy), n_test=10)
    mnist(path=str(copy), n_test=20, seed=3)
    assert len(calls) == 1
    # a changed file is hashed again (set the mtime: a rewrite can fall in the same clock tick)
    stat = copy.stat()
    corrupt_copy(copy)
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(mod.ChecksumError):
        mnist(path=str(copy))
    assert len(calls) == 2


# --- where the file is found ---------------------------------------------------------------------


@needs_shared
def test_env_var_directory_or_file(monkeypatch, tmp_path):
    copy = copy_real(tmp_path / "data" / "mnist.npz")
    monkeypatch.setenv("GROKWIDGETS_DATA", str(copy.parent))
    assert mnist(n_test=10).meta["source"] == str(copy)
    monkeypatch.setenv("GROKWIDGETS_DATA", str(copy))
    assert mnist(n_test=10).meta["source"] == str(copy)


def test_env_var_without_the_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("GROKWIDGETS_DATA", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="GROKWIDGETS_DATA"):
        mnist()


def test_missing_explicit_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        mnist(path=str(tmp_path / "nope.npz"))


@needs_shared
def test_user_cache_comes_before_shared(cache_file):
    copy_real(cache_file)
    assert mnist(n_test=10).meta["source"] == str(cache_file)


@needs_shared
def test_shared_found_relative_to_cwd(monkeypatch, tmp_path):
    copy = copy_real(tmp_path / "shared" / "data" / "mnist.npz")
    (tmp_path / "project").mkdir()
    monkeypatch.chdir(tmp_path / "project")
    assert mod._shared_candidates()[0] == copy
    assert mnist(n_test=10).meta["source"] == str(copy)


def test_nothing_found_without_download(no_shared):
    with pytest.raises(FileNotFoundError, match="download=False"):
        mnist(download=False)


# --- checksum ----------------------------------------------------------------------------------


@needs_shared
def test_corrupt_file_is_refused_with_both_hashes(tmp_path):
    bad = corrupt_copy(tmp_path / "bad" / "mnist.npz")
    actual = hashlib.sha256(bad.read_bytes()).hexdigest()
    with pytest.raises(mod.ChecksumError) as info:
        mnist(path=str(bad))
    msg = str(info.value)
    assert str(bad) in msg and actual in msg and mod.MNIST_SHA256 in msg
    assert "Delete it" in msg


@needs_shared
def test_corrupt_file_in_env_var_does_not_fall_back(monkeypatch, tmp_path):
    bad = corrupt_copy(tmp_path / "bad" / "mnist.npz")
    monkeypatch.setenv("GROKWIDGETS_DATA", str(bad.parent))
    with pytest.raises(mod.ChecksumError, match="no other copy was tried"):
        mnist()  # the shared file exists and is good, but is not used


@needs_shared
def test_corrupt_cache_does_not_fall_back_to_shared(cache_file):
    corrupt_copy(cache_file)
    assert SHARED.is_file()
    with pytest.raises(mod.ChecksumError, match=re.escape(str(cache_file))):
        mnist()
    assert cache_file.is_file()  # a file we did not download is left for the user to inspect


def test_checksum_constant():
    assert mod.MNIST_SHA256 == "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
    if SHARED.is_file():
        assert hashlib.sha256(SHARED.read_bytes()).hexdigest() == mod.MNIST_SHA256


# --- download, against a local HTTP server ---------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):  # noqa: A002
        pass

    def do_GET(self):  # noqa: N802
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = type("Handler", (_QuietHandler,), {"requests": []})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}", handler.requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


@needs_shared
def test_download_lands_in_cache_and_verifies(server, cache_file, no_shared):
    root, base, requests = server
    copy_real(root / "mnist.npz")
    task = mnist(url=f"{base}/mnist.npz", n_test=10)
    assert cache_file.is_file()
    assert hashlib.sha256(cache_file.read_bytes()).hexdigest() == mod.MNIST_SHA256
    assert leftovers(cache_file.parent) == ["mnist.npz"]  # no temp file left
    assert task.meta["source"] == str(cache_file)
    assert torch.bincount(task.y_train, minlength=10).tolist() == FIRST_1000_COUNTS
    assert requests == ["/mnist.npz"]
    mnist(url=f"{base}/mnist.npz", n_test=10)  # second call: from the cache
    assert requests == ["/mnist.npz"]


@needs_shared
def test_wrong_download_is_deleted(server, cache_file, no_shared):
    root, base, requests = server
    corrupt_copy(root / "mnist.npz")
    with pytest.raises(mod.ChecksumError, match="it was deleted") as info:
        mnist(url=f"{base}/mnist.npz")
    assert mod.MNIST_SHA256 in str(info.value)
    assert requests == ["/mnist.npz"]
    assert leftovers(cache_file.parent) == []


def test_http_error_is_a_clear_download_error(server, cache_file, no_shared):
    _, base, requests = server
    with pytest.raises(mod.DownloadError, match="GROKWIDGETS_DATA") as info:
        mnist(url=f"{base}/missing.npz")
    assert "404" in str(info.value)
    assert requests == ["/missing.npz"]
    assert leftovers(cache_file.parent) == []


def test_unreachable_url_says_where_to_put_the_file(cache_file, no_shared):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # the port is closed now: the connection is refused
    with pytest.raises(mod.DownloadError) as info:
        mnist(url=f"http://127.0.0.1:{port}/mnist.npz")
    msg = str(info.value)
    assert "GROKWIDGETS_DATA" in msg and str(cache_file) in msg
    assert isinstance(info.value.__cause__, OSError)
    assert leftovers(cache_file.parent) == []


# --- arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_train": 0}, "n_train must be"),
        ({"n_train": 60001}, "n_train must be"),
        ({"n_test": 10001}, "n_test must be"),
        ({"n_test": 5.0}, "n_test must be"),
        ({"seed": -1}, "seed must be"),
        ({"flatten": False}, "flatten=False"),
        ({"url": 3}, "url must be"),
        ({"label_noise": 1.0}, "label_noise must be"),
        ({"label_noise": -0.1}, "label_noise must be"),
        ({"label_noise": "0.1"}, "label_noise must be"),
        ({"label_noise": True}, "label_noise must be"),
        ({"noise_seed": -1}, "noise_seed must be"),
    ],
)
def test_bad_arguments(kwargs, match, no_shared):
    with pytest.raises(ValueError, match=match):
        mnist(**kwargs)
