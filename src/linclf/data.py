"""The CIFAR-10 cache: building it from the official batch files, loading it, splitting it.

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

from linclf.errors import LinclfError
from linclf.files import build_dir

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
            return _reconstruct()
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("_codecs", "encode"):
            import _codecs
            return _codecs.encode
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as function  # NumPy 2
    except ImportError:  # pragma: no cover - NumPy 1
        from numpy.core.multiarray import _reconstruct as function
    return function


def _unpickle(path):
    try:
        with open(path, "rb") as handle:
            return _BatchUnpickler(handle, encoding="bytes").load()
    except FileNotFoundError:
        raise LinclfError(f"missing CIFAR-10 batch file: {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as error:
        raise LinclfError(f"{path} is not a valid CIFAR-10 batch file: {error}") from None


def _get(batch, key, path):
    for candidate in (key, key.decode()):
        if isinstance(batch, dict) and candidate in batch:
            return batch[candidate]
    raise LinclfError(f"{path} is not a valid CIFAR-10 batch file: no '{key.decode()}' entry")


def read_batch(path):
    """Read one official batch file. Returns images (N, 32, 32, 3) uint8 and labels (N,) uint8."""
    batch = _unpickle(path)
    data = np.asarray(_get(batch, b"data", path))
    labels = np.asarray(_get(batch, b"labels", path))
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise LinclfError(f"{path}: expected data of shape (N, 3072) uint8, got {data.shape} {data.dtype}")
    if labels.shape != (data.shape[0],):
        raise LinclfError(f"{path}: expected {data.shape[0]} labels, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise LinclfError(f"{path}: labels must be in 0..{NUM_CLASSES - 1}, "
                          f"got values {labels.min()}..{labels.max()}")
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # R, G, B planes -> H, W, RGB
    return np.ascontiguousarray(images), labels.astype(np.uint8)


def read_class_names(batches_dir):
    meta = _unpickle(Path(batches_dir) / META_BATCH)
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _get(meta, b"label_names", META_BATCH)]
    if len(names) != NUM_CLASSES:
        raise LinclfError(f"{META_BATCH}: expected {NUM_CLASSES} class names, got {len(names)}")
    return names


def _save_npy(path, array):
    with open(path, "wb") as handle:
        np.save(handle, array)


def build_cache(batches_dir, data_dir, source_md5=""):
    """Build cifar-10/ under data_dir from an extracted cifar-10-batches-py/ folder.

    Written into a temporary folder first and renamed into place, so an interrupted build never
    leaves a cache that looks complete. Replaces an existing cache. Returns the cache path.
    """
    batches_dir = Path(batches_dir)
    target = cache_path(data_dir)
    for name in TRAIN_BATCHES + [TEST_BATCH, META_BATCH]:
        if not (batches_dir / name).is_file():
            raise LinclfError(f"archive is missing the batch file {BATCHES_DIR}/{name}")
    class_names = read_class_names(batches_dir)
    train = [read_batch(batches_dir / name) for name in TRAIN_BATCHES]
    test_x, test_y = read_batch(batches_dir / TEST_BATCH)
    train_x = np.concatenate([images for images, _ in train])
    train_y = np.concatenate([labels for _, labels in train])
    with build_dir(target) as staging:
        _save_npy(staging / "train_x.npy", train_x)
        _save_npy(staging / "train_y.npy", train_y)
        _save_npy(staging / "test_x.npy", test_x)
        _save_npy(staging / "test_y.npy", test_y)
        meta = {"class_names": class_names, "source_md5": source_md5,
                "num_train": int(len(train_y)), "num_test": int(len(test_y))}
        (staging / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return target


# -- loading and splitting the cache --------------------------------------------------------------

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
    """meta.json of a complete cache, or None when the cache is missing or incomplete."""
    folder = cache_path(data_dir)
    if not all((folder / name).is_file() for name in CACHE_FILES):
        return None
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def load_cache(data_dir=None):
    """Open the cache under data_dir; a missing cache says where it looked and what to run."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    folder = cache_path(data_dir)
    meta = read_meta(data_dir)
    if meta is None:
        raise LinclfError(f"no CIFAR-10 cache in {folder}: run 'linclf download --data-dir {data_dir}' first")
    try:
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                  for name in ("train_x", "train_y", "test_x", "test_y")}
    except (OSError, ValueError) as error:
        raise LinclfError(f"the CIFAR-10 cache in {folder} is damaged ({error}); "
                          f"run 'linclf download --force --data-dir {data_dir}'") from None
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if images.shape[1:] != IMAGE_SHAPE or images.dtype != np.uint8 or labels.shape != images.shape[:1]:
            raise LinclfError(f"the CIFAR-10 cache in {folder} has wrong shapes; "
                              f"run 'linclf download --force --data-dir {data_dir}'")
    return Dataset(class_names=list(meta["class_names"]), meta=meta, **arrays)


def split(dataset, name, val_size, train_size=0):
    """Images (N, 32, 32, 3) uint8 and labels (N,) of one split: "train", "val" or "test".

    "val" is the last val_size training images; "train" is the rest, or its first train_size
    images when train_size > 0; "test" is the official test batch.
    """
    total = len(dataset.train_y)
    if not 0 < val_size < total:
        raise LinclfError(f"val_size must be in [1, {total - 1}] for this data, got {val_size}")
    if name == "test":
        return dataset.test_x, dataset.test_y
    if name == "val":
        return dataset.train_x[total - val_size:], dataset.train_y[total - val_size:]
    if name == "train":
        end = total - val_size
        if train_size:
            if train_size > end:
                raise LinclfError(f"train_size must be at most {end} with val_size {val_size}, got {train_size}")
            end = train_size
        return dataset.train_x[:end], dataset.train_y[:end]
    raise LinclfError(f"split must be one of train, val, test; got {name!r}")
