"""Chunks of rows sized in bytes: the float temporaries of a chunk stay bounded however wide the rows."""

CHUNK_BYTES = 32 << 20  # at most this much per temporary of a chunk (32 MiB)


def chunk_rows(width, itemsize=8):
    """Rows per chunk so that a (rows, width) temporary of itemsize-byte numbers takes at most
    CHUNK_BYTES (at least one row)."""
    return max(1, CHUNK_BYTES // max(1, int(width) * int(itemsize)))
