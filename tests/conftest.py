"""Shared fixtures: small CIFAR-10 look-alikes in the official layout, built from scratch."""
import csv
import io
import json
import pickle
import shutil
import tarfile

import numpy as np
import pytest

from linclf import config
from linclf.data import cifar10, sources
from linclf.experiments import jobs, runfolders

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def synthetic_images(num, seed, noise=40.0, label_noise=0.0):
    """num learnable images: a fixed random template per class plus noise. (num, 3072) uint8 in
    the official R, G, B plane order, and labels (num,); a share label_noise of the labels is
    replaced by random ones."""
    templates = np.random.default_rng(1234).integers(40, 216, size=(10, 3072))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=num)
    images = np.clip(templates[labels] + rng.normal(0, noise, size=(num, 3072)), 0, 255).astype(np.uint8)
    flipped = rng.random(num) < label_noise
    labels = np.where(flipped, rng.integers(0, 10, size=num), labels)
    return images, labels


def batch_bytes(images, labels, name="batch"):
    """A protocol-2 pickle with bytes keys, as Python 3 writes the official batch format."""
    return pickle.dumps({b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                         b"data": images, b"filenames": [f"{i}.png".encode() for i in range(len(labels))]},
                        protocol=2)


def batch_files(per_batch=40, num_test=50, **hardness):
    """{file name: bytes} of a complete cifar-10-batches-py folder; hardness: synthetic_images'
    noise and label_noise."""
    files = {}
    for index in range(1, 6):
        files[f"data_batch_{index}"] = batch_bytes(*synthetic_images(per_batch, seed=index, **hardness))
    files["test_batch"] = batch_bytes(*synthetic_images(num_test, seed=99, **hardness))
    files["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASSES],
                                          b"num_cases_per_batch": per_batch, b"num_vis": 3072}, protocol=2)
    files["readme.html"] = b"<html></html>"
    return files


def write_batches(folder, files=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, payload in (files or batch_files()).items():
        (folder / name).write_bytes(payload)
    return folder


def make_archive(path, files=None, extra_members=()):
    """A cifar-10-python.tar.gz in the official layout; extra_members are (name, bytes) added as is."""
    with tarfile.open(path, "w:gz") as tar:
        for name, payload in list((files or batch_files()).items()):
            info = tarfile.TarInfo(f"{cifar10.BATCHES_DIR}/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        for name, payload in extra_members:
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data dir holding a small cache: 200 training images (5 x 40) and 50 test images."""
    root = tmp_path_factory.mktemp("data")
    cifar10.build_cache(write_batches(root / "batches"), root, source_md5="test")
    return root


@pytest.fixture(scope="session")
def hard_data_dir(tmp_path_factory):
    """A cache on which accuracies spread (30% of labels random, strong pixel noise): 400 training
    images and 50 test images, so rankings are decided by results, not by ties."""
    root = tmp_path_factory.mktemp("hard")
    cifar10.build_cache(write_batches(root / "batches", batch_files(80, 50, noise=90.0, label_noise=0.3)), root,
                     source_md5="hard")
    return root


def ref(data_dir):
    """The data source ref of the CIFAR-10 cache under data_dir."""
    return {"cifar10": str(data_dir)}


# small settings that train in well under a second on the data_dir fixture
TINY = {"epochs": 3, "batch_size": 16, "val_size": 50, "lr": 1e-3, "reg": 1e-3}


@pytest.fixture(scope="module")
def one_run(data_dir, tmp_path_factory):
    """A finished run folder on the data_dir fixture."""
    outcome = jobs.train_group(sources.cifar10(data_dir), [{**config.DEFAULTS, **TINY}])
    folder, = jobs.save(outcome, lambda result: tmp_path_factory.mktemp("runs") / "one")
    return folder


def copy_run(run, where, **metric_changes):
    """A copy of a run folder whose metrics.json has some values changed."""
    shutil.copytree(run, where)
    metrics = json.loads((where / runfolders.METRICS).read_text())
    metrics.update(metric_changes)
    (where / runfolders.METRICS).write_text(json.dumps(metrics))
    return where


BASE = {"epochs": 2, "batch_size": 16, "val_size": 50}


def grid_spec(**changes):
    spec = {"name": "g", "metric": "val_accuracy", "base": dict(BASE),
            "grid": {"lr": [1e-3, 3e-3], "reg": {"min": 1e-4, "max": 1e-2, "num": 2, "scale": "log"}}}
    spec.update(changes)
    return spec


def read_results(path):
    with open(path) as stream:
        return list(csv.DictReader(stream))


@pytest.fixture
def fifo():
    """make(path): a FIFO at path that a reader never waits on for long: a background thread opens
    and closes its write end now and then, so code that (wrongly) opens it for reading sees an
    empty file after a moment instead of hanging the test."""
    import os
    import threading

    done = threading.Event()
    threads = []

    def unblock(path):
        while not done.wait(0.05):
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:  # no reader yet (ENXIO), or the FIFO was removed
                pass

    def make(path):
        os.mkfifo(path)
        thread = threading.Thread(target=unblock, args=(path,), daemon=True)
        thread.start()
        threads.append(thread)
        return path

    yield make
    done.set()
    for thread in threads:
        thread.join()
