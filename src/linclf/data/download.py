"""Fetch, verify, safely extract and cache the official CIFAR-10 archive.

    lock <data-dir>/.cifar-10.lock                      (one download per data dir at a time)
    download -> <data-dir>/cifar-10-python.tar.gz.part   (resumable with HTTP Range)
    md5 check -> rename to cifar-10-python.tar.gz        (only a verified archive gets that name)
    extract the expected batch files only, with tarfile's "data" filter, into a temporary folder
    build the cache (cifar10.build_cache: temporary folder, then rename) and clean up

No file is written through a symbolic link: a link (or a special file) at the .part or archive
name is refused with a one-line error naming it, and left for the user to look at.
"""
import os
import re
import shutil
import tarfile
import tempfile
import time
import zlib
from pathlib import Path

import requests

from linclf import __version__
from linclf.data import cifar10
from linclf.util import files, locks, progressbars
from linclf.util.errors import LinclfError

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
CHUNK_BYTES = 1 << 16  # a dropped connection loses at most one chunk of what was received
LOCK_NAME = ".cifar-10.lock"
# temporary folders of an interrupted run (extraction; cifar10.build_cache's staging and old copy)
LEFTOVER_PREFIXES = (".extract-", f".{cifar10.CACHE_NAME}.tmp-", f".{cifar10.CACHE_NAME}.old.tmp-")
OFFLINE_HINT = "offline? use --from-file PATH or set LINCLF_CIFAR10_URL to a mirror"
EXPECTED_MEMBERS = {f"{cifar10.BATCHES_DIR}/{name}"
                    for name in cifar10.TRAIN_BATCHES + [cifar10.TEST_BATCH, cifar10.META_BATCH]}


class _Retry(Exception):
    """A transient failure (connection dropped, timeout, 5xx): worth another try. progressed: the
    attempt wrote some bytes before failing."""

    def __init__(self, message, progressed=False):
        super().__init__(message)
        self.progressed = progressed


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
    offset = _size(part)
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    received = 0
    try:
        with session.get(url, stream=True, timeout=timeout, headers=headers) as response:
            if response.status_code == 416 and offset:  # nothing left to send: part is complete
                return
            if response.status_code >= 500:
                raise _Retry(f"HTTP {response.status_code}")
            if response.status_code >= 400:
                raise LinclfError(f"HTTP {response.status_code} {response.reason} from {url}")
            if offset and response.status_code == 200:
                log("the server ignored the resume request; starting the download over")
                part.unlink(missing_ok=True)
                offset = 0
            elif offset and response.status_code == 206:
                start = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
                if not start or int(start.group(1)) != offset:
                    log("the server resumed at the wrong place; starting the download over")
                    part.unlink(missing_ok=True)
                    raise _Retry("bad Content-Range")
                log(f"resuming at {offset / 2**20:.1f} MiB")
            length = response.headers.get("Content-Length")
            total = offset + int(length) if length and length.isdigit() else None
            with files.open_for_append(part) as stream, \
                    progressbars.bar(total, ARCHIVE_NAME, unit="B", enabled=progress, initial=offset) as bar:
                for block in response.iter_content(CHUNK_BYTES):
                    stream.write(block)
                    received += len(block)
                    bar.update(len(block))
            if total is not None and _size(part) < total:
                raise _Retry(f"connection closed after {_size(part)} of {total} bytes", received > 0)
    except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as error:
        raise _Retry(_short(error), received > 0) from None


def _size(path):
    """Size in bytes of the regular file at path, 0 when missing; a link or special file is refused."""
    files.check_regular(path)
    try:
        return os.lstat(path).st_size
    except FileNotFoundError:
        return 0


def _short(error):
    """The telling part of a requests error ("Failed to resolve 'host'", "Connection refused", ...)."""
    text = str(error)
    reason = re.search(r"(Failed to resolve '[^']+'|Name or service not known|Connection refused|"
                       r"Read timed out|Connection broken[^'\")]*|Connection aborted)", text)
    return reason.group(1) if reason else (text.splitlines()[0][:200] if text else type(error).__name__)


def _download(urls, part, timeout, retries, backoff, progress, log):
    """Download into part from the first URL that works; raise a LinclfError when none does. Each URL
    gets retries more attempts after a transient failure, with exponential back-off; an attempt that
    wrote bytes before failing gives back the whole budget, so a server that drops the connection every
    few MiB still gets there."""
    session = requests.Session()
    session.headers["User-Agent"] = f"linclf/{__version__}"
    problems, official_unreachable = [], False
    for url in urls:
        failures = 0
        while True:
            try:
                _fetch(session, url, part, timeout, progress, log)
                return url
            except _Retry as error:
                problem = f"{url}: {error}"
                failures = 0 if error.progressed else failures
                if failures < retries:
                    wait = backoff * 2 ** failures
                    failures += 1
                    log(f"{problem}; retrying in {wait:.0f} s")
                    time.sleep(wait)
                    continue
                official_unreachable |= url == OFFICIAL_URL
            except LinclfError as error:
                problem = str(error)
            break
        problems.append(problem)
        if url != urls[-1]:
            log(f"{problem}; trying the next URL")
    if not _size(part):
        part.unlink(missing_ok=True)  # an empty one of this run's making
    kept = f"; partial download kept in {part}, run again to resume" if _size(part) else ""
    hint = f"; {OFFLINE_HINT}" if official_unreachable else ""
    raise LinclfError(f"download failed: {problems[-1]}{kept}{hint}")


def _fetch_verified(urls, md5, part, archive, timeout, retries, backoff, progress, log):
    """Download the archive into part, check its md5 and rename it to archive. A .part left by an
    earlier run is resumed; when the result fails the md5 (a stale or garbage .part), it is deleted and
    the archive downloaded once more from scratch before giving up."""
    resumed = _size(part) > 0
    source = _download(urls, part, timeout, retries, backoff, progress, log)
    got = files.file_hash(part, "md5")
    if got != md5 and resumed:
        log(f"the resumed download has md5 {got}, not {md5}: the earlier {part.name} was stale; "
            f"downloading from scratch")
        part.unlink(missing_ok=True)
        source = _download(urls, part, timeout, retries, backoff, progress, log)
        got = files.file_hash(part, "md5")
    if got != md5:
        part.unlink(missing_ok=True)
        raise LinclfError(f"checksum mismatch for {source}: md5 {got}, expected {md5}; "
                          f"the download was deleted")
    files.check_writable_target(archive)
    os.replace(part, archive)


def _verified_archive(archive, md5, log):
    """Whether archive is a regular file (or a link to one) with this md5; it is hashed every time."""
    if not os.path.lexists(archive):
        return False
    files.check_writable_target(archive)  # a directory or FIFO there is refused, never read
    if os.path.isfile(archive) and files.file_hash(archive, "md5") == md5:  # isfile: False for a dangling link
        return True
    log(f"{archive} does not have md5 {md5}; downloading it again")
    return False


def _remove_leftovers(data_dir, log):
    """Delete the temporary folders of runs killed half way (called while holding the lock)."""
    removed = 0
    for entry in os.scandir(data_dir):
        if entry.name.startswith(LEFTOVER_PREFIXES) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed += 1
    if removed:
        log(f"removed {removed} temporary folder{'s' * (removed > 1)} left in {data_dir} by an interrupted run")


def _cached(data_dir, asked_md5, log):
    """The 'already cached' message when data_dir holds a cache (built from asked_md5, when given),
    else None."""
    meta = cifar10.read_meta(data_dir)
    if meta is None:
        return None
    source = meta.get("source_md5")
    if asked_md5 and source != asked_md5:
        log(f"the cache in {cifar10.cache_path(data_dir)} was built from the archive with md5 {source}, "
            f"not the requested {asked_md5}; rebuilding it")
        return None
    return f"CIFAR-10 is already cached in {cifar10.cache_path(data_dir)} (archive md5 {source})"


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
    return destination / cifar10.BATCHES_DIR


def download(data_dir, urls=None, md5=None, from_file=None, force=False, keep_archive=False,
             progress=False, timeout=(10, 60), retries=3, backoff=1.0, log=print, wait=True):
    """Make sure <data_dir>/cifar-10/ holds the cache. Returns a short description of what was done.
    `md5` (else $LINCLF_CIFAR10_MD5), when given, must also match the md5 the cache was built from, or the
    cache is rebuilt. One process at a time works on a data dir: with wait=True a second one waits for
    the first (and then usually finds the cache built); with wait=False it fails at once."""
    if from_file and urls:
        raise LinclfError("give --from-file PATH or --url URL, not both")
    data_dir = Path(data_dir)
    asked_md5 = (md5 or os.environ.get("LINCLF_CIFAR10_MD5") or "").lower() or None
    # $LINCLF_CIFAR10_URL may name several mirrors, separated by spaces
    urls = list(urls or (os.environ.get("LINCLF_CIFAR10_URL") or OFFICIAL_URL).split())
    md5 = asked_md5 or OFFICIAL_MD5
    _check_arguments(urls, md5)
    cache = cifar10.cache_path(data_dir)
    if os.path.lexists(cache) and not cache.is_dir():  # found before a download, not after it
        kind = "a dangling link" if cache.is_symlink() else "a file"
        raise LinclfError(f"{cache} should be the cache's folder but is {kind}; remove it")
    done = None if force else _cached(data_dir, asked_md5, log=lambda message: None)
    if done:
        return done
    lock = data_dir / LOCK_NAME
    created = [folder for folder in (data_dir, *data_dir.parents) if not os.path.lexists(folder)]
    new_lock = not os.path.lexists(lock)
    try:
        _check_writable(data_dir)
        with locks.hold(lock, f"building the CIFAR-10 cache in {data_dir}", wait=wait, log=log):
            _remove_leftovers(data_dir, log)
            done = None if force else _cached(data_dir, asked_md5, log)  # built while we waited?
            try:
                return done or _build(data_dir, urls, md5, from_file, keep_archive, progress, timeout, retries,
                                      backoff, log)
            except BaseException:
                if new_lock:  # removed while held: a process waiting for it locks the next one (locks.hold)
                    lock.unlink(missing_ok=True)
                raise
    except BaseException:
        for folder in created:  # innermost first; one still holding something (a .part) stays
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _build(data_dir, urls, md5, from_file, keep_archive, progress, timeout, retries, backoff, log):
    archive = data_dir / ARCHIVE_NAME
    part = data_dir / (ARCHIVE_NAME + ".part")
    if from_file is not None:
        archive = Path(from_file)
        if not files.is_regular(archive):
            raise LinclfError(f"--from-file: no such file: {archive}")
        got = files.file_hash(archive, "md5")
        if got != md5:
            raise LinclfError(f"checksum mismatch for {archive}: md5 {got}, expected {md5}")
    elif _verified_archive(archive, md5, log):
        log(f"using the verified archive already in {archive}")
    else:
        _fetch_verified(urls, md5, part, archive, timeout, retries, backoff, progress, log)
    try:  # messages name the archive and the cache, never the temporary folders (deleted by then)
        with tempfile.TemporaryDirectory(prefix=".extract-", dir=data_dir) as workspace:
            batches = _extract(archive, Path(workspace))
            cache = cifar10.build_cache(batches, data_dir, source_md5=md5, label=f"{archive}: {cifar10.BATCHES_DIR}")
    except OSError as error:
        raise LinclfError(f"cannot build the CIFAR-10 cache in {cifar10.cache_path(data_dir)} from {archive}: "
                          f"{error.strerror or error}") from None
    if from_file is None and not keep_archive:
        archive.unlink(missing_ok=True)
    meta = cifar10.read_meta(data_dir)
    return (f"cached CIFAR-10 in {cache}: {meta['num_train']} training and {meta['num_test']} test images "
            f"(archive md5 {md5})")
