"""linclf download against an HTTP server on 127.0.0.1 that these tests start themselves."""
import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from click.testing import CliRunner

from linclf import data, download
from linclf.cli import cli
from linclf.errors import LinclfError
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
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
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
                if server.drop_after is not None:
                    body, server.drop_after = body[:server.drop_after], None
                    self.wfile.write(body)
                    self.wfile.flush()
                    self.close_connection = True
                    server.requests.append((self.path, range_header, len(body)))
                    self.connection.shutdown(2)
                    return
                self.wfile.write(body)
                server.requests.append((self.path, range_header, len(body)))

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
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


def test_full_download_builds_the_cache_and_cleans_up(server, archive_bytes, tmp_path):
    message = download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert "cached CIFAR-10" in message and "150 training and 20 test images" in message
    dataset = data.load_cache(tmp_path)
    assert dataset.train_x.shape == (150, 32, 32, 3) and dataset.meta["source_md5"] == md5_of(archive_bytes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cifar-10"]  # archive, batches, temporaries gone
    assert len(server.requests) == 1


def test_keep_archive(server, archive_bytes, tmp_path):
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes),
                      keep_archive=True, **FAST)
    assert (tmp_path / "cifar-10-python.tar.gz").read_bytes() == archive_bytes


def test_dropped_connection_resumes_with_range(server, archive_bytes, tmp_path):
    half = len(archive_bytes) // 2
    server.drop_after = half
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert data.read_meta(tmp_path) is not None
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
    assert data.read_meta(tmp_path) is not None
    assert server.requests[0][1] == "bytes=1000-" and server.requests[0][2] == len(archive_bytes)


def test_wrong_md5_deletes_the_download(server, tmp_path):
    with pytest.raises(LinclfError, match=r"checksum mismatch for .*: md5 [0-9a-f]{32}, expected 0{32}; "
                                          r"the download was deleted"):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], "0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_404_then_a_working_mirror(server, archive_bytes, tmp_path):
    messages = []
    download.download(tmp_path, [server.url("/gone.tar.gz"), server.url("/cifar-10-python.tar.gz")],
                      md5_of(archive_bytes), **{**FAST, "log": messages.append})
    assert [r[0] for r in server.requests] == ["/gone.tar.gz", "/cifar-10-python.tar.gz"]
    assert any("HTTP 404" in m and "trying the next URL" in m for m in messages)
    assert data.read_meta(tmp_path) is not None


def test_server_errors_are_retried(server, archive_bytes, tmp_path):
    server.fail_next = [503, 500]
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert len(server.requests) == 3 and data.read_meta(tmp_path) is not None


def test_404_everywhere_is_one_clear_error(server, tmp_path):
    with pytest.raises(LinclfError, match=r"download failed: HTTP 404 .* from http://127.0.0.1:\d+/nope"):
        download.download(tmp_path, [server.url("/nope")], "0" * 32, **FAST)
    assert list(tmp_path.iterdir()) == []


def test_truncated_archive(server, archive_bytes, tmp_path):
    truncated = archive_bytes[: len(archive_bytes) // 2]
    server.files["/t.tar.gz"] = truncated
    with pytest.raises(LinclfError, match="truncated or not a gzip-compressed tar file"):
        download.download(tmp_path, [server.url("/t.tar.gz")], md5_of(truncated), **FAST)
    assert data.read_meta(tmp_path) is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


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
    assert data.read_meta(tmp_path / "d") is None


def test_members_outside_the_expected_files_are_never_written(tmp_path):
    evil = [("../escaped.txt", b"outside"), ("/tmp/absolute-linclf-test.txt", b"abs"),
            ("cifar-10-batches-py/../../up.txt", b"up"), ("cifar-10-batches-py/extra.py", b"print()")]
    path = make_archive(tmp_path / "evil.tar.gz", batch_files(per_batch=4, num_test=4), extra_members=evil)
    data_dir = tmp_path / "inner" / "d"
    download.download(data_dir, from_file=path, md5=md5_of(path.read_bytes()), **FAST)
    assert data.read_meta(data_dir) is not None
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
    np.testing.assert_array_equal(data.load_cache(tmp_path / "d").test_y.shape, (20,))
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
    real_update = download.tqdm.update

    def interrupt_after_first_chunk(self, n=1):
        real_update(self, n)
        raise KeyboardInterrupt

    monkeypatch.setattr(download.tqdm, "update", interrupt_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    part = tmp_path / "cifar-10-python.tar.gz.part"
    assert part.stat().st_size == download.CHUNK_BYTES and data.read_meta(tmp_path) is None
    monkeypatch.undo()
    download.download(tmp_path, [server.url("/cifar-10-python.tar.gz")], md5_of(archive_bytes), **FAST)
    assert server.requests[-1][1] == f"bytes={download.CHUNK_BYTES}-" and data.read_meta(tmp_path) is not None


def test_disk_full_is_one_line(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cifar-10-python.tar.gz.part"))

    monkeypatch.setattr(download, "_fetch", full)
    result = CliRunner().invoke(cli, ["download", "--data-dir", str(tmp_path), "--url", "http://127.0.0.1:9/x",
                                      "--md5", "0" * 32])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: No space left on device: {tmp_path}/cifar-10-python.tar.gz.part"
