"""linclf download against an HTTP server on 127.0.0.1 that these tests start themselves."""
import hashlib
import os
import pickle
import re
import stat
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

from linclf.data import cifar10
from linclf.data import download
from linclf.util import progressbars
from linclf.cli import cli
from linclf.util.errors import LinclfError
from conftest import batch_files, make_archive

FAST = {"retries": 2, "backoff": 0.01, "timeout": (2, 5), "log": lambda message: None}


class ArchiveServer:
    """Serves files from memory; can ignore Range, drop a connection half way, or answer 404/500."""

    def __init__(self):
        self.files = {}
        self.requests = []          # (path, Range header or None, bytes sent)
        self.support_range = True
        self.drop_after = None      # bytes to send on the next response before cutting the connection
        self.fail_next = []         # status codes to answer first, in order
        self.drop_every = None      # bytes to send on every response before cutting the connection
        self.delay = 0              # seconds to sleep after each 16 KiB written (a slow link)
        self.started = threading.Event()  # set when the first request arrives
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.started.set()
                range_header = self.headers.get("Range")
                if server.fail_next:
                    self.send_error(server.fail_next.pop(0))
                    server.requests.append((self.path, range_header, 0))
                    return
                if self.path not in server.files:
                    self.send_error(404)
                    server.requests.append((self.path, range_header, 0))
                    return
                payload = server.files[self.path]
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and server.support_range:
                    start = int(match.group(1))
                    if start >= len(payload):
                        self.send_response(416)
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(payload) - 1}/{len(payload)}")
                else:
                    self.send_response(200)
                body = payload[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.drop_after is not None or server.drop_every is not None:
                    body, server.drop_after = body[:server.drop_after or server.drop_every], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    server.requests.append((self.path, range_header, len(body)))
                    self.connection.shutdown(2)
                    return
                for start in range(0, len(body), 16384):
                    self.wfile.write(body[start:start + 16384])
                    time.sleep(server.delay)
                server.requests.append((self.path, range_header, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def archive_bytes(tmp_path_factory):
    path = make_archive(tmp_path_factory.mktemp("archive") / "a.tar.gz", batch_files(per_batch=30, num_test=20))
    return path.read_bytes()


@pytest.fixture
def server(archive_bytes):
    server = ArchiveServer()
    server.files["/cifar-10-python.tar.gz"] = archive_bytes
    yield server
    server.close()


def md5_of(payload):
    return hashlib.md5(payload).hexdigest()


def listing(folder):
    """Names in folder, but the lock file (it stays, empty, so that waiters share one inode)."""
    return sorted(p.name for p in folder.iterdir() if p.name != download.LOCK_NAME)


def test_full_download_builds_the_cache_and_cleans_up(server, archive_bytes, tmp_path):
    message = download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert "cached CIFAR-10" in message and "150 training and 20 test images" in message
    dataset = cifar10.load_cache(tmp_path)
    assert dataset.train_x.shape == (150, 32, 32, 3) and dataset.meta["source_md5"] == md5_of(archive_bytes)
    assert listing(tmp_path) == ["cifar-10"]  # archive, batches, temporaries gone
    assert len(server.requests) == 1


def test_keep_archive(server, archive_bytes, tmp_path):
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes),
                      keep_archive=True, **FAST)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive_bytes


def test_dropped_connection_resumes_with_range(server, archive_bytes, tmp_path):
    half = len(archive_bytes) // 2
    server.drop_after = half
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert cifar10.read_meta(tmp_path) is not None
    (_, first_range, first_sent), (_, second_range, second_sent) = server.requests
    assert first_range is None and first_sent == half
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second_range).group(1))
    assert half - download.CHUNK_BYTES <= resumed_at <= half  # kept what arrived, but a partial chunk
    assert second_sent == len(archive_bytes) - resumed_at  # only the remaining bytes


def test_existing_part_file_is_resumed(server, archive_bytes, tmp_path):
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(archive_bytes[:1000])
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert server.requests == [("/cifar-10-python.tar.gz", "bytes=1000-", len(archive_bytes) - 1000)]


def test_server_without_range_support_restarts_cleanly(server, archive_bytes, tmp_path):
    server.support_range = False
    (tmp_path / "cifar-10-python.tar.gz.part").write_bytes(b"x" * 1000)  # not even the right bytes
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert cifar10.read_meta(tmp_path) is not None
    assert server.requests[0][1] == "bytes=1000-" and server.requests[0][2] == len(archive_bytes)


def test_wrong_md5_deletes_the_download(server, tmp_path):
    with pytest.raises(LinclfError, match=r"checksum mismatch for .*: md5 [0-9a-f]{32}, expected 0{32}; "
                                          r"the download was deleted"):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], "0" * 32, **FAST)
    assert listing(tmp_path) == []


def test_404_then_a_working_mirror(server, archive_bytes, tmp_path):
    messages = []
    download.download(tmp_path, [server.url("/gone.tar.gz"), server.url("/cifar-10-python.tar.gz")],
                      md5_of(archive_bytes), **{**FAST, "log": messages.append})
    assert [r[0] for r in server.requests] == ["/gone.tar.gz", "/cifar-10-python.tar.gz"]
    assert any("HTTP 404" in m and "trying the next URL" in m for m in messages)
    assert cifar10.read_meta(tmp_path) is not None


def test_server_errors_are_retried(server, archive_bytes, tmp_path):
    server.fail_next = [503, 500]
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert len(server.requests) == 3 and cifar10.read_meta(tmp_path) is not None


def test_404_everywhere_is_one_clear_error(server, tmp_path):
    with pytest.raises(LinclfError, match=r"download failed: HTTP 404 .* from http://127.0.0.1:\d+/nope"):
        download.download(tmp_path, [server.url("/nope")], "0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []  # the lock file this run created is gone too


def test_a_failed_download_removes_the_folders_it_created(server, tmp_path):
    data_dir = tmp_path / "new" / "data"
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(data_dir), "--url", server.url("/nope"),
                                      "--md5", "0" * 32, "--quiet"])
    assert result.exit_code == 1 and "HTTP 404" in result.output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("drop_after,left", [(1000, ["mine.txt"]),
                                             (100_000, ["cifar-10-python.tar.gz.part", "mine.txt"])])
@pytest.mark.slow
def test_a_failed_download_keeps_what_was_there_and_a_part_to_resume(server, archive_bytes, tmp_path, drop_after,
                                                                     left):
    """A connection dropped before the first 64 KiB block leaves no empty .part behind."""
    server.drop_every = drop_after
    (tmp_path / "mine.txt").write_text("mine")
    partial = ".*partial download kept" if len(left) > 1 else ""
    with pytest.raises(LinclfError, match=f"download failed: .*Connection broken{partial}"):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes),
                          **{**FAST, "retries": 0})
    assert sorted(p.name for p in tmp_path.iterdir()) == left


@pytest.mark.parametrize("spoil,message", [
    (lambda files: files.update(data_batch_2=b"not a pickle"),
     r"a.tar.gz: cifar-10-batches-py/data_batch_2 is not a valid CIFAR-10 batch file"),
    (lambda files: files.update({"batches.meta": pickle.dumps({}, protocol=2)}),
     r"a.tar.gz: cifar-10-batches-py/batches.meta is not a valid CIFAR-10 batch file: no 'label_names' entry"),
])
def test_a_bad_batch_in_the_archive_is_named_in_the_archive(tmp_path, spoil, message):
    """Never the deleted .extract-* folder it was read from."""
    files = batch_files(per_batch=4, num_test=4)
    spoil(files)
    path = make_archive(tmp_path / "a.tar.gz", files)
    with pytest.raises(LinclfError, match=message) as raised:
        download.download(tmp_path / "d", from_file=path, md5=md5_of(path.read_bytes()), **FAST)
    assert ".extract-" not in str(raised.value)


def test_disk_full_while_extracting_names_the_archive_not_the_temporary_folder(archive_bytes, tmp_path, monkeypatch):
    import errno
    import tarfile

    def full(self, member, path="", *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", f"{path}/{member.name}")

    monkeypatch.setattr(tarfile.TarFile, "extract", full)
    path = tmp_path / "a.tar.gz"
    path.write_bytes(archive_bytes)
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path / "d"), "--from-file", str(path),
                                      "--md5", md5_of(archive_bytes), "--quiet"])
    assert result.exit_code == 1 and ".extract-" not in result.output, result.output
    assert result.output.strip() == (f"Error: cannot build the CIFAR-10 cache in {tmp_path}/d/cifar-10 from {path}: "
                                     f"No space left on device")


def test_truncated_archive(server, archive_bytes, tmp_path):
    truncated = archive_bytes[: len(archive_bytes) // 2]
    server.files["/t.tar.gz"] = truncated
    with pytest.raises(LinclfError, match="truncated or not a gzip-compressed tar file"):
        download.download(tmp_path, [server.url("/t.tar.gz")], md5_of(truncated), **FAST)
    assert cifar10.read_meta(tmp_path) is None
    assert not [name for name in listing(tmp_path) if name.startswith(".")]  # no temporaries left


def test_not_gzip(tmp_path):
    path = tmp_path / "plain.tar.gz"
    path.write_bytes(b"plain text, not gzip" * 100)
    with pytest.raises(LinclfError, match="truncated or not a gzip-compressed tar file"):
        download.download(tmp_path / "d", from_file=path, md5=md5_of(path.read_bytes()), **FAST)


def test_archive_missing_a_batch(server, tmp_path):
    files = batch_files(per_batch=4, num_test=4)
    del files["data_batch_4"]
    payload = make_archive(tmp_path / "m.tar.gz", files).read_bytes()
    server.files["/m.tar.gz"] = payload
    with pytest.raises(LinclfError, match=r"missing cifar-10-batches-py/data_batch_4"):
        download.download(tmp_path / "d", [server.url("/m.tar.gz")], md5_of(payload), **FAST)
    assert cifar10.read_meta(tmp_path / "d") is None


def test_members_outside_the_expected_files_are_never_written(tmp_path):
    evil = [("../escaped.txt", b"outside"), ("/tmp/absolute-linclf-test.txt", b"abs"),
            ("cifar-10-batches-py/../../up.txt", b"up"), ("cifar-10-batches-py/extra.py", b"print()")]
    path = make_archive(tmp_path / "evil.tar.gz", batch_files(per_batch=4, num_test=4), extra_members=evil)
    data_dir = tmp_path / "inner" / "d"
    download.download(data_dir, from_file=path, md5=md5_of(path.read_bytes()), **FAST)
    assert cifar10.read_meta(data_dir) is not None
    assert not (tmp_path / "inner" / "escaped.txt").exists() and not (tmp_path / "up.txt").exists()
    assert not (tmp_path / "inner" / "up.txt").exists()
    assert not list(tmp_path.rglob("extra.py")) and not list(tmp_path.rglob("absolute-linclf-test.txt"))


def test_existing_cache_makes_no_request(server, archive_bytes, tmp_path):
    url = [server.url("/cifar-10-python.tar.gz")]
    download.download(tmp_path, url, md5_of(archive_bytes), **FAST)
    before = (tmp_path / "cifar-10" / "train_x.npy").stat().st_mtime_ns
    message = download.download(tmp_path, url, md5_of(archive_bytes), **FAST)
    assert message.startswith("CIFAR-10 is already cached") and len(server.requests) == 1
    assert (tmp_path / "cifar-10" / "train_x.npy").stat().st_mtime_ns == before
    download.download(tmp_path, url, md5_of(archive_bytes), force=True, **FAST)
    assert len(server.requests) == 2


def test_from_file_verifies_and_keeps_the_file(archive_bytes, tmp_path):
    path = tmp_path / "mine.tar.gz"
    path.write_bytes(archive_bytes)
    download.download(tmp_path / "d", from_file=path, md5=md5_of(archive_bytes), **FAST)
    assert path.read_bytes() == archive_bytes
    np.testing.assert_array_equal(cifar10.load_cache(tmp_path / "d").test_y.shape, (20,))
    with pytest.raises(LinclfError, match="checksum mismatch for .*mine.tar.gz"):
        download.download(tmp_path / "e", from_file=path, md5="f" * 32, **FAST)


def test_unreachable_host_is_one_error(tmp_path):
    with pytest.raises(LinclfError, match=r"download failed: http://127.0.0.1:9/x: Connection refused"):
        download.download(tmp_path, ["http://127.0.0.1:9/x"], "0" * 32, **FAST)


@pytest.mark.parametrize("args, message", [
    (["--md5", "xyz"], "--md5 must be 32 hexadecimal digits, got 'xyz'"),
    (["--url", "ftp://host/file", "--md5", "0" * 32], "--url must be an http:// or https:// address"),
    (["--from-file", "/nonexistent.tar.gz", "--md5", "0" * 32], "--from-file: no such file"),
])
def test_cli_bad_arguments(tmp_path, args, message):
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path), *args])
    assert result.exit_code == 1 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_cli_data_dir_not_writable(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(blocker / "d"), "--md5", "0" * 32])
    assert result.exit_code == 1 and "is not writable" in result.output


def test_cli_download_then_train(server, archive_bytes, tmp_path):
    env = {"LINCLF_CIFAR10_URL": server.url("/cifar-10-python.tar.gz"), "LINCLF_CIFAR10_MD5": md5_of(archive_bytes)}
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path), "--quiet"], env=env)
    assert result.exit_code == 0, result.output
    assert "cached CIFAR-10" in result.output
    again = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path)], env=env)
    assert again.exit_code == 0 and "already cached" in again.output
    trained = CliRunner().invoke(cli, ["train", "--data-dir", str(tmp_path), "--epochs", "1", "--val-size", "30",
                                       "--out", str(tmp_path / "run"), "--quiet"])
    assert trained.exit_code == 0, trained.output


def test_ctrl_c_leaves_a_part_file_that_resumes(server, archive_bytes, tmp_path, monkeypatch):
    real_update = progressbars.Bar.update

    def interrupt_after_first_chunk(self, n=1):
        real_update(self, n)
        raise KeyboardInterrupt

    monkeypatch.setattr(progressbars.Bar, "update", interrupt_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == download.CHUNK_BYTES and cifar10.read_meta(tmp_path) is None
    monkeypatch.undo()
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert server.requests[-1][1] == f"bytes={download.CHUNK_BYTES}-" and cifar10.read_meta(tmp_path) is not None


def test_disk_full_is_one_line(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cifar-10-python.tar.gz.part"))

    monkeypatch.setattr(download, "_fetch", full)
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9/x",
                                      "--md5", "0" * 32])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: No space left on device: {tmp_path}/cifar-10-python.tar.gz.part"


# -- planted links, stale files, concurrent runs ------------------------------------------------------

PART = "cifar-10-python.tar.gz.part"


@pytest.mark.parametrize("plant, kind", [
    (lambda path, victim: path.symlink_to(victim), "a symbolic link"),
    (lambda path, victim: path.mkdir(), "a directory"),
])
@pytest.mark.slow
def test_a_planted_part_file_is_refused_and_nothing_is_written_through_it(server, archive_bytes, tmp_path,
                                                                          plant, kind):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "d").mkdir()
    plant(tmp_path / "d" / PART, victim)
    with pytest.raises(LinclfError, match=f"refusing to write .*/d/{PART}: it is {kind}; remove it"):
        download.download(tmp_path / "d", [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert victim.read_bytes() == b"precious" and server.requests == []


def test_a_special_file_at_the_archive_name_is_refused(server, archive_bytes, tmp_path):
    os.mkfifo(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(LinclfError, match=r"refusing to write .*cifar-10-python.tar.gz: it is a special file"):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "cifar-10-python.tar.gz").st_mode)


def test_a_link_at_the_archive_name_is_replaced_not_written_through(server, archive_bytes, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "cifar-10-python.tar.gz").symlink_to(victim)
    download.download(tmp_path / "d", [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes),
                      keep_archive=True, **FAST)
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "d" / "cifar-10-python.tar.gz").read_bytes() == archive_bytes


def test_a_server_that_drops_every_few_chunks_still_gets_there(server, archive_bytes, tmp_path, monkeypatch):
    monkeypatch.setattr(download, "CHUNK_BYTES", 8192)
    server.drop_every = 50_000  # each attempt keeps at least 40 KiB, so well over `retries` attempts
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert cifar10.read_meta(tmp_path) is not None and len(server.requests) > FAST["retries"] + 1


@pytest.mark.parametrize("stale", ["longer than the archive", "garbage then resumed"])
def test_a_stale_part_file_costs_one_fresh_download_not_a_failure(server, archive_bytes, tmp_path, stale):
    part = tmp_path / PART
    part.write_bytes(b"x" * (len(archive_bytes) + 10) if stale.startswith("longer") else b"x" * 1000)
    messages = []
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes),
                      **{**FAST, "log": messages.append})
    assert cifar10.read_meta(tmp_path) is not None and not part.exists()
    assert server.requests[-1] == ("/cifar-10-python.tar.gz", None, len(archive_bytes))  # from scratch
    assert any("was stale; downloading from scratch" in m for m in messages)


def test_a_different_md5_rebuilds_the_cache(server, archive_bytes, tmp_path, monkeypatch):
    monkeypatch.delenv("LINCLF_CIFAR10_MD5", raising=False)
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    # not asked for an md5: whatever the cache was built from will do
    assert download.download(tmp_path, [server.url("/x")], **FAST).startswith("CIFAR-10 is already cached")
    other = make_archive(tmp_path / "other.tar.gz", batch_files(per_batch=4, num_test=4)).read_bytes()
    server.files["/other.tar.gz"] = other
    messages = []
    outcome = download.download(tmp_path, [server.url("/other.tar.gz")], md5_of(other),
                                **{**FAST, "log": messages.append})
    assert "cached CIFAR-10" in outcome and cifar10.read_meta(tmp_path)["source_md5"] == md5_of(other)
    assert any(f"built from the archive with md5 {md5_of(archive_bytes)}, not the requested {md5_of(other)}; "
               f"rebuilding it" in m for m in messages)
    monkeypatch.setenv("LINCLF_CIFAR10_MD5", md5_of(archive_bytes))  # the environment asks too
    assert "cached CIFAR-10" in download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], **FAST)


def test_force_hashes_a_kept_archive_again_and_replaces_a_damaged_one(server, archive_bytes, tmp_path):
    url = [server.url("/cifar-10-python.tar.gz")]
    download.download(tmp_path, url, md5_of(archive_bytes), keep_archive=True, **FAST)
    archive = tmp_path / "cifar-10-python.tar.gz"
    damaged = bytearray(archive_bytes)
    damaged[1000] ^= 0xFF
    archive.write_bytes(bytes(damaged))
    download.download(tmp_path, url, md5_of(archive_bytes), force=True, keep_archive=True, **FAST)
    assert archive.read_bytes() == archive_bytes and len(server.requests) == 2


def test_leftovers_of_a_killed_run_are_removed(server, archive_bytes, tmp_path):
    for name in (".extract-abc123", ".cifar-10.tmp-0f0f0f", ".cifar-10.old.tmp-1a1a1a", ".mine"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "train_x.npy").write_bytes(b"half")
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert listing(tmp_path) == [".mine", "cifar-10"]


def test_an_unreachable_official_url_hints_at_the_offline_options(tmp_path, monkeypatch):
    monkeypatch.delenv("LINCLF_CIFAR10_URL", raising=False)
    monkeypatch.setattr(download, "OFFICIAL_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(LinclfError, match=r"Connection refused; offline\? use --from-file PATH or set "
                                          r"LINCLF_CIFAR10_URL to a mirror$"):
        download.download(tmp_path, md5="0" * 32, **FAST)


def test_two_downloads_into_one_data_dir_fetch_the_archive_once(server, archive_bytes, tmp_path):
    server.delay = 0.02  # about 0.7 s for the whole archive
    url, outcomes, messages = [server.url("/cifar-10-python.tar.gz")], [None, None], []

    def run(index):
        try:
            outcomes[index] = download.download(tmp_path, url, md5_of(archive_bytes),
                                                **{**FAST, "log": messages.append})
        except Exception as error:  # reported by the assertion below
            outcomes[index] = error

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert server.started.wait(10)
    second = threading.Thread(target=run, args=(1,))
    second.start()
    first.join(30)
    second.join(30)
    assert outcomes[0].startswith("cached CIFAR-10"), outcomes
    assert outcomes[1].startswith("CIFAR-10 is already cached"), outcomes
    assert len(server.requests) == 1
    assert any(m.startswith("waiting for another linclf process that is building the CIFAR-10 cache in ")
               and download.LOCK_NAME in m for m in messages)


def test_without_waiting_a_busy_data_dir_is_one_error(archive_bytes, tmp_path):
    from linclf.util import locks
    with locks.hold(tmp_path / download.LOCK_NAME, "testing"):
        with pytest.raises(LinclfError, match=r"another linclf process is building the CIFAR-10 cache in .* "
                                              r"\(lock file .*\.cifar-10\.lock\); wait for it to finish"):
            download.download(tmp_path, ["http://127.0.0.1:9/x"], md5_of(archive_bytes), wait=False, **FAST)


def test_a_file_where_the_cache_folder_goes_is_refused_before_downloading(tmp_path):
    from linclf.data import download

    (tmp_path / "cifar-10").write_text("not a folder")
    with pytest.raises(LinclfError, match=r"cifar-10 should be the cache's folder but is a file; remove it"):
        download.download(tmp_path, urls=["http://127.0.0.1:9/never-contacted.tar.gz"], md5="0" * 32,
                          log=lambda message: None)
