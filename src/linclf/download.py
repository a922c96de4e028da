"""Fetch, verify, safely extract and cache the official CIFAR-10 archive.

    download -> <data-dir>/cifar-10-python.tar.gz.part   (resumable with HTTP Range)
    md5 check -> rename to cifar-10-python.tar.gz        (only a verified archive gets that name)
    extract the expected batch files only, with tarfile's "data" filter, into a temporary folder
    build the cache (data.build_cache: temporary folder, then rename) and clean up
"""
import hashlib
import os
import re
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import requests
from tqdm import tqdm

from linclf import __version__, data
from linclf.errors import LinclfError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
CHUNK_BYTES = 1 << 16  # a dropped connection loses at most one chunk of what was received
EXPECTED_MEMBERS = {f"{data.BATCHES_DIR}/{name}"
                    for name in data.TRAIN_BATCHES + [data.TEST_BATCH, data.META_BATCH]}


class _Retry(Exception):
    """A transient failure (connection dropped, timeout, 5xx): worth another try."""


def default_urls():
    """$LINCLF_CIFAR10_URL (several may be separated by spaces), else the official URL."""
    return (os.environ.get("LINCLF_CIFAR10_URL") or OFFICIAL_URL).split()


def default_md5():
    return os.environ.get("LINCLF_CIFAR10_MD5") or OFFICIAL_MD5


def file_md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(CHUNK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_arguments(urls, md5):
    if not re.fullmatch(r"[0-9a-fA-F]{32}", md5 or ""):
        raise LinclfError(f"--md5 must be 32 hexadecimal digits, got {md5!r}")
    for url in urls:
        if not re.match(r"https?://[^/]+", url):
            raise LinclfError(f"--url must be an http:// or https:// address, got {url!r}")


def _check_writable(data_dir):
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=data_dir):
            pass
    except OSError as error:
        raise LinclfError(f"data dir {data_dir} is not writable: {error.strerror or error}") from None


def _fetch(session, url, part, timeout, progress, log):
    """Append url's bytes to part (resuming with Range where the server allows). One attempt."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
            if response.status_code == 416 and offset:  # nothing left to send: part is complete
                return
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise LinclfError(f"HTTP {response.status_code} {response.reason} from {url}")
            mode = "ab"
            if offset and response.status_code == 200:
                log("the server ignored the resume request; starting the download over")
                offset, mode = 0, "wb"
            elif offset and response.status_code == 206:
                start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    log("the server resumed at the wrong place; starting the download over")
                    part.unlink()
                    raise _Retry("bad Content-Range")
                log(f"resuming at {offset / 2**20:.1f} MiB")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with open(part, mode) as stream, tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                                                  unit_divisor=1024, desc=ARCHIVE_NAME, disable=not progress,
                                                  leave=False) as bar:
                for block in response.iter_content(CHUNK_BYTES):
                    stream.write(block)
                    bar.update(len(block))
            if total is not None and part.stat().st_size < total:
                raise _Retry(f"connection closed after {part.stat().st_size} of {total} bytes")
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        raise _Retry(_short(error)) from None


def _short(error):
    """The telling part of a requests error ("Failed to resolve 'host'", "Connection refused", ...)."""
    text = str(error)
    reason = re.search(r"(Failed to resolve '[^']+'|Name or service not known|Connection refused|"
                       r"Read timed out|Connection broken[^'\")]*|Connection aborted)", text)
    return reason.group(1) if reason else (text.splitlines()[0][:200] if text else type(error).__name__)


def _download(urls, part, timeout, retries, backoff, progress, log):
    """Download into part from the first URL that works; raise a LinclfError when none does."""
    session = requests.Session()
    session.headers["User-Agent"] = f"linclf/{__version__}"
    problems = []
    for url in urls:
        for attempt in range(retries + 1):
            try:
                _fetch(session, url, part, timeout, progress, log)
                return url
            except _Retry as error:
                problem = f"{url}: {error}"
                if attempt < retries:
                    wait = backoff * 2 ** attempt
                    log(f"{problem}; retrying in {wait:.0f} s")
                    time.sleep(wait)
            except LinclfError as error:
                problem = str(error)
                break
        problems.append(problem)
        if url != urls[-1]:
            log(f"{problem}; trying the next URL")
    kept = f"; partial download kept in {part}, run again to resume" if part.exists() else ""
    raise LinclfError(f"download failed: {problems[-1]}{kept}")


def _extract(archive, destination):
    """Extract the expected batch files of archive into destination; ignore every other member."""
    if not hasattr(tarfile, "data_filter"):
        raise LinclfError("this Python lacks tarfile's 'data' extraction filter (3.11.4+ has it); "
                          "refusing to extract")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                if member.name in EXPECTED_MEMBERS and member.isfile():
                    tar.extract(member, destination, filter="data")
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        if isinstance(error, OSError) and error.errno is not None:
            raise
        raise LinclfError(f"{archive} is truncated or not a gzip-compressed tar file ({error})") from None
    found = {str(path.relative_to(destination)) for path in destination.rglob("*") if path.is_file()}
    missing = sorted(EXPECTED_MEMBERS - found)
    if missing:
        raise LinclfError(f"archive {archive} is missing {', '.join(missing)}")
    return destination / data.BATCHES_DIR


def download(data_dir, urls=None, md5=None, from_file=None, force=False, keep_archive=False,
             progress=False, timeout=(10, 60), retries=3, backoff=1.0, log=print):
    """Make sure <data_dir>/cifar-10/ holds the cache. Returns a short description of what was done."""
    data_dir = Path(data_dir)
    urls, md5 = list(urls or default_urls()), (md5 or default_md5()).lower()
    _check_arguments(urls, md5)
    meta = data.read_meta(data_dir)
    if meta is not None and not force:
        return f"CIFAR-10 is already cached in {data.cache_path(data_dir)} (archive md5 {meta.get('source_md5')})"
    _check_writable(data_dir)
    archive = data_dir / ARCHIVE_NAME
    part = data_dir / (ARCHIVE_NAME + ".part")
    if from_file is not None:
        archive = Path(from_file)
        if not archive.is_file():
            raise LinclfError(f"--from-file: no such file: {archive}")
        got = file_md5(archive)
        if got != md5:
            raise LinclfError(f"checksum mismatch for {archive}: md5 {got}, expected {md5}")
    elif archive.is_file() and file_md5(archive) == md5:
        log(f"using the verified archive already in {archive}")
    else:
        source = _download(urls, part, timeout, retries, backoff, progress, log)
        got = file_md5(part)
        if got != md5:
            part.unlink()
            raise LinclfError(f"checksum mismatch for {source}: md5 {got}, expected {md5}; "
                              f"the download was deleted")
        os.replace(part, archive)
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=data_dir) as workspace:
        batches = _extract(archive, Path(workspace))
        cache = data.build_cache(batches, data_dir, source_md5=md5)
    if from_file is None and not keep_archive:
        archive.unlink(missing_ok=True)
    meta = data.read_meta(data_dir)
    return (f"cached CIFAR-10 in {cache}: {meta['num_train']} training and {meta['num_test']} test images "
            f"(archive md5 {md5})")
