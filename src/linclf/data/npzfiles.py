"""Reading .npz files safely: each member checked from its .npy header before anything is
allocated, never unpickled, and stored (uncompressed) members read as FileRows, whose rows are
read from the file when used."""
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from linclf.util.errors import LinclfError
from linclf.util.files import is_regular, open_regular

MAX_DEFLATE_RATIO = 1032  # deflate never expands data more than this: a member claiming more lies


def changed_error(path, how="changed"):
    """The LinclfError of a data file rewritten (or cut short: `how`) while linclf read it."""
    return LinclfError(f"{path} {how} while linclf was reading it, so the results would mix old and new data; "
                       f"replace a data file by renaming a new one over it, never rewrite it in place")


class FileRows:
    """A C-ordered array stored at `offset` in an open file, whose rows are read when indexed, with
    ordinary reads (os.preadv) into a new array: X[a:b], X[indices], X[i]; np.asarray(X) reads it
    all. Never a memory map: a file truncated in place under a map kills the process with SIGBUS,
    which no handler can turn into a message, where a read that comes back short is one LinclfError.
    The file stays open, so a file renamed over the path leaves the rows read here whole."""

    def __init__(self, stream, path, offset, shape, dtype):
        self._stream, self._path, self._offset = stream, path, offset
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self._row_bytes = math.prod(self.shape[1:]) * self.dtype.itemsize

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: math.prod(self.shape))
    itemsize = property(lambda self: self.dtype.itemsize)
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self):
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def __getitem__(self, key):
        rows, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        if isinstance(rows, slice) and rows.indices(len(self))[2] == 1:
            start, stop, _ = rows.indices(len(self))
            found = self._read(start, np.empty((max(stop - start, 0), *self.shape[1:]), self.dtype))
        elif isinstance(rows, (int, np.integer)):
            if not -len(self) <= rows < len(self):
                raise IndexError(f"index {rows} is out of bounds for {len(self)} rows")
            found = self._read(int(rows) % len(self), np.empty((1, *self.shape[1:]), self.dtype))[0]
        else:
            found = self._gather(np.arange(len(self))[rows])
        return found[(slice(None), *rest)] if rest else found

    def _gather(self, indices):
        """The rows at `indices` (a 1-D integer array in range), each run of consecutive rows in one read."""
        if len(indices) > 1 and not (np.diff(indices) > 0).all():
            unique, inverse = np.unique(indices, return_inverse=True)
            return self._gather(unique)[inverse]
        out = np.empty((len(indices), *self.shape[1:]), self.dtype)
        if not len(indices):  # no rows: nothing to read (indices[0] below would not exist)
            return out
        breaks = np.flatnonzero(np.diff(indices) != 1) + 1
        for start, stop in zip(np.r_[0, breaks], np.r_[breaks, len(indices)]):
            self._read(int(indices[start]), out[start:stop])
        return out

    def _read(self, row, out):
        """Fill out (whole rows, C-contiguous) with the rows from `row` on; returns out."""
        view = memoryview(out.reshape(-1).view(np.uint8)) if out.size else b""
        done, where = 0, self._offset + row * self._row_bytes
        while done < len(view):
            count = os.preadv(self._stream.fileno(), [view[done:]], where + done)
            if count == 0:  # the file ends before its members do: cut short in place
                raise changed_error(self._path, "was cut short")
            done += count
        return out


def _local_data_offset(stream, info):
    """Where a zip member's bytes start in the file: after its local header (30 bytes, the name
    and an extra field whose length may differ from the central directory's)."""
    stream.seek(info.header_offset)
    header = stream.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise zipfile.BadZipFile(f"bad local header of {info.filename}")
    name_length, extra_length = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_length + extra_length


def _memory_bytes():
    """This machine's physical memory in bytes, None where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _read_member(path, file, archive, info, name, lazy):
    """One .npy member of an .npz open as `file`: a FileRows when it is stored uncompressed in C
    order (and lazy), else read into memory. An object array is refused from its header; the size
    the header claims is checked against the member's, the compressed size and the memory."""
    with archive.open(info) as stream:
        try:
            version = npy_format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):  # 3.0 is for structured dtypes, which linclf never reads
                raise ValueError(f".npy format version {version[0]}.{version[1]}")
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            shape, fortran, dtype = read_header(stream)
        except ValueError as error:
            raise LinclfError(f"{path}: {name} is not an .npy array linclf reads ({str(error)[:80]})") from None
        if dtype.hasobject:
            raise LinclfError(f"{path}: {name} is an object array, which would need unpickling (linclf never "
                              f"unpickles); save it as numbers or strings")
        header_length = stream.tell()
    count = math.prod(shape)
    size = count * dtype.itemsize
    if info.file_size != header_length + size:
        raise LinclfError(f"{path}: {name} is damaged: its header says {shape} {dtype} ({size:,} bytes), the archive "
                          f"holds {info.file_size - header_length:,} bytes of data")
    stored = info.compress_type == zipfile.ZIP_STORED
    if not stored and info.file_size > MAX_DEFLATE_RATIO * info.compress_size + (1 << 16):
        raise LinclfError(f"{path}: {name} is damaged: {info.compress_size:,} compressed bytes cannot hold the "
                          f"{size:,} bytes its header says")
    if not (lazy and stored and count and not fortran):
        memory = _memory_bytes()
        if memory is not None and size > memory:
            raise LinclfError(f"{path}: {name} would take {size:,} bytes in memory, more than the {memory:,} this "
                              f"machine has: store it uncompressed (np.savez), so that linclf reads the rows "
                              f"it needs")
        with archive.open(info) as stream:
            try:
                return npy_format.read_array(stream, allow_pickle=False)
            except ValueError as error:
                raise LinclfError(f"{path}: {name} cannot be read ({error})") from None
    return FileRows(file, path, _local_data_offset(file, info) + header_length, shape, dtype)


def read_npz(path, names, optional=(), lazy=True, *, needs):
    """{name: array} of the .npy members `names` (all required) and `optional` of the .npz at path;
    `needs` says in messages what the file must hold. Members stored uncompressed (np.savez) are
    FileRows when `lazy`: a file larger than memory opens at once, and only the rows used are read;
    compressed ones (np.savez_compressed) are read into memory."""
    path = Path(path)
    if not is_regular(path):
        raise LinclfError(f"data file not found: {path}")
    stream = open_regular(path)  # one open file for the whole read (a FIFO never blocks it), kept by FileRows
    try:
        if stream.read(6) == b"\x93NUMPY":
            raise LinclfError(f"{path} is a single .npy array; linclf needs {needs}")
        stream.seek(0)
        try:
            with zipfile.ZipFile(stream) as archive:
                members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
                missing = [name for name in names if name not in members]
                if missing:
                    raise LinclfError(f"{path}: no array {missing[0]}; linclf needs {needs}")
                found = {name: _read_member(path, stream, archive, members[name], name, lazy)
                         for name in (*names, *optional) if name in members}
        except (zipfile.BadZipFile, EOFError, struct.error, zlib.error) as error:
            raise LinclfError(f"{path} is not an .npz file or is damaged ({error}); linclf needs {needs}") from None
    except BaseException:
        stream.close()
        raise
    if not any(isinstance(array, FileRows) for array in found.values()):
        stream.close()
    return found
