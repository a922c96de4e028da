#!/usr/bin/env python3
"""Serve a folder on 127.0.0.1 with HTTP Range support (a stand-in mirror for end-to-end runs).

    python scripts/serve_archive.py DIR [--port 8765] [--rate-mib 0]

Python's own `python -m http.server` ignores Range, so a resumed `linclf download` against it starts
over (which linclf handles); this server resumes. --rate-mib throttles, to interrupt a download
half way by hand. Binds to 127.0.0.1 only.
"""
import argparse
import functools
import os
import re
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer


class RangeHandler(SimpleHTTPRequestHandler):
    rate = 0  # bytes per second, 0 = unlimited

    def send_head(self):
        path = self.translate_path(self.path)
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if not match or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(match.group(1))
        if start >= size:
            self.send_error(416)
            return None
        stream = open(path, "rb")
        stream.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - start))
        self.end_headers()
        return stream

    def copyfile(self, source, destination):
        while block := source.read(1 << 16):
            destination.write(block)
            if self.rate:
                time.sleep(len(block) / self.rate)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rate-mib", type=float, default=0, help="throttle to this many MiB/s")
    args = parser.parse_args()
    RangeHandler.rate = args.rate_mib * 2**20
    handler = functools.partial(RangeHandler, directory=args.folder)
    with ThreadingHTTPServer(("127.0.0.1", args.port), handler) as server:
        print(f"serving {args.folder} on http://127.0.0.1:{args.port}/", flush=True)
        server.serve_forever()


if __name__ == "__main__":
    main()
