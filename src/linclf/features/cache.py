"""The feature cache: learned features of every image, computed once and reused by every run.

    <data-dir>/features/<key>/state.npz   the fitted feature step's arrays (whitening, centroids)
                              train.npy   (N, F) float16 features of every training image
                              test.npy    (M, F) float16 features of every test image
                              info.json   what the key stands for, the features' dtype, and a
                                          crc32 of every chunk

Features are stored as float16 (DTYPE): half the disk, page cache and training copy of float32,
with 11 significant bits, far finer than what standardization and SGD resolve (README: the same
test accuracy).

The key hashes the data id, the feature step's parameters and the split whose training rows the
step was fitted on, so other data or other settings never reuse a cache. A build happens in a
hidden folder `.<key>.building/`, chunk by chunk (CHUNK images, each written into memory-mapped
arrays and its crc32 recorded in <split>.done.npy, (chunks,) int64, -1 for a chunk not done yet),
and is renamed into place when complete: an interrupted build resumes from its finished chunks,
and a folder without the dot is always complete. One process builds at a time (a lock file);
another one waits and then finds the cache. Reading a finished cache takes no lock.

Every file is checked when read back (cache_files.py). A damaged finished cache is one line saying
to delete it; a damaged file in a building folder is said in one line and built again (a bad state:
the whole build; bad marks or rows: those chunks).
"""
import hashlib
import json
import os
import shutil
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from linclf.data import sources
from linclf.features.cache_files import CHUNK, DTYPE, open_finished, read_rows, read_state, zero_row
from linclf.util import locks
from linclf.util import progressbars
from linclf.util.errors import LinclfError
from linclf.util.files import (atomic_write, atomic_write_bytes, check_regular, check_writable_target, folder_problem,
                               is_regular, open_regular)

FLOAT16_MAX = float(np.finfo(np.float16).max)
FOLDER = "features"


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


def _counts(source):
    return {"train": len(source.train_y), "test": len(source.test_y)}


def _check_folders(root, folder):
    """Refuse in one line a features root or key folder that is something else than a folder (a
    file, or a link that leads nowhere or to itself), before any work is spent on it."""
    for path in (root, folder):
        problem = folder_problem(path, links=True)
        if problem:
            raise LinclfError(f"{path} {problem}; linclf keeps its feature cache there: remove or rename it")


def find(source, step, config):
    """The finished cache for this step and split, or None."""
    name, defining = key(source, step, config)
    folder = cache_root(source) / name
    _check_folders(cache_root(source), folder)
    if not folder.is_dir():
        return None
    return open_finished(folder, step, defining, _counts(source))


def _resumed_state(building, step, log):
    """The fitted state of an interrupted build in `building`, or None to fit it (none yet, or a
    damaged one: then the folder is emptied, saying so)."""
    path = building / "state.npz"
    try:
        if not is_regular(path):
            return None
        state = read_state(path, step)
    except LinclfError as error:
        log(f"features: {error}; starting the build over")
        shutil.rmtree(building)
        building.mkdir()
        return None
    log(f"features: resuming the build in {building}")
    return state


def _resumed_split(building, split, shape, log):
    """(features (N, F) DTYPE memory-mapped r+, done (chunks,) int64) of one split of a build:
    done[i] is the crc32 of chunk i's rows, -1 when it is still to encode. A damaged feature file
    is made again, damaged marks or chunks that no longer match their checksum are encoded again,
    each said in one line."""
    path, marks = building / f"{split}.npy", building / f"{split}.done.npy"
    chunks = -(-shape[0] // CHUNK)
    check_regular(path)  # a link planted here is refused, never written through
    if path.is_file():
        try:
            array = np.lib.format.open_memmap(path, mode="r+")
            problem = None if array.shape == shape and array.dtype == DTYPE and array.flags.c_contiguous else \
                f"holds {array.shape} {array.dtype}, not {shape} {np.dtype(DTYPE)}"
        except (OSError, ValueError, EOFError):
            problem = "not a valid .npy array"
        if problem is None:
            return array, _resumed_marks(marks, array, chunks, log)
        log(f"features: {path}: {problem}; encoding the {split} images again")
        path.unlink()
    elif marks.is_file():
        log(f"features: {path} is missing; encoding the {split} images again")
    marks.unlink(missing_ok=True)
    return np.lib.format.open_memmap(path, mode="w+", dtype=DTYPE, shape=shape), np.full(chunks, -1, dtype=np.int64)


def _resumed_marks(marks, array, chunks, log):
    """The done marks (chunks,) int64 in `marks` for the features `array`, checked (see _resumed_split)."""
    none_done = np.full(chunks, -1, dtype=np.int64)
    try:  # the header first: nothing is allocated for what a damaged one claims, nothing unpickled
        if not is_regular(marks):
            return none_done
        with open_regular(marks) as stream:
            npy = np.lib.format
            good = npy.read_magic(stream) == (1, 0) and \
                npy.read_array_header_1_0(stream) == ((chunks,), False, np.dtype(np.int64))
            found = np.fromfile(stream, dtype=np.int64, count=chunks) if good else None
        good = good and len(found) == chunks and bool(((found >= -1) & (found < 2**32)).all())
    except (OSError, ValueError, EOFError, LinclfError):  # garbage, or not a file
        good = False
    if not good:
        log(f"features: {marks} is not a record of this build's chunks; encoding them all again")
        return none_done
    stale = []
    for i in np.flatnonzero(found >= 0):
        block = read_rows(array, slice(i * CHUNK, (i + 1) * CHUNK))
        if zlib.crc32(block) != found[i] or zero_row(block) is not None:
            stale.append(i)
    if stale:
        log(f"features: {len(stale)} chunk{'s' * (len(stale) > 1)} of {array.filename} no longer match their "
            f"checksums in {marks} or hold all-zero rows; encoding them again")
        found[stale] = -1
    return found


def build(source, step, config, progress=True, log=print, encode_chunks=None):
    """Make sure the cache for this step and split exists (fit, then encode every image); returns
    (state, train features (N, F), test features (M, F)), memory-mapped (DTYPE).

    encode_chunks(state, jobs, write), when given, encodes the chunks elsewhere (a Dask cluster):
    jobs are (split, start, stop) and write(split, start, features) stores each result here.
    """
    finished = find(source, step, config)  # read without the lock, which a read-only data dir could not take
    if finished is not None:
        return finished
    name, defining = key(source, step, config)
    root = cache_root(source)
    folder, counts = root / name, _counts(source)
    root.mkdir(parents=True, exist_ok=True)
    with locks.hold(root / f".{name}.lock", f"building the features in {folder}", wait=True, log=log):
        if folder.is_dir():
            return open_finished(folder, step, defining, counts)
        building = root / f".{name}.building"
        building.mkdir(exist_ok=True)
        if building.is_symlink():
            raise LinclfError(f"refusing to build in {building}: it is a symbolic link; remove it")
        state = _resumed_state(building, step, log)
        if state is None:
            images, _ = sources.split(source, "train", config)
            learned = "learning" if step.params.get("iterations") else "drawing"
            log(f"features: {learned} {step.params.get('k')} centroids from {len(images)} training images")
            state = step.fit(np.asarray(images)).arrays
            atomic_write(building / "state.npz", lambda stream: np.savez(stream, **state))
        step.arrays = state
        splits = {"train": source.train_x, "test": source.test_x}
        outputs, done = {}, {}
        for split, images in splits.items():
            outputs[split], done[split] = _resumed_split(building, split, (len(images), step.dim), log)
        jobs = [(split, i * CHUNK, min(len(splits[split]), (i + 1) * CHUNK))
                for split in splits for i in np.flatnonzero(done[split] < 0)]
        total = sum(stop - start for _, start, stop in jobs)

        def write(split, start, features):  # through the file: no mapped pages stay resident
            target = outputs[split]
            expected = (int(min(CHUNK, len(target) - start)), int(target.shape[1]))
            where = f"features of {split} images {int(start)}..{int(start) + expected[0] - 1}"
            features = np.asarray(features)
            if features.shape != expected:
                raise LinclfError(f"{where}: expected shape {expected}, got {features.shape} (a worker running "
                                  f"other code?)")
            largest = max(float(features.max()), -float(features.min())) if features.size else 0.0
            if not np.isfinite(largest):
                raise LinclfError(f"{where}: hold NaN or infinite values")
            zero = zero_row(features)
            if zero is not None:
                raise LinclfError(f"{where}: image {int(start) + zero} encodes to all-zero features, which the cache "
                                  f"refuses as rows never written (a blank image? with kmeans_encoding soft, lower "
                                  f"kmeans_alpha)")
            if largest > FLOAT16_MAX:
                raise LinclfError(f"{where}: values up to {largest:.4g} do not fit the cache's float16 (at most "
                                  f"{FLOAT16_MAX:.0f})")
            features = np.ascontiguousarray(features, dtype=DTYPE)
            fd = os.open(target.filename, os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0))
            with os.fdopen(fd, "wb") as stream:
                stream.seek(target.offset + start * target.shape[1] * target.itemsize)
                stream.write(memoryview(features).cast("B"))
                stream.flush()
                os.fsync(stream.fileno())
            done[split][start // CHUNK] = zlib.crc32(features)
            atomic_write(building / f"{split}.done.npy", lambda stream: np.save(stream, done[split]))

        try:
            with progressbars.bar(total, "k-means features", "image", enabled=progress) as bar:
                def counted(split, start, features):
                    write(split, start, features)
                    bar.update(len(features))

                if encode_chunks is None:
                    for split, start, stop in jobs:
                        counted(split, start, step.transform(splits[split][start:stop]))
                else:
                    encode_chunks(state, jobs, counted)
        except KeyboardInterrupt:
            kept = sum(int((marks >= 0).sum()) for marks in done.values())
            raise KeyboardInterrupt(f"Interrupted: the centroids and {kept} of {sum(len(m) for m in done.values())} "
                                    f"chunks of features are kept in {building}; run the same command again to "
                                    f"continue") from None
        for array in outputs.values():
            array.flush()
        outputs.clear()  # unmap before the rename
        info = {**defining, "dtype": np.dtype(DTYPE).name, "chunks": {"rows": CHUNK, **{split: marks.tolist() for split, marks in done.items()}}}
        atomic_write_bytes(building / "info.json", (json.dumps(info, indent=1) + "\n").encode())
        for split in splits:
            (building / f"{split}.done.npy").unlink(missing_ok=True)
        os.replace(building, folder)
        return open_finished(folder, step, defining, counts)


def memory(source, config, build_missing=True, progress=False, log=None):
    """The feature cache as a pipeline's memory (pipeline.Pipeline.fit_split): memory(step, rows)
    returns (the step's fitted state, the cached features of each set of training rows, read into
    memory). The cache is built when missing if `build_missing`, else a LinclfError says how."""
    def fitted(step, row_sets):
        cached = find(source, step, config)
        if cached is None:
            if not build_missing:
                name, _ = key(source, step, config)
                raise LinclfError(f"no cached {step.name} features for this data and these settings in "
                                  f"{cache_root(source) / name}: build them first with "
                                  f"'linclf features CONFIG.yaml --data-dir {source.ref.get('cifar10')}'")
            cached = build(source, step, config, progress=progress, log=log or (lambda message: None))
        state, every, _ = cached
        return state, tuple(read_rows(every, rows) for rows in row_sets)

    return fitted


EXPORT_ARRAYS = ("X_train", "y_train", "X_test", "y_test", "class_names")


def check_export(path):
    """Refuse in one line an export path that does not end in .npz, or where it would replace
    anything but an export linclf wrote (a directory, a special file, another file)."""
    path = Path(path)
    if path.suffix.lower() != ".npz":
        raise LinclfError(f"{path}: feature exports are .npz files; give a name ending in .npz")
    check_writable_target(path)
    if not os.path.lexists(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        names = None
    if names != sorted(f"{name}.npy" for name in EXPORT_ARRAYS):
        raise LinclfError(f"refusing to replace {path}: it is not a feature export linclf wrote; remove it or "
                          f"choose another name")


def export(path, source, train_features, test_features):
    """Write features and labels to an .npz (X_train (N, F), y_train (N,), X_test (M, F), y_test (M,),
    class_names (C,)), stored uncompressed so that readers can memory-map it; atomically, and only
    where check_export allows."""
    check_export(path)
    atomic_write(Path(path), lambda stream: np.savez(
        stream, X_train=train_features, y_train=np.asarray(source.train_y), X_test=test_features,
        y_test=np.asarray(source.test_y), class_names=np.array(source.class_names)))


def transform_cached(folder, step, X):
    """step.transform(X), read from folder/<key>.npz when an earlier call stored it (the key hashes
    the step's parameters and fitted arrays and the images' bytes), else computed and stored. The
    file holds the features and their crc32: features that no longer match it (a file replaced or
    zeroed) are computed again, as the cache folders' rows are checked. KMeansFeatures(memory=...)
    keeps its features here."""
    digest = hashlib.sha256(json.dumps(step.params, sort_keys=True).encode())
    for name in sorted(step.arrays):
        digest.update(np.ascontiguousarray(step.arrays[name]).tobytes())
    digest.update(np.ascontiguousarray(X).tobytes())
    path = folder / f"kmeans-{digest.hexdigest()[:24]}.npz"
    try:
        with open_regular(path) as stream, np.load(stream, allow_pickle=False) as archive:
            cached, crc = archive["features"], archive["crc32"]
        if cached.shape == (len(X), step.dim) and cached.dtype == np.float32 and crc.shape == () \
                and zlib.crc32(np.ascontiguousarray(cached)) == int(crc):
            return sources.check_features("features", cached, str(path))  # finite, or computed again
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, LinclfError):
        pass  # missing or damaged: computed again below and written over
    features = step.transform(X)
    try:  # a cache that cannot be written costs the cache, never the features
        folder.mkdir(parents=True, exist_ok=True)
        crc = np.int64(zlib.crc32(np.ascontiguousarray(features)))
        atomic_write(path, lambda stream: np.savez(stream, features=features, crc32=crc))
    except (OSError, LinclfError) as error:
        warnings.warn(f"KMeansFeatures: features not cached in {folder} ({getattr(error, 'strerror', None) or error})",
                      UserWarning, stacklevel=3)
    return features
