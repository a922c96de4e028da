"""Data sources: where the train and test arrays come from, checked where they enter.

A `Source` gives train/test arrays, class names and a data id, a short string that changes with
the data (the CIFAR-10 archive's md5 and sizes; an array file's hash): runs trained on different
data never share a run id, and `eval --best` compares only runs measured on the same data.
`ref` is how to open the same source again in another process (a Dask worker): a small dict.

Sources:
  - the CIFAR-10 cache (`cifar10`): images (N, 32, 32, 3) uint8, 10 classes.
  - an array file (`arrays`): features a user brings, an .npz holding X_train (N, D), y_train (N,),
    X_test (M, D), y_test (M,) and optionally class_names (C,); see ARRAYS_HELP. Its feature arrays
    are npzfiles.FileRows: rows read from the file when used, never memory-mapped.
"""
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from linclf.config import DEFAULTS, SPLIT_KEYS, val_rows
import linclf.data.cifar10
from linclf.data.npzfiles import changed_error, read_npz
from linclf.util.chunks import chunk_rows
from linclf.util.errors import LinclfError
from linclf.util.files import file_hash

VAL_SPLIT_SEED = 0  # the seed of `val_split: random`: the same validation rows for every run


@dataclass
class Source:
    train_x: np.ndarray   # (N, ...) uint8 images (N, 32, 32, 3), or features (N, D)
    train_y: np.ndarray   # (N,) integer labels in 0..C-1
    test_x: np.ndarray    # (M, ...) like train_x
    test_y: np.ndarray    # (M,)
    class_names: list     # C names
    data_id: str          # changes with the data
    kind: str             # "images" (CIFAR-10 pixels) or "features" (arrays a user brings)
    ref: dict             # how to open it again: see `open_source`
    named: bool = True    # the class names came with the data (an array file may have none)
    stamps: dict = None   # {path: file_stamp(path)} of the files it reads, taken before reading them

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def where(self):
        """The data's place, for messages: the cache folder or the array file."""
        return next(iter(self.ref.values()))


def file_stamp(path):
    """What identifies a file's content without reading it: (device, inode, size, mtime, ctime) in
    ns. A rewrite in place changes the ctime even when it keeps the size and restores the mtime."""
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def check_unchanged(source):
    """Raise a LinclfError when a file the source reads was changed in place since it was opened:
    what was read from it may mix old and new data. A file replaced by a rename is fine (linclf
    reads the old one, whole, through the descriptor it holds)."""
    for path, stamp in (source.stamps or {}).items():
        try:
            now = file_stamp(path)
        except OSError:  # removed: the open file is the old one, whole
            continue
        if now[:2] == stamp[:2] and now != stamp:
            raise changed_error(path)


def check_labels(name, labels, num_classes, where=""):
    """Labels as an (N,) intp array; one-line LinclfError naming the array unless they are
    integers in 0..num_classes-1."""
    prefix = f"{where}: " if where else ""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise LinclfError(f"{prefix}{name} must be a 1-D array of labels, got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        raise LinclfError(f"{prefix}{name} must hold integer labels, got dtype {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise LinclfError(f"{prefix}{name}: labels must be in 0..{num_classes - 1}, "
                          f"got values {labels.min()}..{labels.max()}")
    return labels.astype(np.intp, copy=False)


def cifar10(data_dir=None):
    """The CIFAR-10 cache under data_dir as a Source (memory-mapped, read-only)."""
    data_dir = data_dir or linclf.data.cifar10.default_data_dir()
    folder = linclf.data.cifar10.cache_path(data_dir)
    try:
        stamps = {str(folder / f"{name}.npy"): file_stamp(folder / f"{name}.npy")
                  for name in ("train_x", "train_y", "test_x", "test_y")}
    except OSError:
        stamps = None  # no cache: load_cache says so
    dataset = linclf.data.cifar10.load_cache(data_dir)
    train_x, test_x = dataset.train_x, dataset.test_x  # load_cache checked shapes, dtypes and label ranges
    train_y, test_y = (np.asarray(y).astype(np.intp, copy=False) for y in (dataset.train_y, dataset.test_y))
    md5 = str(dataset.meta.get("source_md5", "") or "")
    if not md5:  # a cache built without its archive's md5: the labels still tell caches apart
        md5 = "labels" + hashlib.sha1(np.ascontiguousarray(train_y).tobytes() + np.ascontiguousarray(test_y).tobytes()
                                      ).hexdigest()[:10]
    data_id = f"cifar10-{md5[:16]}-{len(train_y)}-{len(test_y)}"
    return Source(train_x, train_y, test_x, test_y, list(dataset.class_names), data_id, "images",
                  {"cifar10": str(data_dir)}, stamps=stamps)


def open_source(ref):
    """The Source a `ref` names: {"cifar10": data_dir} or {"arrays": path of an .npz}."""
    if "cifar10" in ref:
        return cifar10(ref["cifar10"])
    if "arrays" in ref:
        return arrays(ref["arrays"])
    raise LinclfError(f"unknown data source {ref!r}")


# -- arrays a user brings -----------------------------------------------------------------------

ARRAYS_HELP = ("an .npz (np.savez) holding X_train (N, D) and X_test (M, D) float16/32/64 features, "
               "y_train (N,) and y_test (M,) integer labels 0..C-1, and optionally class_names (C,) "
               "strings; C = len(class_names), else the largest label + 1")
FEATURE_DTYPES = ("float16", "float32", "float64")
_VERIFIED = {}  # (path, file_stamp) -> sha256 of a file whose arrays passed the checks


def check_features(name, X, where, dim=None, scan=True):
    """Refuse features X unless (N, D) float16/32/64, N, D >= 1, every value finite (and D == dim
    when given); returns X. The finiteness check (skipped unless `scan`) reads X chunk by chunk."""
    if X.ndim != 2:
        raise LinclfError(f"{where}: {name} must be a 2-D array (N, D) of features, got shape {X.shape}")
    if X.dtype.name not in FEATURE_DTYPES:
        raise LinclfError(f"{where}: {name} must hold {', '.join(FEATURE_DTYPES)} features, got {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise LinclfError(f"{where}: {name} is empty (shape {X.shape}); it needs rows and features")
    if dim is not None and X.shape[1] != dim:
        raise LinclfError(f"{where}: {name} has {X.shape[1]} features (D) but X_train has {dim}")
    rows = chunk_rows(X.shape[1], X.itemsize)
    for start in range(0, len(X) if scan else 0, rows):
        with np.errstate(invalid="ignore"):  # finite, and small enough for the float32 the trainer uses
            finite = (np.abs(X[start:start + rows]) <= np.finfo(np.float32).max).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise LinclfError(f"{where}: {name} holds NaN, infinite or out-of-float32-range values (first in "
                              f"row {row}); features must be finite numbers of at most {np.finfo(np.float32).max:.3g}")
    return X


def arrays(path, lazy=True):
    """The array file at path as a Source of kind "features" (see ARRAYS_HELP and read_npz). Every array
    is checked as it enters (one-line LinclfError naming it). The data id is the file's sha256; it and
    the NaN/inf scan are remembered (in memory, by path and file_stamp), so opening the same file again
    costs no pass over it."""
    path = Path(path).resolve()
    where = str(path)
    stamp = file_stamp(path) if path.is_file() else None  # before reading: a change while reading shows
    found = read_npz(path, ("X_train", "y_train", "X_test", "y_test"), ("class_names",), lazy, needs=ARRAYS_HELP)
    key = (where, stamp)
    digest = _VERIFIED.get(key)
    X_train, X_test = found["X_train"], found["X_test"]
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        check_features(name, X, where, X_train.shape[1] if name == "X_test" else None, scan=digest is None)
    names = np.asarray(found["class_names"]) if "class_names" in found else None
    if names is not None and (names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0):
        raise LinclfError(f"{where}: class_names must be a 1-D array of C strings, got shape {names.shape} "
                          f"of {names.dtype}")
    labels = {}
    for name in ("y_train", "y_test"):
        y = np.array(found[name])  # labels are small: in memory
        top = int(y.max()) + 1 if y.ndim == 1 and y.dtype.kind in "iu" and y.size else 0
        labels[name] = y, top
    if names is not None:
        num_classes = len(names)
        class_names = [str(n) for n in names]
        if len(set(class_names)) != num_classes:
            raise LinclfError(f"{where}: class_names repeats a name: {class_names}")
    else:
        num_classes = max(top for _, top in labels.values())
        if num_classes > len(X_train):
            raise LinclfError(f"{where}: the largest label, {num_classes - 1}, would make more classes than "
                              f"X_train has rows ({len(X_train)}); labels must be 0..C-1")
        class_names = [str(c) for c in range(num_classes)]
    for name, (y, top) in labels.items():
        if names is not None and top > num_classes:
            raise LinclfError(f"{where}: {name} holds label {top - 1} but class_names has only {num_classes} "
                              f"names; class_names must cover every label")
        labels[name] = check_labels(name, y, num_classes, where)
    if num_classes < 2:
        raise LinclfError(f"{where}: the labels name {num_classes} class; a classifier needs at least 2")
    for X_name, y_name, X in (("X_train", "y_train", X_train), ("X_test", "y_test", X_test)):
        if len(X) != len(labels[y_name]):
            raise LinclfError(f"{where}: {X_name} has {len(X)} rows but {y_name} has {len(labels[y_name])} labels")
    if digest is None:
        digest = _VERIFIED[key] = file_hash(path)
    data_id = f"arrays-{digest[:16]}-{len(X_train)}-{len(X_test)}"
    return Source(X_train, labels["y_train"], X_test, labels["y_test"], class_names, data_id, "features",
                  {"arrays": where}, named=names is not None, stamps={where: stamp})


def feature_array(path, name="X_test", lazy=True):
    """One feature array (N, D) of an .npz, checked like X_train (for `linclf predict --data`)."""
    path = Path(path).resolve()
    needs = f"an .npz holding {name} (N, D) float16/32/64 features"
    return check_features(name, read_npz(path, (name,), lazy=lazy, needs=needs)[name], str(path))


def split_key(config):
    """What defines a configuration's train/validation split (runs are compared only within one)."""
    return {key: config.get(key, DEFAULTS[key]) for key in SPLIT_KEYS}


def check_split(total, val_size, train_size=0, hint=""):
    """Refuse a val_size (None: config.val_rows' default) or train_size that does not fit `total`
    training rows; `hint` ends the val_size message (what to set instead)."""
    val_size = val_rows(val_size, total)
    if not 0 <= val_size < total:
        raise LinclfError(f"val_size must be in [0, {total - 1}] for this data, got {val_size}{hint}")
    if train_size > total - val_size:
        raise LinclfError(f"train_size must be at most {total - val_size} with val_size {val_size}, got {train_size}")


def split_rows(labels, val_size, train_size=0, val_split="tail"):
    """Row indices (train, val) of the training arrays, or slices when val_split is "tail". "tail": the
    last val_size rows validate, the first train_size of the rest (0 = all) train. "random": a seeded,
    stratified sample of val_size rows (each class in proportion) validates; the rest, in their order
    (the first train_size of them), train."""
    total = len(labels)
    val_size = val_rows(val_size, total)
    check_split(total, val_size, train_size)
    end = total - val_size
    if val_split == "tail" or val_size == 0:
        return slice(0, train_size or end), slice(end, total)
    rng = np.random.default_rng(VAL_SPLIT_SEED)
    classes, counts = np.unique(labels, return_counts=True)
    share = counts / total * val_size
    take = np.floor(share).astype(int)
    for index in np.argsort(-(share - take), kind="stable")[:val_size - take.sum()]:
        take[index] += 1  # largest remainders first, so the sizes add up to val_size
    val = np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:t] for c, t in zip(classes, take)])
    val.sort()
    mask = np.ones(total, dtype=bool)
    mask[val] = False
    train = np.flatnonzero(mask)
    return (train[:train_size] if train_size else train), val


def missing_classes(labels, train_rows, class_names, val_split, val_count):
    """A one-line note naming the classes with no row among the training rows, None when every
    class has one: the model would never predict them, and training says nothing else of it. The
    usual cause is rows sorted by class with the tail split, whose validation rows are the last."""
    counts = np.bincount(labels[train_rows], minlength=len(class_names))
    missing = [repr(str(name)) for name, count in zip(class_names, counts) if count == 0]
    if not missing:
        return None
    named = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    one = len(missing) == 1
    fix = ("if the rows are sorted by class, set val_split to random (a stratified validation sample)"
           if val_split == "tail" else f"give {'it' if one else 'them'} more rows or use a smaller val_size")
    return (f"{'class' if one else 'classes'} {named} {'has' if one else 'have'} no row in the training split "
            f"(val_split {val_split}, {val_count} validation rows), so the model never predicts "
            f"{'it' if one else 'them'}; {fix}")


def split(source, name, config):
    """Inputs (n, ...) and labels (n,) of one split, "train", "val" or "test", as `config`'s
    val_size, train_size and val_split define them."""
    if name == "test":
        return source.test_x, source.test_y
    if name not in ("train", "val"):
        raise LinclfError(f"split must be one of train, val, test; got {name!r}")
    key = split_key(config)
    rows = split_rows(source.train_y, key["val_size"], key["train_size"], key["val_split"])[name == "val"]
    return source.train_x[rows], source.train_y[rows]
