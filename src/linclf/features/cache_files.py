"""Reading a feature cache's files back, every one checked (cache.py: the layout, finding and building)."""
import json
import mmap
import zlib

import numpy as np

from linclf.data import npzfiles
from linclf.util.errors import LinclfError, short_repr
from linclf.util.files import check_readable, open_regular, read_text

CHUNK = 1000  # images encoded and recorded at a time
DTYPE = np.float16  # the stored features


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
    with open_regular(array.filename) as stream:
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


def read_state(path, step):
    """The fitted arrays in state.npz at path, checked as a model file's are (names, shapes,
    dtypes, finiteness); a LinclfError naming the file and what is wrong."""
    needs = f"the fitted {step.name} state ({', '.join(step.ARRAYS)})"
    state = npzfiles.read_npz(path, step.ARRAYS, step.OPTIONAL_ARRAYS, lazy=False, needs=needs)
    type(step)(step.name, state, step.params).check(str(path))
    return state


def read_info(path, defining, counts):
    """The chunk checksums info.json at path records, {"rows": rows per chunk, split: [crc32 of each
    chunk]}; LinclfError unless it describes `defining` (what the folder's name stands for) and
    features of DTYPE, with a checksum per chunk. counts: {split: rows}."""
    try:
        if check_readable(path).stat().st_size > 1 << 24:  # a few bytes per chunk of 1,000 images
            raise ValueError("too large")
        info = json.loads(read_text(path))
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except (OSError, ValueError):
        raise LinclfError(f"{path}: not a JSON description of the cache") from None
    if not isinstance(info, dict) or {name: info.get(name) for name in defining} != json.loads(json.dumps(defining)):
        raise LinclfError(f"{path}: describes other data or settings than the folder's name stands for")
    if "dtype" not in info or "chunks" not in info:
        raise LinclfError(f"{path}: records no dtype or no chunk checksums")
    if info["dtype"] != np.dtype(DTYPE).name:
        raise LinclfError(f"{path}: names features of dtype {short_repr(info['dtype'])}; "
                          f"{np.dtype(DTYPE).name} expected")
    chunks = info["chunks"]
    rows = chunks.get("rows") if isinstance(chunks, dict) else None
    if not (type(rows) is int and 1 <= rows <= CHUNK and all(
            isinstance(chunks.get(split), list) and len(chunks[split]) == -(-count // rows)
            and all(type(value) is int and 0 <= value < 2**32 for value in chunks[split])
            for split, count in counts.items())):
        raise LinclfError(f"{path}: damaged chunk checksums")
    return chunks


def zero_row(block):
    """The first row of `block` (n, F) whose values are all zero, or None. No image encodes to
    such a row (its triangle activations cannot all vanish; soft ones do only for a patchless
    blank image), so one is rows never written or zeroed since: refused, never trained on."""
    block = np.ascontiguousarray(block).reshape(len(block), -1)
    written = block.view(np.uint16 if block.itemsize == 2 else np.uint32).any(axis=1)
    return None if written.all() else int(np.argmin(written))


def open_features(path, shape, sums, rows):
    """The finished feature array at path, memory-mapped: (N, F) of `shape` and DTYPE, every value
    finite, and each block of `rows` rows with its crc32 in `sums`."""
    try:  # checked first: numpy maps it by name, and a FIFO would block its open
        array = np.load(check_readable(path), mmap_mode="r", allow_pickle=False)
    except LinclfError:  # not a regular file: said as such (LinclfError is a ValueError too)
        raise
    except (OSError, ValueError, EOFError):  # numpy's own text would advise unpickling: never
        raise LinclfError(f"{path}: not a valid .npy array") from None
    if array.shape != shape or array.dtype != DTYPE or not array.flags.c_contiguous:
        raise LinclfError(f"{path}: expected {shape} {np.dtype(DTYPE)}, got {array.shape} {array.dtype}")
    for index, start in enumerate(range(0, shape[0], rows)):  # about a second for 60,000 x 6,400; read, not mapped
        block = read_rows(array, slice(start, start + rows))
        # exponent bits all ones is inf or NaN (3x numpy's isfinite)
        if not ((block.view(np.uint16) & 0x7C00) != 0x7C00).all():
            raise LinclfError(f"{path}: holds NaN or infinite values (rows from {start})")
        if zlib.crc32(block) != sums[index]:
            raise LinclfError(f"{path}: rows {start}..{start + len(block) - 1} differ from what the build wrote "
                              f"(their checksum)")
        zero = zero_row(block)
        if zero is not None:
            raise LinclfError(f"{path}: row {start + zero} is all zeros, which no image encodes to")
    return array


def open_finished(folder, step, defining, counts):
    """The finished cache in folder: (state, train (N, F), test (M, F)) memory-mapped, every file
    checked; a one-line LinclfError saying to delete the folder when anything does not fit."""
    try:
        state = read_state(folder / "state.npz", step)
        chunks = read_info(folder / "info.json", defining, counts)
        train, test = (open_features(folder / f"{split}.npy", (rows, step.dim), chunks[split], chunks["rows"])
                       for split, rows in counts.items())
    except LinclfError as error:
        raise LinclfError(f"{error}; delete {folder} to build it again") from None
    return state, train, test
