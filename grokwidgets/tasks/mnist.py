"""MNIST digits from the Keras ``mnist.npz``, found locally or downloaded, always checksummed."""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import check_int
from .base import Task, register_family

__all__ = [
    "ENV_VAR",
    "KERAS_URL",
    "MNIST_SHA256",
    "ChecksumError",
    "DownloadError",
    "cache_dir",
    "fetch_mnist",
    "mnist",
]

KERAS_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
"""Where Keras downloads ``mnist.npz`` from."""

MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
"""SHA-256 of the Keras ``mnist.npz`` (11,490,434 bytes); every file is checked against it."""

ENV_VAR = "GROKWIDGETS_DATA"
"""Environment variable naming a directory that holds ``mnist.npz``, or the file itself."""

FILENAME = "mnist.npz"
N_TRAIN_MAX = 60_000
N_TEST_MAX = 10_000
_KEYS = ("x_train", "y_train", "x_test", "y_test")


class ChecksumError(ValueError):
    """A file's SHA-256 is not that of the Keras ``mnist.npz``."""


class DownloadError(OSError):
    """``mnist.npz`` was found nowhere and could not be downloaded."""


def cache_dir() -> Path:
    """Return the user cache directory: ``$XDG_CACHE_HOME/grokwidgets``, else ``~/.cache/...``."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if base and Path(base).is_absolute() else Path.home() / ".cache"
    return root / "grokwidgets"


def _shared_candidates() -> list[Path]:
    """``../shared/data/mnist.npz`` from the working directory and from the repository root.

    A module-level function so that tests can switch this lookup off.
    """
    repo_root = Path(__file__).resolve().parents[2]
    found: list[Path] = []
    for root in (Path.cwd(), repo_root):
        candidate = (root / ".." / "shared" / "data" / FILENAME).resolve()
        if candidate not in found:
            found.append(candidate)
    return found


def _explicit(path: str | os.PathLike[str], source: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / FILENAME
    if not p.is_file():
        msg = f"{source} points to {p}, which does not exist. Put {FILENAME} there or fix the path."
        raise FileNotFoundError(msg)
    return p


def _locate(path: str | os.PathLike[str] | None, url: str, download: bool) -> Path:
    """Find ``mnist.npz`` (see :func:`mnist` for the order), downloading it if allowed."""
    if path is not None:
        return _explicit(path, "path")
    env = os.environ.get(ENV_VAR, "")
    if env:
        return _explicit(env, f"{ENV_VAR}={env!r}")
    cached = cache_dir() / FILENAME
    if cached.is_file():
        return cached
    shared = _shared_candidates()
    for candidate in shared:
        if candidate.is_file():
            return candidate
    if not download:
        searched = ", ".join(str(p) for p in [cached, *shared])
        msg = (
            f"{FILENAME} not found (looked in: {searched}) and download=False. Pass path=, set "
            f"{ENV_VAR} to the directory holding it, or allow the download from {url}."
        )
        raise FileNotFoundError(msg)
    _download(url, cached)
    return cached


def _download(url: str, dest: Path) -> None:
    """Download ``url`` to ``dest`` atomically; the file lands only if its checksum matches."""
    from tqdm.auto import tqdm

    tmp: str | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".mnist-", suffix=".part", dir=dest.parent)
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=f"Downloading {FILENAME}",
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        actual = digest.hexdigest()
        if actual != MNIST_SHA256:
            msg = (
                f"The file downloaded from {url} has SHA-256 {actual}, but {FILENAME} must have "
                f"{MNIST_SHA256}; it was deleted, not used. Check the url, or download "
                f"{KERAS_URL} yourself and set {ENV_VAR} to the directory holding it."
            )
            raise ChecksumError(msg)
        os.replace(tmp, dest)
        tmp = None
    except (OSError, urllib.error.URLError, http.client.HTTPException) as err:
        msg = (
            f"Could not download {FILENAME} from {url} to {dest}: {err}. Without network access, "
            f"copy {FILENAME} (from {KERAS_URL}, SHA-256 {MNIST_SHA256}) onto this machine and "
            f"set the environment variable {ENV_VAR} to the directory holding it (or to the file),"
            f" put it at {dest}, or pass path=."
        )
        raise DownloadError(msg) from err
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


@functools.lru_cache(maxsize=4)
def _load_verified(path: str, mtime_ns: int, size: int) -> dict[str, np.ndarray]:
    """Checksum and load one file; cached by path, modification time and size."""
    actual = _sha256(Path(path))
    if actual != MNIST_SHA256:
        msg = (
            f"{path} is not the Keras {FILENAME}: its SHA-256 is {actual}, expected "
            f"{MNIST_SHA256}. It is corrupt, truncated or a different file, so it was not used "
            f"(and no other copy was tried). Delete it and call mnist() again to re-download it "
            f"into {cache_dir()}, or replace it with a good copy."
        )
        raise ChecksumError(msg)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in _KEYS}
    for arr in arrays.values():
        arr.flags.writeable = False  # shared between calls through the cache
    return arrays


def fetch_mnist(
    path: str | os.PathLike[str] | None = None, *, url: str = KERAS_URL, download: bool = True
) -> Path:
    """Find (or download) ``mnist.npz``, verify its SHA-256 and return its path.

    The lookup order is that of :func:`mnist`. Useful to download once ahead of time, e.g. on a
    machine with network access.

    Parameters
    ----------
    path : str, os.PathLike or None
        A file, or a directory holding ``mnist.npz``; None searches.
    url : str
        Where to download from when the file is found nowhere.
    download : bool
        Whether a download is allowed.

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    ChecksumError
        If the file found (or downloaded) is not the Keras ``mnist.npz``.
    DownloadError
        If the file is found nowhere and the download fails.
    FileNotFoundError
        If ``path`` or ``GROKWIDGETS_DATA`` names a missing file, or nothing is found and
        ``download=False``.
    """
    file = _locate(path, url, download)
    _load_arrays(file)
    return file


def _load_arrays(file: Path) -> dict[str, np.ndarray]:
    stat = file.stat()
    return _load_verified(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@register_family("mnist")
def mnist(
    n_train: int = 1000,
    n_test: int = 10000,
    seed: int | None = None,
    flatten: bool = True,
    path: str | os.PathLike[str] | None = None,
    url: str = KERAS_URL,
    download: bool = True,
    label_noise: float = 0.0,
    noise_seed: int = 0,
) -> Task:
    r"""Handwritten digits 0–9: the MNIST database as Keras ships it.

    Pixels are scaled to :math:`x = \text{pixel} / 255 \in [0, 1]` (float32) and flattened to
    784 features; labels are int64 digits. The default (first 1,000 training images, the full
    10,000-image test set) is the grokking setup of Omnigrok [2]_, used by papers 1 and 4.

    The file ``mnist.npz`` is looked for, in order, at

    1. ``path``, if given (a file, or a directory holding ``mnist.npz``);
    2. ``$GROKWIDGETS_DATA`` if set (a directory holding ``mnist.npz``, or the file);
    3. the user cache, ``$XDG_CACHE_HOME/grokwidgets/mnist.npz`` (default ``~/.cache``);
    4. ``../shared/data/mnist.npz`` from the working directory, then from the repository root;
    5. else, when ``download=True``, it is downloaded from ``url`` into the user cache.

    Options 1 and 2 are final: a missing file there is an error, not a reason to look further.
    The first file found must have SHA-256 :data:`MNIST_SHA256`, or :class:`ChecksumError` is
    raised; no other copy is tried. Verified arrays are cached in the process (by path,
    modification time and size), so repeated calls do not hash the 11 MB again.

    Parameters
    ----------
    n_train : int
        Number of training images, 1 to 60,000.
    n_test : int
        Number of test images, 1 to 10,000.
    seed : int or None
        None takes the first ``n_train`` / ``n_test`` images (Omnigrok's choice); an integer
        draws a random subset of each split with a ``torch.Generator`` seeded with it.
    flatten : bool
        Must be True: a :class:`Task` holds 2-D inputs, so images come as 784 features; use
        ``meta["image_shape"]`` to view them as ``28 × 28`` in a model.
    path : str, os.PathLike or None
        A file or directory to load from instead of searching.
    url : str
        Where to download from, by default Keras' address :data:`KERAS_URL`.
    download : bool
        Whether to download when the file is found nowhere.
    label_noise : float
        Fraction of the *training* labels replaced by a wrong one, in [0, 1): exactly
        ``round(label_noise * n_train)`` rows, chosen at random, each given a class drawn
        uniformly from the nine incorrect ones. Drawn once (not per epoch) with a
        ``torch.Generator`` seeded with ``noise_seed``; the test labels stay clean. This is the
        label noise of epoch-wise double descent (Nakkiran et al. 2019 [3]_: "a uniformly random
        incorrect label", there with probability p per sample, here an exact count). The flipped
        rows are ``meta["noisy_rows"]`` and their true labels ``meta["clean_labels"]``.
    noise_seed : int
        Seed of the label noise (independent of ``seed``, which picks the subset).

    Returns
    -------
    Task
        Classification task with 10 classes; ``x`` float32 ``(n, 784)``, ``y`` int64 ``(n,)``.

    Raises
    ------
    ChecksumError
        If the file is not the Keras ``mnist.npz`` (the message says how to fix it).
    DownloadError
        If the file is found nowhere and cannot be downloaded (the message says where to put it).
    FileNotFoundError
        If ``path`` or ``GROKWIDGETS_DATA`` names a missing file, or nothing is found and
        ``download=False``.
    ValueError
        For out-of-range sizes, a negative seed or ``flatten=False``.

    References
    ----------
    .. [1] LeCun, Cortes & Burges. The MNIST database of handwritten digits. CC BY-SA 3.0.
    .. [2] Liu, Michaud & Tegmark (2022). Omnigrok: Grokking beyond algorithmic data.
       arXiv:2210.01117.
    .. [3] Nakkiran, Kaplun, Bansal, Yang, Barak & Sutskever (2019). Deep double descent: where
       bigger models and more data hurt. arXiv:1912.02292.
    """
    n_train = check_int("n_train", n_train, 1, N_TRAIN_MAX)
    n_test = check_int("n_test", n_test, 1, N_TEST_MAX)
    if seed is not None:
        seed = check_int("seed", seed, 0, 2**63 - 1)
    if flatten is not True:
        msg = (
            "flatten=False is not supported: a Task holds 2-D inputs (samples, features). Use "
            "flatten=True and reshape in the model with x.view(-1, 28, 28) "
            "(task.meta['image_shape'])."
        )
        raise ValueError(msg)
    if path is not None and not isinstance(path, str | os.PathLike):
        msg = f"path must be a str, a path or None, got {path!r}."
        raise ValueError(msg)
    if not isinstance(url, str):
        msg = f"url must be a str, got {url!r}."
        raise ValueError(msg)
    download = bool(download)
    if isinstance(label_noise, bool) or not isinstance(label_noise, int | float):
        msg = f"label_noise must be a number in [0, 1), got {label_noise!r}."
        raise ValueError(msg)
    label_noise = float(label_noise)
    if not 0.0 <= label_noise < 1.0:
        msg = f"label_noise must be a fraction of the training labels in [0, 1), got {label_noise}."
        raise ValueError(msg)
    noise_seed = check_int("noise_seed", noise_seed, 0, 2**63 - 1)

    file = _locate(path, url, download)
    arrays = _load_arrays(file)
    if seed is None:
        train_idx: np.ndarray | slice = slice(0, n_train)
        test_idx: np.ndarray | slice = slice(0, n_test)
    else:
        gen = torch.Generator().manual_seed(seed)
        train_idx = torch.randperm(N_TRAIN_MAX, generator=gen)[:n_train].numpy()
        test_idx = torch.randperm(N_TEST_MAX, generator=gen)[:n_test].numpy()

    def images(key: str, idx: np.ndarray | slice) -> torch.Tensor:
        x = arrays[key][idx].astype(np.float32) / np.float32(255.0)
        return torch.from_numpy(x.reshape(x.shape[0], -1))

    def labels(key: str, idx: np.ndarray | slice) -> torch.Tensor:
        return torch.from_numpy(arrays[key][idx].astype(np.int64))

    y_train = labels("y_train", train_idx)
    meta: dict[str, Any] = {"image_shape": [28, 28], "sha256": MNIST_SHA256, "source": str(file)}
    subset = "" if seed is None else f", seed={seed}"
    if label_noise > 0:
        y_train, noisy = _flip_labels(y_train, label_noise, noise_seed)
        meta["noisy_rows"] = noisy.tolist()
        meta["clean_labels"] = labels("y_train", train_idx)[noisy].tolist()
        subset += f", label_noise={label_noise:g}"
    return Task(
        name=f"mnist(n_train={n_train}, n_test={n_test}{subset})",
        kind="classification",
        x_train=images("x_train", train_idx),
        y_train=y_train,
        x_test=images("x_test", test_idx),
        y_test=labels("y_test", test_idx),
        n_outputs=10,
        config={
            "family": "mnist",
            "n_train": n_train,
            "n_test": n_test,
            "seed": seed,
            "flatten": flatten,
            "path": None if path is None else os.fspath(path),
            "url": url,
            "download": download,
            "label_noise": label_noise,
            "noise_seed": noise_seed,
        },
        meta=meta,
    )


def _flip_labels(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``y`` with ``round(fraction * n)`` random rows moved to a uniformly drawn wrong class."""
    gen = torch.Generator().manual_seed(seed)
    n = len(y)
    rows = torch.randperm(n, generator=gen)[: round(fraction * n)].sort().values
    # A shift of 1..9 classes (mod 10) is a uniform draw among the nine wrong labels.
    shift = torch.randint(1, 10, (len(rows),), generator=gen)
    out = y.clone()
    out[rows] = (y[rows] + shift) % 10
    return out, rows
