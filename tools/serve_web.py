"""Serve the repository root on 127.0.0.1 for the browser example (``examples/web``).

    python tools/serve_web.py            # then open http://127.0.0.1:8000/examples/web/

Only what the page needs: GET/HEAD of files under the repository root, from this machine only,
with the cross-origin-isolation headers (COOP/COEP) onnxruntime-web needs for threads and the MIME
types of ``.mjs``/``.wasm``/``.onnx``. No directory listings, no dot-folders (``.git``, ``.venv``).
``--port 0`` picks a free port; the first line printed is the URL.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import urllib.parse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ISOLATION = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}
TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".onnx": "application/octet-stream",
    ".png": "image/png",
    ".md": "text/plain; charset=utf-8",
    "": "application/octet-stream",
}


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files of ``directory`` with isolation headers; refuses listings and dot paths."""

    extensions_map = TYPES
    protocol_version = "HTTP/1.1"       # keep-alive: the page's ~30 files reuse a few connections

    def send_head(self):  # the base class's signature: a file object or None
        parts = urllib.parse.unquote(self.path.split("?", 1)[0].split("#", 1)[0]).replace("\\", "/").split("/")
        if any(p.startswith(".") for p in parts if p):                # also %2e-encoded
            self.send_error(404, "not served")
            return None
        target = Path(self.translate_path(self.path))
        if target.is_dir() and not (target / "index.html").is_file():
            self.send_error(404, "no listings")
            return None
        return super().send_head()

    def end_headers(self) -> None:
        for name, value in ISOLATION.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        if not self.server.quiet:
            super().log_message(format, *args)


def make_server(port: int = 8000, root: Path = REPO, quiet: bool = False) -> http.server.ThreadingHTTPServer:
    """A threading HTTP server bound to 127.0.0.1:``port`` serving ``root``."""
    server = http.server.ThreadingHTTPServer(
        (HOST, port), lambda *a, **k: Handler(*a, directory=str(root), **k))
    server.quiet = quiet
    return server


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=8000, help="TCP port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--quiet", action="store_true", help="do not log requests")
    args = ap.parse_args(argv)
    server = make_server(args.port, quiet=args.quiet)
    print(f"http://{HOST}:{server.server_address[1]}/examples/web/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
