"""Drive the browser page (``examples/web``) in Debian's Chromium: the one launcher that
``tests/test_web_page.py`` and ``tools/web_bench.py`` share.

Chromium is ``/usr/bin/chromium`` (the Debian package), started by the ``playwright`` package with
a fresh profile and no background traffic; never a browser Playwright downloads.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "examples" / "web"
CHROMIUM = Path("/usr/bin/chromium")
NPM_CI = "(cd examples/web && npm ci --ignore-scripts --no-audit --no-fund)"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


def missing() -> str | None:
    """Why the page cannot run here (the install step to take), or None when it can."""
    if not CHROMIUM.is_file():
        return "/usr/bin/chromium is missing: apt-get install -y --no-install-recommends chromium"
    if not (WEB / "node_modules" / "onnxruntime-web" / "dist").is_dir():
        return f"examples/web/node_modules is missing: run {NPM_CI}"
    if not (REPO / "js" / "src" / "index.js").is_file():
        return "js/src/index.js (the JavaScript runtime the page imports) is missing"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing: pip install -e '.[dev]'"
    return None


def start_server() -> tuple[subprocess.Popen, str]:
    """``tools/serve_web.py --port 0`` as a child process, and the origin it serves (http://127.0.0.1:PORT)."""
    proc = subprocess.Popen([sys.executable, str(REPO / "tools" / "serve_web.py"), "--port", "0", "--quiet"],
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    m = re.fullmatch(r"(http://127\.0\.0\.1:\d+)/examples/web/", line)
    if not m:
        proc.kill()
        raise RuntimeError(f"serve_web printed {line!r}; expected its URL")
    return proc, m.group(1)


def launch(pw: Any, profile: Path) -> Any:
    """A persistent Chromium context on the fresh profile folder ``profile`` (camera allowed: a fake one)."""
    return pw.chromium.launch_persistent_context(
        str(profile), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1100, "height": 900}, permissions=["camera"])


def wait_until(page: Any, condition: str, seconds: float) -> bool:
    """Poll the JavaScript expression ``condition`` in ``page`` until true (False after ``seconds``).
    Not Playwright's wait_for_function: the page's CSP forbids the string evaluation it uses."""
    return page.evaluate(f"""async () => {{ const end = performance.now() + {seconds * 1000};
        while (!({condition})) {{ if (performance.now() > end) return false;
          await new Promise((r) => setTimeout(r, 5)); }}
        return true; }}""")
