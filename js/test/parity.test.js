/**
 * JavaScript runtime (over onnxruntime-node) == Python runtime, on real bundles with real onnxruntime (no mocks).
 *
 * The fixtures in test/fixtures are what the Python runtime computed (tools/node_fixture.py; the
 * bundles are the shipped ones in ../../models, by relative path), so `npm test` runs on its own.
 * EDGEMETA_NODE_FIXTURES=/some/folder points the test at a larger set written elsewhere with
 * `python tools/node_fixture.py /some/folder --full` (every adaptation method, a .zip bundle; the
 * pytest wrapper tests/test_node_example.py does this).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import crypto from 'node:crypto';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { sourceFromPath as at } from '../src/node.js';
import { resealed, withBundleCopy } from './bundle_copies.js';

const __filename = fileURLToPath(import.meta.url);
const __dirname = path.dirname(__filename);

const FIXTURES = process.env.EDGEMETA_NODE_FIXTURES || path.join(__dirname, 'fixtures');
const LOGIT_TOL = 1e-4;
const PROBA_TOL = 1e-5;
const MIN_COMPARED = 8; // every parity case compares at least this many queries

function readFixture(name) {
  const file = path.join(FIXTURES, name);
  if (!fs.existsSync(file)) {
    throw new Error(`missing fixture ${file}: regenerate the fixtures from the repository root: ` +
      '`python tools/node_fixture.py js/test/fixtures` (or set EDGEMETA_NODE_FIXTURES)');
  }
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const index = readFixture('index.json');
const fixturePath = (p) => path.resolve(FIXTURES, p); // paths in the fixtures are relative to their folder
const SHIPPED = fixturePath(index.shipped);

/** Packed fixture bytes (zlib, base64) -> a fresh, aligned Uint8Array. */
const unpack = (b64) => new Uint8Array(zlib.inflateSync(Buffer.from(b64, 'base64')));

/** A fixture image -> the {data, height, width[, channels][, dtype]} object the library takes. */
function image(e) {
  const bytes = unpack(e.zlib);
  const { height, width } = e;
  const channels = e.channels ?? 1;
  // channels is left out for single-channel and RGBA images: the library infers it from the length
  const extra = channels === 3 ? { channels } : {};
  if (channels === 4 && e.dtype === 'uint8') return { data: new Uint8ClampedArray(bytes.buffer), height, width }; // as ImageData gives
  if (e.dtype === 'float32') return { data: new Float32Array(bytes.buffer), height, width, ...extra };
  if (e.dtype === 'uint8') return { data: bytes, height, width, ...extra };
  if (e.dtype === 'bool') return { data: bytes, height, width, dtype: 'bool' };
  throw new Error(`unknown fixture dtype ${e.dtype}`);
}

function assertMatches(got, want, what, { bitIdentical = false } = {}) {
  const { classes, logits, proba, predictions } = got;
  assert.deepEqual(classes, want.classes, `${what}: classes`);
  assert.equal(logits.n, want.logits.length, `${what}: rows`);
  assert.equal(logits.c, want.classes.length, `${what}: columns`);
  let worst = 0;
  want.logits.forEach((row, r) => row.forEach((v, j) => {
    worst = Math.max(worst, Math.abs(logits.data[r * logits.c + j] - v));
  }));
  assert.ok(worst <= LOGIT_TOL, `${what}: logits differ from Python's by ${worst} (limit ${LOGIT_TOL})`);
  if (bitIdentical) assert.equal(worst, 0, `${what}: logits should be bit-identical to Python's, differ by ${worst}`);
  want.proba.forEach((row, r) => row.forEach((v, j) => {
    assert.ok(Math.abs(proba[r][j] - v) <= PROBA_TOL, `${what}: probability [${r}][${j}] ${proba[r][j]} vs ${v}`);
  }));
  assert.deepEqual(predictions, want.predictions, `${what}: predictions`);
  if (want.open_set && want.open_set.error) {
    assert.ok(got.openSet instanceof em.InputError && /no calibrated open-set threshold/.test(got.openSet.message),
      `${what}: predict({rejectUnknown: true}) should be refused like Python's: ${want.open_set.error}`);
  } else if (want.open_set) {
    assert.deepEqual(got.openSet, want.open_set.predictions, `${what}: open-set predictions`);
  }
  return worst;
}

async function answer(clf, query) {
  const [logits, proba, predictions] = [await clf.decisionFunction(query), await clf.predictProba(query), await clf.predict(query)];
  let openSet;
  try { openSet = await clf.predict(query, { rejectUnknown: true }); } catch (e) { openSet = e; }
  return { classes: clf.classes, logits, proba, predictions, openSet };
}

// ------------------------------------------------------------------------- canonical JSON + digest

test('canonical manifest JSON and digest match Python byte for byte', async () => {
  const cases = readFixture('json_cases.json');
  assert.ok(cases.length >= 6, `only ${cases.length} JSON cases`);
  for (const c of cases) {
    assert.equal(em.canonicalManifest(c.text), c.canonical, `canonical form of ${c.name}`);
    assert.equal(await em.manifestDigest(c.text), c.digest, `digest of ${c.name}`);
  }
});

test('Python float repr rules', () => {
  const cases = [[1, '1.0'], [-0, '-0.0'], [1e-4, '0.0001'], [1e-5, '1e-05'], [1e16, '1e+16'], [1e15, '1000000000000000.0'],
    [0.1, '0.1'], [1.5e-7, '1.5e-07'], [5e-324, '5e-324'], [1e22, '1e+22'], [123.456, '123.456'], [NaN, 'NaN'], [-Infinity, '-Infinity']];
  for (const [x, want] of cases) assert.equal(em.pyFloatRepr(x), want, String(x));
});

// --------------------------------------------------------------------------- parity with Python

const bundles = new Map();
async function bundleFor(p, precision = 'auto') {
  const key = `${precision}:${p}`;
  if (!bundles.has(key)) bundles.set(key, await em.Bundle.load(ort, at(p), { threads: 1, precision }));
  return bundles.get(key);
}

const cases = index.cases.map((name) => readFixture(`case-${name}.json`));

test('near ties dropped from the comparison are bounded, and every case compares enough queries', () => {
  let dropped = 0;
  let total = 0;
  for (const c of cases) {
    assert.equal(c.query.length, c.queries_total - c.dropped_near_ties, `${c.name}: query count`);
    assert.ok(c.query.length >= MIN_COMPARED, `${c.name}: only ${c.query.length} queries compared (at least ${MIN_COMPARED})`);
    dropped += c.dropped_near_ties;
    total += c.queries_total;
  }
  assert.ok(cases.length >= 5, `only ${cases.length} parity cases`);
  assert.ok(dropped <= index.max_dropped * total && index.max_dropped <= 0.02,
    `${dropped} of ${total} queries dropped as near ties (at most ${100 * index.max_dropped} %)`);
});

for (const c of cases) {
  const { name } = c;
  test(`parity with the Python runtime: ${name}`, async (t) => {
    const clf = new em.FewShotClassifier(await bundleFor(fixturePath(c.bundle), c.precision), { ink: c.ink });
    assert.equal(clf.bundle.method, c.method);
    assert.equal(clf.bundle.precision, c.python_precision, 'the same backbone graph as the Python runtime');
    const query = c.query.map(image);
    if (c.preprocessed) {
      const want = new Float32Array(unpack(c.preprocessed).buffer);
      const got = clf.bundle.preprocess(query, { ink: c.ink }).data;
      assert.equal(got.length, want.length);
      const diff = got.findIndex((v, k) => !Object.is(v, want[k]));
      assert.equal(diff, -1, `${name}: preprocessed pixel ${diff} is ${got[diff]}, Python's ${want[diff]}`);
    }
    if (c.preprocessed_sha256) { // colour: the whole [N, 3, H, W] float32 batch, byte for byte
      const got = clf.bundle.preprocess(query, { ink: c.ink });
      assert.equal(got.channels, clf.bundle.preprocessSpec.channels);
      const digest = crypto.createHash('sha256').update(Buffer.from(got.data.buffer, got.data.byteOffset, got.data.byteLength)).digest('hex');
      assert.equal(digest, c.preprocessed_sha256, `${name}: the preprocessed batch differs from Python's`);
    }
    if (!c.steps) {
      await clf.fit(c.support.map(image), c.labels);
      const worst = assertMatches(await answer(clf, query), c.expected, name, { bitIdentical: !!c.bit_identical });
      t.diagnostic(`${query.length} queries, max |logit - python| = ${worst.toExponential(2)}`);
      return;
    }
    const forgotten = new Set();
    let worst = 0;
    for (const [k, step] of c.steps.entries()) {
      const what = `${name} step ${k} (${step.op}${step.label ? ` ${step.label}` : ''})`;
      if (step.op === 'fit') await clf.fit(step.images.map(image), step.labels);
      else if (step.op === 'forget') await clf.forget(step.label);
      else if (step.op === 'addClass') await clf.addClass(step.label, step.images.map(image));
      else if (step.op === 'partialFit') await clf.partialFit(step.images.map(image), step.labels);
      else throw new Error(`unknown step ${step.op}`);
      if (step.op === 'forget') forgotten.add(step.label);
      else for (const y of step.labels || [step.label]) forgotten.delete(y);
      const got = await answer(clf, query);
      worst = Math.max(worst, assertMatches(got, step.expected, what));
      for (const y of forgotten) {
        assert.ok(!got.classes.includes(y), `${what}: forgotten class ${y} is still in classes`);
        assert.ok(!got.predictions.includes(y), `${what}: forgotten class ${y} is still predicted`);
      }
    }
    t.diagnostic(`${c.steps.length} steps x ${query.length} queries, max |logit - python| = ${worst.toExponential(2)}`);
  });
}

test('a reformatted manifest (and a .zip bundle, with --full fixtures) give the same answers as the directory', async (t) => {
  const c = readFixture('case-proto-strings.json');
  const query = c.query.map(image);
  const answers = [];
  const paths = await withBundleCopy(SHIPPED, async (reformatted) => {
    fs.copyFileSync(fixturePath(index.reformatted_manifest), path.join(reformatted, 'manifest.json'));
    const all = [SHIPPED, reformatted, ...(index.zip ? [fixturePath(index.zip)] : [])];
    for (const p of all) {
      const clf = await em.FewShotClassifier.load(ort, at(p), { ink: c.ink });
      await clf.fit(c.support.map(image), c.labels);
      answers.push(await answer(clf, query));
      await clf.bundle.release();
    }
    return all;
  }, 'edgemeta-tamper-');
  assert.notEqual(fs.readFileSync(fixturePath(index.reformatted_manifest), 'utf8'), fs.readFileSync(path.join(SHIPPED, 'manifest.json'), 'utf8'));
  answers.slice(1).forEach((a, k) => {
    assertMatches(a, c.expected, paths[k + 1]);
    assert.deepEqual(a.logits.data, answers[0].logits.data);
  });
  if (!index.zip) t.diagnostic('no .zip bundle in these fixtures (written with --full)');
});

// ------------------------------------------------------------------------------------ refusals

async function editManifest(dir, fn) {
  const p = path.join(dir, 'manifest.json');
  fs.writeFileSync(p, await fn(fs.readFileSync(p, 'utf8')));
}

const tampers = [
  ['a flipped byte in backbone.onnx', (d) => {
    const p = path.join(d, 'backbone.onnx');
    const b = fs.readFileSync(p);
    b[b.length >> 1] ^= 0x01;
    fs.writeFileSync(p, b);
  }, /sha256 of backbone\.onnx does not match/],
  ['an edited manifest field (preprocess size)', (d) => editManifest(d, (t) => t.replace(/"size": \[\s*28,\s*28\s*\]/, '"size": [32, 32]')),
    /manifest\.json was altered after export/],
  ['an edited head scale', (d) => editManifest(d, (t) => t.replace('"scale": 0.9389647245407104', '"scale": 0.94')),
    /altered after export/],
  ['a manifest round-tripped through JSON.parse/JSON.stringify (1.0 becomes 1)', (d) => editManifest(d, (t) => JSON.stringify(JSON.parse(t), null, 2)),
    /altered after export/],
  ['a file size written as a float', (d) => editManifest(d, (t) => t.replace('"bytes": 866', '"bytes": 866.0')),
    /manifest entry for "adapt\.onnx" must be \{"sha256": string, "bytes": integer\}/],
  ['a preprocess size that does not fit backbone.onnx (digest recomputed, so only the graph check catches it)', (d) => editManifest(d, async (t) => {
    const edited = t.replace(/"size": \[\s*28,\s*28\s*\]/, '"size": [32, 32]').replace(/"shape": \[\s*null,\s*1,\s*28,\s*28\s*\]/, '"shape": [null, 1, 32, 32]');
    return resealed(edited);
  }), /manifest's input \[1,32,32\] does not match backbone\.onnx's input/],
  ['a truncated adapt.onnx', (d) => {
    const p = path.join(d, 'adapt.onnx');
    fs.writeFileSync(p, fs.readFileSync(p).subarray(0, 100));
  }, /adapt\.onnx is 100 bytes, the manifest says 866/],
  ['a missing classify.onnx', (d) => fs.unlinkSync(path.join(d, 'classify.onnx')), /"classify\.onnx" listed in the manifest is missing/],
  ['format_version 4', (d) => editManifest(d, (t) => t.replace('"format_version": 1', '"format_version": 4')),
    /format version 4 is not supported by this reader \(it reads versions 1, 2 and 3\)/],
  ['another format name', (d) => editManifest(d, (t) => t.replace('"format": "edgemeta-bundle"', '"format": "other"')), /format is "other"/],
  ['a damaged manifest', (d) => editManifest(d, (t) => t.slice(0, 200)), /not valid JSON/],
  ['no manifest', (d) => fs.unlinkSync(path.join(d, 'manifest.json')), /no manifest\.json/],
];

for (const [what, tamper, message] of tampers) {
  test(`refuses a bundle with ${what}`, async () => {
    await withBundleCopy(SHIPPED, async (dir) => {
      await em.Bundle.load(ort, at(dir)); // the untouched copy loads
      await tamper(dir);
      await assert.rejects(em.Bundle.load(ort, at(dir)), (err) => err instanceof em.BundleError && message.test(err.message));
    }, 'edgemeta-tamper-');
  });
}

test('accepts cosmetic manifest edits that keep every value (the digest is over values, not bytes)', async () => {
  await withBundleCopy(SHIPPED, async (dir) => {
    await editManifest(dir, (t) => t.replace('"scale": 0.9389647245407104', '"scale": 9.389647245407104E-1').replace(/\n\s*/g, ' '));
    const b = await em.Bundle.load(ort, at(dir));
    assert.equal(b.manifest.head.scale, 0.9389647245407104);
  }, 'edgemeta-tamper-');
});

test('refuses a path that is not a bundle', async () => {
  await assert.rejects(em.Bundle.load(ort, at(path.join(os.tmpdir(), `nope-${crypto.randomUUID()}`))), /bundle not found/);
  await assert.rejects(em.Bundle.load(ort, at(__filename)), /neither a bundle directory nor a \.zip bundle/);
});

// -------------------------------------------------------------------- forget / add behaviour

test('forget and addClass: a forgotten class is gone, one class left is not enough, re-adding works', async () => {
  const c = readFixture('case-proto-sequence.json');
  const first = c.steps[0];
  const clf = new em.FewShotClassifier(await bundleFor(SHIPPED));
  await clf.fit(first.images.map(image), first.labels);
  const query = c.query.map(image);
  assert.deepEqual(clf.classes, ['a', 'b', 'c', 'd']);
  assert.deepEqual([...clf.classCounts()], [['a', 2], ['b', 2], ['c', 2], ['d', 2]]);
  await clf.forget('c');
  assert.deepEqual(clf.classes, ['a', 'b', 'd']);
  assert.ok(!(await clf.predict(query)).includes('c'));
  assert.equal((await clf.predictProba(query))[0].length, 3);
  await assert.rejects(clf.forget('c'), /cannot forget "c": not a registered class/);
  await clf.forget('a');
  await clf.forget('b');
  assert.equal(clf.classes, null, 'one class left: no head');
  assert.deepEqual([...clf.classCounts()], [['d', 2]]);
  await assert.rejects(clf.predict(query), (e) => e instanceof em.InputError && /needs at least 2.*addClass/.test(e.message));
  await clf.addClass('c', first.images.slice(4, 6).map(image));
  assert.deepEqual(clf.classes, ['c', 'd']);
  assert.deepEqual([...clf.classCounts()], [['c', 2], ['d', 2]]);
  const pred = await clf.predict(query);
  assert.ok(pred.every((y) => y === 'c' || y === 'd'));
  await assert.rejects(clf.addClass(3, first.images.slice(0, 1).map(image)), /labels mix types/);
  await assert.rejects(clf.fit(first.images.slice(0, 2).map(image), ['a', 'a']), /at least 2 different labels/);
  assert.deepEqual(clf.classes, ['c', 'd'], 'a refused fit leaves the classifier as it was');
});

test('labels sort like numpy.unique', () => {
  assert.deepEqual(em.uniqueSorted([10, 2, 100, -7, 2]), [-7, 2, 10, 100]);
  assert.deepEqual(em.uniqueSorted(['b', 'B', '\uffff', '\u{1F600}', 'a', 'é']), ['B', 'a', 'b', 'é', '\uffff', '\u{1F600}']);
});

test('bad images are refused with a reason', async () => {
  const b = await bundleFor(SHIPPED);
  const spec = b.preprocessSpec;
  const bad = new Float32Array(16);
  bad[5] = 1.5;
  assert.throws(() => em.preprocess([{ data: bad, height: 4, width: 4 }], spec), /values in \[0, 1\.5\]/);
  assert.throws(() => em.preprocess([{ data: new Float32Array(15), height: 4, width: 4 }], spec), /expected height \* width = 16/);
  assert.throws(() => em.preprocess([], spec), /empty/);
  assert.throws(() => em.preprocess([{ data: new Float32Array(9), height: 3, width: 3 }], spec), /size 3x3; expected 2-D images at least 4x4/);
  assert.throws(() => em.preprocess([{ data: new Float32Array(500), height: 10, width: 50 }], spec), /aspect ratio within 4:1/);
  assert.throws(() => em.preprocess([{ data: new Float32Array(16), height: 4, width: 4 }], { ...spec, resize: 'bilinear' }),
    /not implemented in the JavaScript runtime/);
  // a bilinear bundle still takes images already at its size (no resize needed)
  assert.equal(em.preprocess([{ data: new Float32Array(28 * 28), height: 28, width: 28 }], { ...spec, resize: 'bilinear' }).n, 1);
  assert.deepEqual(Array.from(em.nearestIndices(105, 28)).slice(0, 5), [1, 5, 9, 13, 16]);
  // Pillow's running sum, not floor((i + 0.5) * step): 64 -> 28 differs at i = 3 (8 exactly vs 7.999...)
  assert.deepEqual(Array.from(em.nearestIndices(64, 28)).slice(0, 5), [1, 3, 5, 7, 10]);
});
