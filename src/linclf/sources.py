"""Data sources: where the train and test arrays come from, checked where they enter.

A `Source` gives train/test arrays, class names and a data id, a short string that changes with
the data (the CIFAR-10 archive's md5 and sizes; an array file's hash): runs trained on different
data never share a run id, and `eval --best` compares only runs measured on the same data.
`ref` is how to open the same source again in another process (a Dask worker): a small dict.

Sources:
  - the CIFAR-10 cache (`cifar10`): images (N, 32, 32, 3) uint8, 10 classes.
"""
from dataclasses import dataclass

import numpy as np

from linclf import data
from linclf.errors import LinclfError

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

    @property
    def num_classes(self):
        return len(self.class_names)


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


def check_pair(name, X, y, num_classes, where=""):
    """Check one split's inputs X (N, ...) and labels y (N,) as they enter; returns (X, y intp)."""
    y = check_labels(f"{name}_y", y, num_classes, where)
    if len(X) != len(y):
        prefix = f"{where}: " if where else ""
        raise LinclfError(f"{prefix}{name}_x has {len(X)} rows but {name}_y has {len(y)} labels")
    return X, y


def cifar10(data_dir=None):
    """The CIFAR-10 cache under data_dir as a Source (memory-mapped, read-only)."""
    dataset = data.load_cache(data_dir)
    where = f"the CIFAR-10 cache in {data.cache_path(data_dir or data.default_data_dir())}"
    C = len(dataset.class_names)
    train_x, train_y = check_pair("train", dataset.train_x, dataset.train_y, C, where)
    test_x, test_y = check_pair("test", dataset.test_x, dataset.test_y, C, where)
    md5 = str(dataset.meta.get("source_md5", "") or "unknown")
    data_id = f"cifar10-{md5[:16]}-{len(train_y)}-{len(test_y)}"
    return Source(train_x, train_y, test_x, test_y, list(dataset.class_names), data_id, "images",
                  {"cifar10": str(data_dir or data.default_data_dir())})


def open_source(ref):
    """The Source a `ref` names: {"cifar10": data_dir}."""
    if "cifar10" in ref:
        return cifar10(ref["cifar10"])
    raise LinclfError(f"unknown data source {ref!r}")


def split_key(config):
    """What defines a configuration's train/validation split (runs are compared only within one)."""
    return {"val_size": config["val_size"], "train_size": config["train_size"],
            "val_split": config.get("val_split", "tail")}


def split_rows(labels, val_size, train_size=0, val_split="tail"):
    """Row indices (train, val) of the training arrays, or slices when val_split is "tail".

    "tail": the last val_size rows validate, the first train_size of the rest (0 = all) train.
    "random": a seeded, stratified sample of val_size rows (each class in proportion) validates;
    the rest, in their order (the first train_size of them), train.
    """
    total = len(labels)
    if not 0 < val_size < total:
        raise LinclfError(f"val_size must be in [1, {total - 1}] for this data, got {val_size}")
    end = total - val_size
    if train_size > end:
        raise LinclfError(f"train_size must be at most {end} with val_size {val_size}, got {train_size}")
    if val_split == "tail":
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
