"""The feature cache: learned features of every image, computed once and reused by every run.

    <data-dir>/features/<key>/state.npz   the fitted feature step's arrays (whitening, centroids)
                              train.npy   (N, F) float32 features of every training image
                              test.npy    (M, F) float32 features of every test image
                              info.json   what the key stands for

The key hashes the data id, the feature step's parameters and the split whose training rows the
step was fitted on, so other data or other settings never reuse a cache. A build happens in a
hidden folder `.<key>.building/`, chunk by chunk (CHUNK images, each written into memory-mapped
arrays and recorded in done.npy), and is renamed into place when complete: an interrupted build
resumes from its finished chunks, and a folder without the dot is always complete. One process
builds at a time (a lock file); another one waits and then finds the cache.
"""
import hashlib
import json
import mmap
import os
from pathlib import Path

import numpy as np

from linclf.util import locks
from linclf.util import progress as progressbars
from linclf.data import sources
from linclf.util.errors import LinclfError
from linclf.util.files import atomic_write, atomic_write_bytes, check_regular

CHUNK = 1000  # images encoded and recorded at a time
FOLDER = "features"


def read_rows(array, rows, chunk=CHUNK):
    """Rows `rows` (a slice or sorted or unsorted index array) of a memory-mapped .npy `array`
    (N, F), read through the file into a new in-memory array: unlike indexing the map, reading
    leaves no mapped pages behind that count in this process's resident memory (the kernel's page
    cache keeps them, for the next run)."""
    if isinstance(rows, slice):
        picked = np.arange(*rows.indices(len(array)))
    else:
        rows = np.asarray(rows)
        picked = np.flatnonzero(rows) if rows.dtype == bool else np.where(rows < 0, rows + len(array), rows)
        if len(picked) and (picked.min() < 0 or picked.max() >= len(array)):
            raise IndexError(f"rows out of range for {len(array)} rows")
    out = np.empty((len(picked), array.shape[1]), dtype=array.dtype)
    if not len(picked):
        return out
    if not (isinstance(array, np.memmap) and array.flags.c_contiguous and isinstance(array.base, mmap.mmap)
            and array.offset % mmap.ALLOCATIONGRANULARITY + array.nbytes == len(array.base)):
        raise ValueError("read_rows needs a whole, row-ordered memory-mapped .npy array")
    order = np.argsort(picked, kind="stable")
    wanted = picked[order]
    row_bytes = array.shape[1] * array.dtype.itemsize
    with open(array.filename, "rb") as stream:
        first = 0
        while first < len(wanted):  # blocks of at most `chunk` file rows, each holding wanted rows
            low = int(wanted[first])
            last = int(np.searchsorted(wanted, low + chunk))
            part = wanted[first:last]
            block = np.empty((int(part[-1]) + 1 - low, array.shape[1]), dtype=array.dtype)
            stream.seek(array.offset + low * row_bytes)
            if stream.readinto(memoryview(block).cast("B")) != block.nbytes:
                raise LinclfError(f"{array.filename}: shorter than its header says; delete its folder to build "
                                  f"it again")
            out[order[first:last]] = block[part - low]
            first = last
    return out


def key(source, step, config):
    """The cache key of a feature step fitted on a configuration's training split."""
    defining = {"data_id": source.data_id, "step": step.name, "params": step.params,
                "split": sources.split_key(config)}
    return hashlib.sha1(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:16], defining


def cache_root(source):
    """<data-dir>/features for a CIFAR-10 source."""
    if "cifar10" not in source.ref:
        raise LinclfError("learned features need the CIFAR-10 cache as data")
    return Path(source.ref["cifar10"]) / FOLDER


def _load_state(path, where):
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError) as error:
        raise LinclfError(f"{where}: damaged feature state ({type(error).__name__}); delete the folder "
                          f"to build it again") from None


def _open(folder, step, num_train, num_test):
    """The finished cache in folder: (state, train (N, F), test (M, F)) memory-mapped; LinclfError
    when anything does not fit."""
    state = _load_state(folder / "state.npz", folder)
    arrays = []
    for name, rows in (("train.npy", num_train), ("test.npy", num_test)):
        try:
            array = np.load(folder / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):  # numpy's own text would advise unpickling: never
            raise LinclfError(f"{folder / name}: not a valid .npy array; delete {folder} to build it again") from None
        if array.shape != (rows, step.dim) or array.dtype != np.float32 or not array.flags.c_contiguous:
            raise LinclfError(f"{folder / name}: expected ({rows}, {step.dim}) float32, got {array.shape} "
                              f"{array.dtype}; delete {folder} to build it again")
        for start in range(0, rows, CHUNK):  # about a second for 60,000 x 6,400; read, not mapped
            if not np.isfinite(read_rows(array, slice(start, start + CHUNK))).all():
                raise LinclfError(f"{folder / name}: holds NaN or infinite values (rows from {start}); delete "
                                  f"{folder} to build it again")
        arrays.append(array)
    return state, arrays[0], arrays[1]


def find(source, step, config):
    """The finished cache for this step and split, or None."""
    name, _ = key(source, step, config)
    folder = cache_root(source) / name
    if not folder.is_dir():
        return None
    return _open(folder, step, len(source.train_y), len(source.test_y))


def build(source, step, config, progress=True, log=print, encode_chunks=None):
    """Make sure the cache for this step and split exists (fit, then encode every image); returns
    (state, train features (N, F), test features (M, F)), memory-mapped.

    encode_chunks(state, jobs, write), when given, encodes the chunks elsewhere (a Dask cluster):
    jobs are (split, start, stop) and write(split, start, features) stores each result here.
    """
    name, defining = key(source, step, config)
    root = cache_root(source)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with locks.hold(root / f".{name}.lock", f"building the features in {folder}", wait=True, log=log):
        if folder.is_dir():
            return _open(folder, step, len(source.train_y), len(source.test_y))
        building = root / f".{name}.building"
        building.mkdir(exist_ok=True)
        if building.is_symlink():
            raise LinclfError(f"refusing to build in {building}: it is a symbolic link; remove it")
        state_file = building / "state.npz"
        if state_file.is_file():
            state = _load_state(state_file, building)
            log(f"features: resuming the build in {building}")
        else:
            images, _ = sources.split(source, "train", config)
            log(f"features: learning {step.params.get('k')} centroids from {len(images)} training images")
            state = step.fit(np.asarray(images)).arrays
            atomic_write(state_file, lambda stream: np.savez(stream, **state))
        step.arrays = state
        splits = {"train": source.train_x, "test": source.test_x}
        outputs, done = {}, {}
        for split, images in splits.items():
            path = building / f"{split}.npy"
            shape = (len(images), step.dim)
            check_regular(path)  # a link planted here is refused, never written through
            if path.is_file():
                try:
                    outputs[split] = np.lib.format.open_memmap(path, mode="r+")
                except (OSError, ValueError, EOFError):
                    raise LinclfError(f"{path}: not a valid .npy array; delete {building}") from None
                found = outputs[split]
                if found.shape != shape or found.dtype != np.float32 or not found.flags.c_contiguous:
                    raise LinclfError(f"{path}: a build of another shape or type; delete {building}")
            else:
                outputs[split] = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape)
            marks = building / f"{split}.done.npy"
            chunks = -(-len(images) // CHUNK)
            done[split] = np.load(marks) if marks.is_file() else np.zeros(chunks, dtype=bool)
            if done[split].shape != (chunks,):
                done[split] = np.zeros(chunks, dtype=bool)
        jobs = [(split, i * CHUNK, min(len(splits[split]), (i + 1) * CHUNK))
                for split in splits for i in np.flatnonzero(~done[split])]
        total = sum(stop - start for _, start, stop in jobs)

        def write(split, start, features):  # through the file: no mapped pages stay resident
            target = outputs[split]
            features = np.ascontiguousarray(features, dtype=np.float32)
            expected = (int(min(CHUNK, len(target) - start)), int(target.shape[1]))
            if features.shape != expected:
                raise LinclfError(f"features of {split} images {int(start)}..{int(start) + expected[0] - 1}: expected "
                                  f"shape {expected}, got {features.shape} (a worker running other code?)")
            fd = os.open(target.filename, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "wb") as stream:
                stream.seek(target.offset + start * target.shape[1] * target.itemsize)
                stream.write(memoryview(features).cast("B"))
                stream.flush()
                os.fsync(stream.fileno())
            done[split][start // CHUNK] = True
            atomic_write(building / f"{split}.done.npy", lambda stream: np.save(stream, done[split]))

        try:
            with progressbars.bar(total, "k-means features", "image", enabled=progress) as bar:
                if encode_chunks is not None:
                    def counted(split, start, features):
                        write(split, start, features)
                        bar.update(len(features))

                    encode_chunks(state, jobs, counted)
                else:
                    for split, start, stop in jobs:
                        encoded = step.transform(splits[split][start:stop])
                        write(split, start, encoded)
                        bar.update(stop - start)
        except KeyboardInterrupt:
            kept = sum(int(marks.sum()) for marks in done.values())
            raise KeyboardInterrupt(f"Interrupted: the centroids and {kept} of {sum(len(m) for m in done.values())} "
                                    f"chunks of features are kept in {building}; run the same command again to "
                                    f"continue") from None
        for array in outputs.values():
            array.flush()
        outputs.clear()  # unmap before the rename
        atomic_write_bytes(building / "info.json", (json.dumps(defining, indent=1) + "\n").encode())
        for split in splits:
            (building / f"{split}.done.npy").unlink(missing_ok=True)
        os.replace(building, folder)
        return _open(folder, step, len(source.train_y), len(source.test_y))


def export(path, source, train_features, test_features):
    """Write features and labels to an .npz (X_train, y_train, X_test, y_test, class_names), stored
    uncompressed so that readers can memory-map it; atomically."""
    def write(stream):
        np.savez(stream, X_train=train_features, y_train=np.asarray(source.train_y), X_test=test_features,
                 y_test=np.asarray(source.test_y), class_names=np.array(source.class_names))

    atomic_write(Path(path), write)
