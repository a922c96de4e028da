"""The CIFAR-10 cache: building it from the official batch files and loading it (splits: sources.py).

Cache layout, under the data dir (default ./data, env LINCLF_DATA_DIR):

    cifar-10/train_x.npy   (50000, 32, 32, 3) uint8, height x width x RGB
    cifar-10/train_y.npy   (50000,) uint8, labels 0..9
    cifar-10/test_x.npy    (10000, 32, 32, 3) uint8
    cifar-10/test_y.npy    (10000,) uint8
    cifar-10/meta.json     {"class_names": [...], "source_md5": "...", ...}

The arrays are opened with np.load(mmap_mode="r"), so opening the data costs milliseconds.
"""
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linclf.util.errors import LinclfError, short_repr
from linclf.util.files import build_dir, check_readable, is_regular, open_new, open_regular, read_text

CACHE_NAME = "cifar-10"
BATCHES_DIR = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"
META_BATCH = "batches.meta"
NUM_CLASSES = 10
IMAGE_SHAPE = (32, 32, 3)
CACHE_FILES = ("train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy", "meta.json")


def default_data_dir():
    """The data dir: $LINCLF_DATA_DIR, else ./data."""
    return Path(os.environ.get("LINCLF_DATA_DIR") or "data")


def cache_path(data_dir):
    return Path(data_dir) / CACHE_NAME


# -- reading the official batch files, safely ---------------------------------------------------

class _BatchUnpickler(pickle.Unpickler):
    """Unpickler that admits only the globals the official CIFAR-10 files need.

    The files (Python 2, NumPy 1) name numpy.core.multiarray._reconstruct, numpy.ndarray and
    numpy.dtype; files re-pickled by Python 3 may also name _codecs.encode. Anything else (os.system,
    say) is refused, so a hostile file cannot run code.
    """

    def find_class(self, module, name):
        if (module, name) in {("numpy.core.multiarray", "_reconstruct"),
                              ("numpy._core.multiarray", "_reconstruct")}:
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # pragma: no cover - NumPy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            import _codecs
            return _codecs.encode
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _unpickle(path, label=None):
    """The batch file at path, unpickled safely; label: what messages call it (default: path)."""
    shown = label or path
    try:
        with open_regular(path) as handle:
            return _BatchUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise LinclfError(f"missing CIFAR-10 batch file: {shown}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise LinclfError(f"{shown} is not a valid CIFAR-10 batch file: {error}") from None


def _get(batch, key, path):
    for candidate in (key, key.decode()):
        if isinstance(batch, dict) and candidate in batch:
            return batch[candidate]
    raise LinclfError(f"{path} is not a valid CIFAR-10 batch file: no '{key.decode()}' entry")


_KINDS = {"f": "floating-point numbers", "c": "complex numbers", "b": "booleans", "U": "strings",
          "S": "bytes", "O": "mixed values"}


def read_batch(path, label=None):
    """Read one official batch file. Returns images (N, 32, 32, 3) uint8 and labels (N,) uint8.
    label: what messages call the file (default: path)."""
    batch = _unpickle(path, label)
    path = label or path  # what the messages below name
    data, labels = _get(batch, b"data", path), _get(batch, b"labels", path)
    try:
        data, labels = np.asarray(data), np.asarray(labels)
    except (ValueError, TypeError) as error:  # ragged lists, say
        raise LinclfError(f"{path}: data and labels must be arrays ({str(error)[:80]})") from None
    if labels.size and labels.dtype.kind not in "iu":
        what = _KINDS.get(labels.dtype.kind, labels.dtype.name)
        first = labels.flat[0].item() if isinstance(labels.flat[0], np.generic) else labels.flat[0]
        raise LinclfError(f"{path}: labels must be integers in 0..{NUM_CLASSES - 1}, "
                          f"got {what} such as {short_repr(first, 20)}")
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise LinclfError(f"{path}: expected data of shape (N, 3072) uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],):
        raise LinclfError(f"{path}: expected {data.shape[0]} labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise LinclfError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, "
                          f"got values {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes -> H, W, RGB
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def read_class_names(batches_dir, label=None):
    """The 10 class names in batches_dir's batches.meta; label: what messages call batches_dir."""
    where = f"{label}/{META_BATCH}" if label else META_BATCH
    meta = _unpickle(Path(batches_dir) / META_BATCH, where if label else None)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, b"label_names", where)]
    if len(names) != NUM_CLASSES:
        raise LinclfError(f"{where}: expected {NUM_CLASSES} class names, got {len(names)}")
    return names


def build_cache(batches_dir, data_dir, source_md5="", label=None):
    """Build cifar-10/ under data_dir from an extracted cifar-10-batches-py/ folder. Written into a
    temporary folder first and renamed into place, so an interrupted build never leaves a cache that
    looks complete. Replaces an existing cache. Returns the cache path. label: what messages call
    batches_dir (the archive it was extracted from, say)."""
    batches_dir = Path(batches_dir)
    target = cache_path(data_dir)
    for name in TRAIN_BATCHES + [TEST_BATCH, META_BATCH]:
        if not (batches_dir / name).is_file():
            raise LinclfError(f"archive is missing the batch file {BATCHES_DIR}/{name}")
    class_names = read_class_names(batches_dir, label)
    train = [read_batch(batches_dir / name, label and f"{label}/{name}") for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(batches_dir / TEST_BATCH, label and f"{label}/{TEST_BATCH}")
    train_x = np.concatenate([images for images, _ in train])
    train_y = np.concatenate([labels for _, labels in train])
    with build_dir(target) as staging:
        for name, array in (("train_x", train_x), ("train_y", train_y), ("test_x", test_x), ("test_y", test_y)):
            with open_new(staging / f"{name}.npy") as handle:
                np.save(handle, array)
        meta = {"class_names": class_names, "source_md5": source_md5,
                "num_train": int(len(train_y)), "num_test": int(len(test_y))}
        with open_new(staging / "meta.json") as handle:
            handle.write((json.dumps(meta, indent=2) + "\n").encode())
    return target


# -- loading the cache ---------------------------------------------------------------------------

@dataclass
class Dataset:
    """The cached arrays (memory-mapped, read-only) and the class names."""
    train_x: np.ndarray  # (50000, 32, 32, 3) uint8
    train_y: np.ndarray  # (50000,) uint8
    test_x: np.ndarray   # (10000, 32, 32, 3) uint8
    test_y: np.ndarray   # (10000,) uint8
    class_names: list
    meta: dict


def read_meta(data_dir):
    """meta.json (a dict) of a complete cache, or None when the cache is missing or incomplete or
    meta.json is not a JSON object."""
    folder = cache_path(data_dir)
    try:
        if not all(is_regular(folder / name) for name in CACHE_FILES):
            return None
        meta = json.loads(read_text(folder / "meta.json"))
    except (OSError, ValueError, LinclfError):
        return None
    return meta if isinstance(meta, dict) else None


def _check_meta(path, repair):
    """The parsed meta.json at path; anything but an object with 10 class names is a LinclfError."""
    try:
        meta = json.loads(read_text(path))
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except ValueError as error:  # bad JSON or bad UTF-8
        raise LinclfError(f"{path} is not valid JSON ({str(error)[:80]}); {repair}") from None
    if not isinstance(meta, dict):
        raise LinclfError(f"{path}: expected a JSON object, got {type(meta).__name__}; {repair}")
    names = meta.get("class_names")
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise LinclfError(f"{path}: class_names must be a list of strings, got {short_repr(names)}; {repair}")
    if len(names) != NUM_CLASSES:
        raise LinclfError(f"{path}: expected {NUM_CLASSES} class names, got {len(names)}; {repair}")
    return meta


def _open_array(path, count, repair):
    """Memory-map the .npy file at path and check it: images (N, 32, 32, 3) uint8 when count is None,
    else labels (count,) of an integer type in 0..NUM_CLASSES-1 (min and max read them once: cheap)."""
    try:
        array = np.load(check_readable(path), mmap_mode="r", allow_pickle=False)  # never a FIFO: numpy opens it by name
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except (OSError, ValueError, EOFError) as error:
        truncated = isinstance(error, EOFError) or "mmap length" in str(error) or "EOF" in str(error)
        problem = "is truncated" if truncated else "is not a .npy array"
        raise LinclfError(f"{path} {problem} ({str(error)[:80]}); {repair}") from None
    if count is None:
        if array.shape[1:] != IMAGE_SHAPE or array.dtype != np.uint8:
            raise LinclfError(f"{path}: expected images of shape (N, 32, 32, 3) uint8, "
                              f"got {array.shape} {array.dtype}; {repair}")
        return array
    if array.shape != (count,):
        raise LinclfError(f"{path}: expected {count} labels, shape ({count},), got {array.shape}; {repair}")
    if array.dtype.kind not in "iu":
        raise LinclfError(f"{path}: labels must be integers, got {array.dtype}; {repair}")
    if count and (array.min() < 0 or array.max() >= NUM_CLASSES):
        raise LinclfError(f"{path}: labels must be in 0..{NUM_CLASSES - 1} (one per class name), "
                          f"got {array.min()}..{array.max()}; {repair}")
    return array


def load_cache(data_dir=None):
    """Open the cache under data_dir; a missing cache says where it looked and what to run. Nothing read
    back is trusted: a damaged meta.json or array is a one-line LinclfError naming the file, what is
    wrong with it and the repair (rebuilding the cache)."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = cache_path(data_dir)
    if not all(is_regular(folder / name) for name in CACHE_FILES):
        raise LinclfError(f"no CIFAR-10 cache in {folder}: run 'linclf download --data-dir {data_dir}' first")
    repair = f"run 'linclf download --force --data-dir {data_dir}'"
    meta = _check_meta(folder / "meta.json", repair)
    arrays = {}
    for split in ("train", "test"):
        arrays[f"{split}_x"] = images = _open_array(folder / f"{split}_x.npy", None, repair)
        arrays[f"{split}_y"] = _open_array(folder / f"{split}_y.npy", len(images), repair)
    return Dataset(class_names=list(meta["class_names"]), meta=meta, **arrays)


def load_cifar10(data_dir: str | Path | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The cache that `linclf download` built under data_dir (default $LINCLF_DATA_DIR or ./data) as
    arrays: (X_train (50000, 32, 32, 3) uint8, y_train (50000,) int64, X_test (10000, 32, 32, 3)
    uint8, y_test (10000,) int64, class_names (10,) list of str). The images are read-only memory
    maps; a missing or damaged cache is a LinclfError saying how to build it."""
    dataset = load_cache(data_dir)
    return (dataset.train_x, np.asarray(dataset.train_y, np.int64), dataset.test_x,
            np.asarray(dataset.test_y, np.int64), list(dataset.class_names))
