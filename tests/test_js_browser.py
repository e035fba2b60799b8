"""The JavaScript runtime's core (``js/src``) in a real browser: Debian's headless Chromium over
onnxruntime-web (the page's copy in ``examples/web/node_modules``), served from 127.0.0.1 by
``tools/serve_web.py``, driven through ``tools/web_harness.py``.

What the page test (``tests/test_web_page.py``) does not reach: a bundle ``.zip`` given as bytes
(``zipSource``: the browser's ``DecompressionStream('deflate-raw')``, a listed entry inflating past its
declared size refused, an unlisted 16 MiB bomb never inflated), the Python runtime's logits (fp32,
within 1e-4 relative: the wasm kernels sum in another order) and predictions,
and a state saved in the browser under a ``deriveStateKey`` key that the Python runtime opens with
``hashlib.pbkdf2_hmac``'s key. Skipped where Chromium, playwright or the page's npm packages are missing.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgemeta.runtime import FewShotClassifier

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "models" / "omniglot-conv4-proto"
ORT = "/examples/web/node_modules/onnxruntime-web/dist/"


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("web_harness", REPO / "tools" / "web_harness.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _zip(entries: list[tuple[str, bytes, bytes, int]]) -> bytes:
    """A zip of deflated entries (name, data for the CRC, raw deflate stream, declared size), byte by byte."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, raw, declared in entries:
        fields = struct.pack("<HHHHIIIHH", 0, 8, 0, 0x21, zlib.crc32(data), len(raw), declared, len(name), 0)
        offset = out.tell()
        out.write(struct.pack("<IH", 0x04034B50, 20) + fields + name.encode() + raw)
        central.write(struct.pack("<IHH", 0x02014B50, 20, 20) + fields + struct.pack("<HHHII", 0, 0, 0, 0, offset)
                      + name.encode())
    cd = central.getvalue()
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd), out.tell(), 0)
    return out.getvalue() + cd + end


def _deflate(data: bytes) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


def _bundle_zip(bomb_in: str | None = None) -> bytes:
    """The shipped proto bundle as a .zip plus an unlisted 16 MiB bomb; with ``bomb_in``, that listed
    entry's stream inflates to 16 MiB while declaring the manifest's size."""
    entries = []
    for f in sorted(PROTO.iterdir()):
        data = f.read_bytes()
        raw = _deflate(bytes(16 << 20)) if f.name == bomb_in else _deflate(data)
        entries.append((f.name, data, raw, len(data)))
    entries.append(("zeros.bin", b"", _deflate(bytes(16 << 20)), 16 << 20))
    return _zip(entries)


SCRIPT = """async ({ ortUrl, zips, images, labels, passphrase, salt }) => {
  const ort = await import(ortUrl + 'ort.wasm.min.mjs');
  ort.env.wasm.wasmPaths = ortUrl;
  ort.env.wasm.numThreads = 1;
  const em = await import('/js/src/index.js');
  const bytes = (b64) => Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const image = (b64) => ({ data: new Float32Array(bytes(b64).buffer), height: 28, width: 28 });
  const refused = [];
  for (const z of zips.slice(1)) {
    try { await em.Bundle.load(ort, em.zipSource(bytes(z), { name: 'hostile.zip' })); refused.push(null); }
    catch (e) { refused.push([e.name, e.message]); }
  }
  // fp32: int8 kernels differ between onnxruntime's wasm and native builds by about 1e-4
  const clf = await em.FewShotClassifier.load(ort, em.zipSource(bytes(zips[0]), { name: 'proto.zip' }), { precision: 'fp32' });
  const support = images.slice(0, labels.length).map(image);
  const query = images.slice(labels.length).map(image);
  await clf.fit(support, labels);
  const logits = await clf.decisionFunction(query);
  const key = await em.deriveStateKey(passphrase, bytes(salt), 1000);
  const state = await clf.saveState({ key });
  let s = '';
  for (const b of state) s += String.fromCharCode(b);
  return { classes: clf.classes, logits: Array.from(logits.data), predictions: await clf.predict(query),
           precision: clf.bundle.precision, refused, state: btoa(s) };
}"""


def test_the_core_runs_in_chromium_with_zip_bytes_and_its_state_opens_in_python(tmp_path):
    harness = _harness()
    why = harness.missing()
    if why:
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    rng = np.random.default_rng(5)
    images = (rng.random((15, 28, 28)) < 0.15).astype(np.float32)
    labels = ["b", "b", "a", "a", "c", "c"]
    salt = bytes(range(16))
    zips = [_bundle_zip(), _bundle_zip(bomb_in="backbone.onnx")]
    server, origin = harness.start_server()
    try:
        with sync_playwright() as pw:
            ctx = harness.launch(pw, tmp_path / "profile")
            try:
                page = ctx.new_page()
                page.goto(f"{origin}/js/README.md")        # an http://127.0.0.1 page: a secure context (WebCrypto)
                got = page.evaluate(SCRIPT, {
                    "ortUrl": ORT, "zips": [base64.b64encode(z).decode() for z in zips], "labels": labels,
                    "images": [base64.b64encode(x.astype("<f4").tobytes()).decode() for x in images],
                    "passphrase": "pässwörd", "salt": base64.b64encode(salt).decode()})
            finally:
                ctx.close()
    finally:
        server.kill()
        server.wait()
    assert got["precision"] == "fp32"
    assert got["refused"][0][0] == "BundleError"
    assert 'zip entry "backbone.onnx" inflates to more than' in got["refused"][0][1]
    clf = FewShotClassifier(PROTO, precision=got["precision"]).fit(images[:6], labels)
    query = images[6:]
    assert got["classes"] == list(clf.classes_) == ["a", "b", "c"]
    # onnxruntime-web's wasm kernels sum in another order than the native build: logits agree to 1e-4 relative
    np.testing.assert_allclose(np.array(got["logits"], np.float32).reshape(9, 3), clf.decision_function(query),
                               atol=1e-4, rtol=1e-4)
    assert got["predictions"] == list(clf.predict(query))
    (tmp_path / "browser.state").write_bytes(base64.b64decode(got["state"]))
    key = hashlib.pbkdf2_hmac("sha256", "pässwörd".encode(), salt, 1000, 32)
    back = FewShotClassifier.load(PROTO, tmp_path / "browser.state", key=key, precision=got["precision"])
    assert list(back.predict(query)) == got["predictions"]
