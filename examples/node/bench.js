#!/usr/bin/env node
/**
 * Device-style latency of the JavaScript runtime (edgemeta-js) in Node.js on a bundle, one intra-op thread.
 *
 *   node bench.js [BUNDLE] [--repeats N] [--precision auto|fp32|int8] [--json]
 *
 * - adapt: fit() on a 5-way 5-shot support set of raw 105x105 uint8 images (preprocess + resize,
 *   backbone embedding of the 25 images, adapt.onnx), i.e. what "the user added their samples" costs;
 * - predict 1 image: predict() on one raw 105x105 image (preprocess + embed + classify + argmax);
 * - predict in a batch of 75: the same per image when 75 images come at once;
 * - load: FewShotClassifier.load from the folder (read, verify every sha256 and the digest, open the sessions);
 * - state: saveState / loadState of the 5-way 5-shot classifier, plain and AES-256-GCM (in memory; the
 *   Python runtime's save also writes the file atomically, so bench_python.py has no counterpart).
 * Median (and 10th / 90th percentiles) over N repeats after 10 warm-up runs. The images are a fixed
 * synthetic pattern: latency does not depend on what is drawn. bench_python.py measures the Python
 * runtime the same way.
 */

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { FewShotClassifier } from 'edgemeta-js';
import { sourceFromPath } from 'edgemeta-js/node';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const ortVersion = JSON.parse(fs.readFileSync(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'), 'utf8')).version;

const args = process.argv.slice(2);
const flag = (name, dflt) => { const i = args.indexOf(name); return i >= 0 ? args.splice(i, 2)[1] : dflt; };
const repeats = Number(flag('--repeats', 100));
const precision = flag('--precision', 'auto');
const asJson = args.includes('--json') && args.splice(args.indexOf('--json'), 1);
const bundlePath = args[0] || path.join(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
const WARMUP = 10;

/** Image k: uint8 105x105, strokes (255) on a deterministic pattern; the same in bench_python.py. */
function image(k) {
  const data = new Uint8Array(105 * 105);
  for (let r = 0; r < 105; r++) for (let c = 0; c < 105; c++) data[r * 105 + c] = (r * 7 + c * 13 + k * 17) % 23 < 3 ? 255 : 0;
  return { data, height: 105, width: 105 };
}

async function timeit(fn, runs = repeats) {
  for (let i = 0; i < WARMUP; i++) await fn();
  const ms = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    await fn();
    ms.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  ms.sort((a, b) => a - b);
  const q = (p) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))];
  return { median_ms: q(0.5), p10_ms: q(0.1), p90_ms: q(0.9), repeats: runs };
}

async function main() {
  const clf = await FewShotClassifier.load(ort, sourceFromPath(bundlePath), { threads: 1, precision });
  const support = Array.from({ length: 25 }, (_, k) => image(k));
  const labels = Array.from({ length: 25 }, (_, k) => `class${Math.floor(k / 5)}`);
  const one = [image(100)];
  const batch = Array.from({ length: 75 }, (_, k) => image(200 + k));
  await clf.fit(support, labels);
  const res = {
    runtime: `node ${process.version}, onnxruntime-node ${ortVersion}`,
    bundle: bundlePath,
    threads: 1,
    precision: clf.bundle.precision,
    adapt_5w5s: await timeit(() => clf.fit(support, labels)),
    predict_1: await timeit(() => clf.predict(one)),
    predict_batch75: await timeit(() => clf.predict(batch)),
  };
  res.predict_batch75_per_image_ms = res.predict_batch75.median_ms / 75;
  const load = () => FewShotClassifier.load(ort, sourceFromPath(bundlePath), { threads: 1, precision }).then((c) => c.bundle.release());
  res.load_bundle = await timeit(load, Math.min(repeats, 30));
  const key = new Uint8Array(32).fill(7);
  const [plain, sealed] = [await clf.saveState(), await clf.saveState({ key })];
  res.state_bytes = plain.length;
  res.save_state = await timeit(() => clf.saveState());
  res.load_state = await timeit(() => clf.loadState(plain));
  res.save_state_encrypted = await timeit(() => clf.saveState({ key }));
  res.load_state_encrypted = await timeit(() => clf.loadState(sealed, { key }));
  if (asJson) { console.log(JSON.stringify(res, null, 2)); return; }
  const f = (r) => `median ${r.median_ms.toFixed(3)} ms (p10 ${r.p10_ms.toFixed(3)}, p90 ${r.p90_ms.toFixed(3)}) over ${r.repeats}`;
  console.log(`${res.runtime}, 1 intra-op thread, ${res.precision} backbone, bundle ${bundlePath}`);
  console.log(`adapt 5-way 5-shot (25 raw 105x105 images, embedding included): ${f(res.adapt_5w5s)}`);
  console.log(`predict 1 image:                                              ${f(res.predict_1)}`);
  console.log(`predict 75 images at once:                                    ${res.predict_batch75_per_image_ms.toFixed(3)} ms per image`);
  console.log(`load the bundle (read, verify, open sessions):                ${f(res.load_bundle)}`);
  console.log(`saveState / loadState (${res.state_bytes} bytes, 25 embeddings):        ${f(res.save_state)} / ${f(res.load_state)}`);
  console.log(`the same encrypted (AES-256-GCM):                             ${f(res.save_state_encrypted)} / ${f(res.load_state_encrypted)}`);
}

main().catch((e) => { console.error(`${e.name}: ${e.message}`); process.exit(1); });
