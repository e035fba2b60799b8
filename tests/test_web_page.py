"""The browser page (``examples/web``) in a real headless Chromium, driven through its own inputs.

Omniglot test-class drawings (Vinyals split, never seen by the shipped bundle in meta-training) are
thinned to strokes and drawn with the mouse on the page's canvas; the page learns named classes from
them, predicts live, forgets a class, and saves its state encrypted in IndexedDB. Every prediction
and probability is checked against the Python runtime on the exact pixels the page fed its
classifier (``window.__edgemeta.last``), within 1e-4; the saved bytes open in the Python runtime with
the PBKDF2-derived key. Every request must go to the local server, and the page's Content Security
Policy must refuse other origins.

Skipped without ``/usr/bin/chromium``, ``examples/web/node_modules`` (``npm ci`` there), the
``playwright`` package, or Omniglot (for the drawing tests). Set ``EDGEMETA_WEB_SCREENSHOT=PATH`` to
keep the page's screenshot (docs/figures/web-page.png is made that way).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> Any:
    """A module of tools/ (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"edgemeta_tools_{name}", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


serve_web = _tool("serve_web")
web_harness = _tool("web_harness")
wait_until = web_harness.wait_until

BUNDLE = REPO / "models" / "omniglot-conv4-proto"
PHOTO_BUNDLE = REPO / "models" / "mini-imagenet-conv4"
PAD = 105                      # the page's canvas pixels (Omniglot's drawing size)
TOL = 1e-4
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    proc, origin = web_harness.start_server()
    yield origin
    proc.terminate()
    proc.wait(timeout=10)


def _get(origin: str, path: str) -> tuple[int, dict[str, str], bytes]:
    host, port = origin.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", path)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body


def test_server_isolates_types_and_refuses_listings(server):
    status, headers, body = _get(server, "/examples/web/")
    assert status == 200 and b"Content-Security-Policy" in body
    assert headers["cross-origin-opener-policy"] == "same-origin"
    assert headers["cross-origin-embedder-policy"] == "require-corp"
    assert headers["content-type"].startswith("text/html")
    for path, kind in [("/examples/web/app.js", "text/javascript"), ("/models/omniglot-conv4-proto/adapt.onnx",
                       "application/octet-stream"), ("/models/omniglot-conv4-proto/manifest.json", "application/json")]:
        status, headers, _ = _get(server, path)
        assert (status, headers["content-type"].split(";")[0]) == (200, kind), path
    if (web_harness.WEB / "node_modules" / "onnxruntime-web").is_dir():
        for path, kind in [("ort.wasm.min.mjs", "text/javascript"), ("ort-wasm-simd-threaded.wasm", "application/wasm")]:
            status, headers, _ = _get(server, f"/examples/web/node_modules/onnxruntime-web/dist/{path}")
            assert (status, headers["content-type"].split(";")[0]) == (200, kind), path
    for refused in ["/.git/HEAD", "/%2egit/HEAD", "/%2Egit/config", "/examples/%2e%2e/.git/HEAD", "/.venv/pyvenv.cfg",
                    "/examples/", "/models/", "/examples/web/../../.git/config", "/nowhere.js"]:
        assert _get(server, refused)[0] == 404, refused


def test_server_listens_on_loopback_only():
    srv = serve_web.make_server(0, quiet=True)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()


# ----------------------------------------------------------------------------- strokes from drawings

_OFFSETS = [(-1, 0), (0, 1), (1, 0), (0, -1), (-1, 1), (1, 1), (1, -1), (-1, -1)]   # 4-neighbours first


def thin(img: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning: bool ``[H, W]`` ink -> bool ``[H, W]`` one-pixel skeleton."""
    s = np.pad(img.astype(bool), 1)
    while True:
        changed = False
        for step in (0, 1):
            p2, _, p4, _, p6, _, p8, _ = nb = [s[:-2, 1:-1], s[:-2, 2:], s[1:-1, 2:], s[2:, 2:], s[2:, 1:-1],
                                                    s[2:, :-2], s[1:-1, :-2], s[:-2, :-2]]
            c = s[1:-1, 1:-1]
            count = sum(p.astype(np.int8) for p in nb)
            rises = sum((~nb[i] & nb[(i + 1) % 8]).astype(np.int8) for i in range(8))
            keep = (~(p2 & p4 & p6) & ~(p4 & p6 & p8)) if step == 0 else (~(p2 & p4 & p8) & ~(p2 & p6 & p8))
            kill = c & (count >= 2) & (count <= 6) & (rises == 1) & keep
            if kill.any():
                s[1:-1, 1:-1] = c & ~kill
                changed = True
        if not changed:
            return s[1:-1, 1:-1]


def _simplify(points: list[tuple[int, int]], tol: float = 0.7) -> list[tuple[int, int]]:
    """Douglas-Peucker: drop points within ``tol`` pixels of the line through their neighbours."""
    if len(points) < 3:
        return points
    pts = np.asarray(points, float)
    a, d = pts[0], pts[-1] - pts[0]
    norm = float(np.hypot(*d))
    dist = (np.hypot(*(pts - a).T) if norm == 0 else
            np.abs(d[0] * (pts[:, 1] - a[1]) - d[1] * (pts[:, 0] - a[0])) / norm)
    i = int(dist.argmax())
    if dist[i] <= tol:
        return [points[0], points[-1]]
    return _simplify(points[:i + 1], tol)[:-1] + _simplify(points[i:], tol)


def glyph_strokes(img: np.ndarray) -> list[list[tuple[int, int]]]:
    """Pen strokes ``[(row, col), ...]`` that retrace a drawing's skeleton, endpoints first."""
    pts = {tuple(p) for p in np.argwhere(thin(img))}

    def around(p: tuple[int, int]) -> list[tuple[int, int]]:
        return [(p[0] + dy, p[1] + dx) for dy, dx in _OFFSETS if (p[0] + dy, p[1] + dx) in pts]

    seen: set[tuple[int, int]] = set()
    strokes = []
    for start in sorted(pts, key=lambda p: (len(around(p)) != 1, p)):
        if start in seen:
            continue
        stroke = [q for q in around(start) if q in seen][:1] + [start]    # joins a stroke already drawn
        seen.add(start)
        while nxt := [q for q in around(stroke[-1]) if q not in seen]:
            seen.add(nxt[0])
            stroke.append(nxt[0])
        strokes.append(_simplify(stroke))
    return strokes


def test_glyph_strokes_retrace_a_drawing():
    img = np.zeros((20, 20), bool)
    img[4:7, 3:17] = True          # a horizontal bar, 3 pixels thick
    img[4:17, 9:12] = True         # and a vertical one: a T
    strokes = glyph_strokes(img)
    drawn = {p for s in strokes for p in s}
    assert 2 <= len(strokes) <= 3
    assert all(img[p] for p in drawn)
    rows = [p[0] for p in drawn]
    cols = [p[1] for p in drawn]
    assert max(cols) - min(cols) >= 9 and max(rows) - min(rows) >= 8     # both bars, less the thinned ends


# ----------------------------------------------------------------------------- the browser

class Browser:
    """A Chromium with a fresh profile; records every request and every CSP violation."""

    def __init__(self, pw: Any, profile: Path, origin: str):
        self.origin = origin
        self.context = web_harness.launch(pw, profile)
        self.requests: list[str] = []                 # every request the page made, in order
        self.failed: dict[str, str] = {}               # url -> why it failed (blocked, refused)
        self.context.on("request", lambda r: self.requests.append(r.url))
        self.context.on("requestfailed", lambda r: self.failed.__setitem__(r.url, r.failure or ""))
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))

    def open(self, query: str = "") -> Any:
        page = self.page
        page.goto(f"{self.origin}/examples/web/{query}")
        page.evaluate("""() => { window.__violations = [];
            document.addEventListener('securitypolicyviolation', (e) => window.__violations.push(
                {directive: e.effectiveDirective, blocked: e.blockedURI})); }""")
        assert wait_until(page, "window.__edgemeta && (window.__edgemeta.ready || window.__edgemeta.error)", 30)
        error = page.evaluate("window.__edgemeta.error")
        assert error is None, f"{error}\n" + "\n".join(self.console[-20:])
        return page

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def browser(server, tmp_path_factory) -> Iterator[Browser]:
    why = web_harness.missing()
    if why:
        pytest.skip(why)
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = Browser(pw, tmp_path_factory.mktemp("chromium-profile"), server)
        yield b
        b.close()


def draw(page: Any, strokes: list[list[tuple[int, int]]]) -> None:
    """Draw ``strokes`` (pad pixel coordinates ``(row, col)``) with the mouse, as a user would."""
    box = page.locator("#pad").bounding_box()
    sx, sy = box["width"] / PAD, box["height"] / PAD
    mouse = page.mouse

    def at(p: tuple[int, int]) -> tuple[float, float]:
        return box["x"] + (p[1] + 0.5) * sx, box["y"] + (p[0] + 0.5) * sy

    for stroke in strokes:
        mouse.move(*at(stroke[0]))
        mouse.down()
        for p in stroke[1:]:
            mouse.move(*at(p))
        mouse.up()


# A Uint8Array-like as base64: far faster through the DevTools protocol than a list of numbers.
B64 = """(a) => { let s = ''; for (let i = 0; i < a.length; i += 0x8000)
    s += String.fromCharCode.apply(null, a.subarray(i, i + 0x8000)); return btoa(s); }"""


def pad_pixels(page: Any) -> np.ndarray:
    """The canvas's own pixels, read through the DOM: uint8 ``[105, 105, 4]`` RGBA."""
    data = page.evaluate(f"""() => {{ const c = document.getElementById('pad');
        return ({B64})(c.getContext('2d').getImageData(0, 0, c.width, c.height).data); }}""")
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(PAD, PAD, 4)


def settled(page: Any) -> dict[str, Any]:
    """The page's last prediction once no work is queued, with its pixels as uint8 ``[H, W, 4]``."""
    page.evaluate("window.__edgemeta.idle()")
    last = page.evaluate(f"""() => {{ const l = window.__edgemeta.last; if (!l) return null;
        return {{...l, pixels: {{data: ({B64})(l.pixels.data), height: l.pixels.height, width: l.pixels.width}}}}; }}""")
    assert last is not None
    px = last.pop("pixels")
    last["pixels"] = np.frombuffer(base64.b64decode(px["data"]), np.uint8).reshape(px["height"], px["width"], 4)
    return last


def clear_pad(page: Any) -> None:
    page.click("#clear")


def teach(page: Any, label: str, drawings: list[np.ndarray]) -> list[np.ndarray]:
    """Draw each drawing, add it as a sample, then learn the class; returns the pixels added."""
    added = []
    for img in drawings:
        clear_pad(page)
        draw(page, glyph_strokes(img))
        added.append(pad_pixels(page))
        page.click("#add-sample")
    page.fill("#label", label)
    page.click("#learn")
    page.evaluate("window.__edgemeta.idle()")
    return added


def check_parity(last: dict[str, Any], clf: Any) -> None:
    """The page's label and probabilities equal the Python runtime's on the same pixels."""
    px = last["pixels"]
    assert [str(c) for c in clf.classes_] == last["classes"]
    proba = clf.predict_proba([px])[0]
    np.testing.assert_allclose(last["probs"], proba, atol=TOL, rtol=0)
    label = clf.predict([px], reject_unknown=last["rejectUnknown"])[0]
    assert str(label) == str(last["label"])


@pytest.fixture(scope="module")
def vinyals_test_drawings(omniglot_root) -> np.ndarray:
    """Full-size Omniglot drawings of Vinyals-split test characters: bool ``[423, 20, 105, 105]``."""
    with np.load(omniglot_root / "evaluation.npz", allow_pickle=False) as z:
        keep = z["char_id"] > 1200                     # the Vinyals test characters (edgemeta.data.omniglot)
        return z["images"][keep].astype(bool)


def test_page_learns_drawn_classes_like_the_python_runtime(browser, vinyals_test_drawings, tmp_path):
    from edgemeta.runtime import FewShotClassifier

    page = browser.open()
    chars = {"alpha": 3, "beta": 40, "gamma": 101}
    support, labels = [], []
    for label, c in chars.items():
        pixels = teach(page, label, [vinyals_test_drawings[c, k] for k in range(2)])
        support += pixels
        labels += [label] * len(pixels)
    shown = page.locator("#classes li").evaluate_all("els => els.map(e => e.dataset.label)")
    assert shown == sorted(chars)
    assert page.locator("#pending canvas").count() == 0           # samples dropped once learned

    clf = FewShotClassifier(BUNDLE).fit(support, labels)
    for label, c in list(chars.items())[:2]:                       # held-out drawings (gamma's: below)
        clear_pad(page)
        draw(page, glyph_strokes(vinyals_test_drawings[c, 5]))
        last = settled(page)
        assert np.array_equal(last["pixels"], pad_pixels(page))
        check_parity(last, clf)
        assert last["label"] == label
        assert page.locator("#prediction").inner_text() == label
        assert page.locator("#probs tr").count() == 3
        assert page.locator("#probs tr").first.inner_text().split()[-1] == f"{max(last['probs']):.3f}"

    shot = Path(os.environ.get("EDGEMETA_WEB_SCREENSHOT", tmp_path / "web-page.png"))
    page.locator("body").screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    clear_pad(page)                                                 # a character of no taught class
    draw(page, glyph_strokes(vinyals_test_drawings[200, 0]))
    last = settled(page)
    check_parity(last, clf)
    assert last["label"] == "unknown" and page.locator("#prediction").inner_text() == "unknown"
    assert clf.decision_function([last["pixels"]])[0].max() < clf.threshold_for(2) - 1    # not a near miss

    page.locator("#classes li[data-label=gamma] button").click()  # forget gamma
    clear_pad(page)
    draw(page, glyph_strokes(vinyals_test_drawings[101, 6]))
    last = settled(page)
    assert last["classes"] == ["alpha", "beta"]
    clf.forget("gamma")
    check_parity(last, clf)


def test_encrypted_state_round_trip(browser, vinyals_test_drawings, tmp_path):
    from edgemeta.runtime import FewShotClassifier
    from edgemeta.runtime.state import decode_state

    page = browser.open()
    for label, c in {"one": 7, "two": 60}.items():
        teach(page, label, [vinyals_test_drawings[c, 0]])
    clear_pad(page)
    draw(page, glyph_strokes(vinyals_test_drawings[7, 3]))
    before = settled(page)

    page.fill("#passphrase", PASSPHRASE)
    page.click("#save")
    page.evaluate("window.__edgemeta.idle()")
    assert "saved 2 class" in page.locator("#state-message").inner_text()
    record = page.evaluate("""() => new Promise((resolve, reject) => {
        const open = indexedDB.open('edgemeta-web');
        open.onsuccess = () => { const get = open.result.transaction('states').objectStore('states').getAll();
          get.onsuccess = () => resolve(get.result.map((r) => ({...r, salt: Array.from(r.salt), state: Array.from(r.state)})));
          get.onerror = () => reject(get.error); };
        open.onerror = () => reject(open.error); })""")
    assert len(record) == 1
    record = record[0]
    stored = page.evaluate("""async () => ({ local: localStorage.length, session: sessionStorage.length,
        caches: (await caches.keys()).length, dbs: (await indexedDB.databases()).map((d) => d.name) })""")
    assert stored == {"local": 0, "session": 0, "caches": 0, "dbs": ["edgemeta-web"]}   # nothing else kept
    state, salt = bytes(record["state"]), bytes(record["salt"])
    assert record["kdf"] == "PBKDF2-SHA256" and len(salt) == 16 and record["iterations"] >= 100_000
    assert b"aes-256-gcm" in state[:200]

    path = tmp_path / "web.state"                                   # the same bytes in the Python runtime
    path.write_bytes(state)
    key = hashlib.pbkdf2_hmac("sha256", PASSPHRASE.encode(), salt, record["iterations"], 32)
    held = decode_state(state, key)                                 # one 64-d embedding per sample, no pixels
    assert held.labels == ["one", "two"] and held.embeddings.shape == (2, 64) and held.unlabeled is None
    check_parity(before, FewShotClassifier.load(BUNDLE, path, key=key))

    page = browser.open()                                           # a fresh page: nothing held
    assert page.evaluate("window.__edgemeta.clf.classes") in (None, [])
    page.fill("#passphrase", "not the passphrase")
    page.click("#unlock")
    page.evaluate("window.__edgemeta.idle()")
    message = page.locator("#state-message")
    assert "wrong passphrase" in message.inner_text() and message.is_visible()
    assert "error" in (message.get_attribute("class") or "")
    assert page.evaluate("window.__edgemeta.clf.classes") in (None, [])

    page.fill("#passphrase", PASSPHRASE)
    page.click("#unlock")
    page.evaluate("window.__edgemeta.idle()")
    assert "unlocked 2 class" in message.inner_text()
    draw(page, glyph_strokes(vinyals_test_drawings[7, 3]))
    after = settled(page)
    assert np.array_equal(after["pixels"], before["pixels"])
    assert after["label"] == before["label"] and after["classes"] == before["classes"]
    np.testing.assert_allclose(after["probs"], before["probs"], atol=1e-6, rtol=0)


PUT_RECORD = """([bundle, record]) => new Promise((resolve, reject) => {
    const fix = (v) => Array.isArray(v) ? new Uint8Array(v) : v;
    const rec = {...record, salt: fix(record.salt), state: fix(record.state)};
    const open = indexedDB.open('edgemeta-web', 1);
    open.onupgradeneeded = () => open.result.createObjectStore('states');
    open.onsuccess = () => { const tx = open.result.transaction('states', 'readwrite');
      tx.objectStore('states').put(rec, bundle); tx.oncomplete = () => { open.result.close(); resolve(); };
      tx.onerror = () => reject(tx.error); };
    open.onerror = () => reject(open.error); })"""


def test_state_saved_by_python_unlocks_and_damaged_records_are_refused(browser, tmp_path):
    from edgemeta.runtime import FewShotClassifier

    rng = np.random.default_rng(0)
    images = rng.random((4, 28, 28)) < 0.2
    salt, iterations = bytes(range(16)), 1000
    key = hashlib.pbkdf2_hmac("sha256", PASSPHRASE.encode(), salt, iterations, 32)
    FewShotClassifier(BUNDLE).fit(images, ["p", "p", "q", "q"]).save(tmp_path / "py.state", key=key)
    good = list((tmp_path / "py.state").read_bytes())
    flipped = good.copy()
    flipped[-20] ^= 0x01
    record = {"format": "edgemeta-web-state-1", "bundle": "models/omniglot-conv4-proto/", "kdf": "PBKDF2-SHA256",
              "salt": list(salt), "iterations": iterations, "state": good, "savedAt": "by the Python runtime"}
    cases = [({"state": flipped}, "wrong passphrase (or the saved state is damaged)"),
             ({"state": good[:40]}, "wrong passphrase (or the saved state is damaged)"),
             ({"iterations": 10**12}, "is damaged"),
             ({"salt": "not bytes"}, "is damaged"),
             ({"format": "something else"}, "is damaged")]
    page = browser.open()
    page.fill("#passphrase", PASSPHRASE)
    message = page.locator("#state-message")
    for change, expected in cases:
        page.evaluate(PUT_RECORD, ["models/omniglot-conv4-proto/", {**record, **change}])
        page.click("#unlock")
        page.evaluate("window.__edgemeta.idle()")
        assert expected in message.inner_text(), (change.keys(), message.inner_text())
        assert "error" in (message.get_attribute("class") or "")
        assert page.evaluate("window.__edgemeta.clf.classes") in (None, [])
    page.evaluate(PUT_RECORD, ["models/omniglot-conv4-proto/", record])     # the undamaged Python state
    page.click("#unlock")
    page.evaluate("window.__edgemeta.idle()")
    assert "unlocked 2 class" in message.inner_text()
    assert page.locator("#classes li").evaluate_all("els => els.map(e => e.dataset.label)") == ["p", "q"]
    page.click("#erase")
    page.evaluate("window.__edgemeta.idle()")


def test_camera_frames_on_the_photo_bundle_match_python(browser, tmp_path):
    from edgemeta.runtime import FewShotClassifier

    page = browser.open("?bundle=models/mini-imagenet-conv4/")
    assert page.locator("#camera-box").is_visible()
    page.click("#camera-start")
    assert wait_until(page, "document.getElementById('camera').videoWidth > 0", 10)
    for label in ("left", "right"):                   # Chromium's fake camera: a moving test pattern
        page.wait_for_timeout(350)
        page.click("#add-sample")
        page.fill("#label", label)
        page.click("#learn")
        page.evaluate("window.__edgemeta.idle()")
    last = settled(page)
    assert last["pixels"].shape == (240, 320, 4)
    assert last["classes"] == ["left", "right"]
    # the page dropped the frames it learned from; the state it saves holds their embeddings
    page.click("#camera-start")                       # now "Stop camera": the stream ends
    assert page.evaluate("document.getElementById('camera').srcObject") is None
    assert page.locator("#camera-start").inner_text() == "Start camera"
    path = tmp_path / "camera.state"
    path.write_bytes(base64.b64decode(page.evaluate(f"async () => ({B64})(await window.__edgemeta.clf.saveState({{}}))")))
    check_parity(last, FewShotClassifier.load(PHOTO_BUNDLE, path))


def test_every_listed_bundle_loads_in_the_page(browser):
    entries = json.loads((web_harness.WEB / "bundles.json").read_text())
    assert entries[0]["path"] == "models/omniglot-conv4-proto/"               # the default
    for entry in entries:
        assert (REPO / entry["path"] / "manifest.json").is_file(), entry
        page = browser.open(f"?bundle={entry['path']}")
        assert page.evaluate("window.__edgemeta.bundlePath") == entry["path"]
        assert page.locator("#bundle").input_value() == entry["path"]
        assert page.locator("#draw-box" if entry["input"] == "draw" else "#camera-box").is_visible()
        assert page.locator("#status").inner_text().startswith("ready")


def test_wasm_threads_run_cross_origin_isolated(browser):
    workers: list[str] = []

    def on_worker(worker: Any) -> None:
        workers.append(worker.url)

    browser.page.on("worker", on_worker)
    page = browser.open("?threads=2")
    answer = page.evaluate("""async () => {
        const img = (k) => ({ data: Uint8Array.from({ length: 28 * 28 }, (_, i) => ((i * (k + 3)) % 11 < 2 ? 255 : 0)),
                               height: 28, width: 28 });
        const clf = window.__edgemeta.clf;
        await clf.fit([img(0), img(1)], ['a', 'b']);
        return { isolated: crossOriginIsolated, threads: window.__edgemeta.threads,
                 label: (await clf.predict([img(1)]))[0] }; }""")
    assert answer == {"isolated": True, "threads": 2, "label": "b"}
    assert workers and all(w.startswith(browser.origin + "/examples/web/node_modules/onnxruntime-web/") for w in workers)
    assert "not cross-origin isolated" not in page.locator("#status").inner_text()
    browser.page.remove_listener("worker", on_worker)


def test_a_missing_runtime_or_onnxruntime_is_named_with_its_fix(browser):
    page = browser.page
    for pattern, expected in [("**/ort.wasm.min.mjs", "npm ci"), ("**/js/src/index.js", "serve the repository root")]:
        page.route(pattern, lambda route: route.fulfill(status=404, body="not found"))
        try:
            page.goto(f"{browser.origin}/examples/web/")
            assert wait_until(page, "window.__edgemeta && window.__edgemeta.error", 30)
            status = page.locator("#status")
            assert expected in status.inner_text() and "error" in (status.get_attribute("class") or "")
            assert page.evaluate("window.__edgemeta.ready") is False
        finally:
            page.unroute(pattern)


def test_every_request_stays_local_and_the_csp_refuses_other_origins(browser):
    page = browser.open()
    origins = {re.match(r"[a-z]+://[^/]+", u).group(0) for u in browser.requests if not u.startswith(("data:", "blob:"))}
    assert origins == {browser.origin}, origins             # this page and every earlier one in this module
    assert any(u.endswith(".wasm") for u in browser.requests)
    assert any(u.endswith("/js/src/index.js") for u in browser.requests)
    assert any(u.endswith("/backbone.int8.onnx") for u in browser.requests)

    seen = len(browser.requests)                            # now try to reach another origin from the page
    blocked = page.evaluate("""async () => {
        const out = {};
        try { await fetch('http://127.0.0.2:9/x'); out.fetch = 'loaded'; } catch (e) { out.fetch = 'refused'; }
        const s = document.createElement('script'); s.textContent = 'window.__inline = 1'; document.body.append(s);
        const img = new Image(); img.src = 'http://127.0.0.2:9/pixel.png';
        await new Promise((r) => setTimeout(r, 200));
        out.inline = window.__inline === undefined ? 'refused' : 'ran';
        out.violations = window.__violations;
        return out; }""")
    assert blocked["fetch"] == "refused" and blocked["inline"] == "refused"
    directives = {v["directive"] for v in blocked["violations"]}
    assert {"connect-src", "script-src-elem", "img-src"} <= directives, blocked
    for url in browser.requests[seen:]:                     # announced to the browser, never sent
        assert url.startswith(browser.origin) or "csp" in browser.failed.get(url, "").lower(), (url, browser.failed)


@pytest.mark.slow          # its own server, browser and three page loads plus Node: about 15 s
def test_web_bench_measures_the_page_and_node():
    why = web_harness.missing()
    if why:
        pytest.skip(why)
    out = subprocess.run([sys.executable, str(REPO / "tools" / "web_bench.py"), "--rounds", "1", "--repeats", "2",
                          "--threads", "1", "--json"], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    (run,) = result["rounds"][0]["browser"]
    assert run["threads"] == 1 and run["cold"]["isolated"] and run["outside_requests"] == []
    for start in ("cold", "warm"):
        assert 0 < run[start]["runtime"] <= run[start]["ready"] <= run[start]["first_prediction"]
    assert run["steady"]["precision"] == "int8" and run["steady"]["adapt_5w5s"]["repeats"] == 2
    wasm = (web_harness.WEB / "node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm").stat().st_size
    bundle = sum((BUNDLE / f).stat().st_size for f in ("manifest.json", "backbone.onnx", "backbone.int8.onnx",
                                                        "adapt.onnx", "classify.onnx"))
    assert run["bytes"]["onnxruntime-web wasm"] == wasm and run["bytes"]["bundle"] == bundle
    cpu = run["steady"]["adapt_5w5s_cpu"]
    assert 0 < cpu["main_thread_cpu_ms"] <= cpu["process_cpu_ms"]
    node = result["rounds"][0]["node"]
    if (REPO / "examples" / "node" / "node_modules").is_dir():
        assert node["adapt_5w5s"]["median_ms"] > 0 and node["adapt_5w5s_cpu"]["cpu_ms"] > 0
