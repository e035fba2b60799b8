/**
 * Semi-supervised refinement in the JavaScript runtime: bundle format version 3 (the refine section) is read by
 * the same rules as the Python reader (contract/manifest_schema.py V3_SECTIONS).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { sourceFromPath as at } from '../src/node.js';
import { parseResealed as parse, relisted, resealed, withBundleCopy } from './bundle_copies.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const { writerVersion, bounded } = em;

const SHIPPED = path.resolve(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
const shippedText = fs.readFileSync(path.join(SHIPPED, 'manifest.json'), 'utf8');
const REFINE = '{"graph": "refine.onnx", "rule": "masked_soft_kmeans", "outputs": ["prototypes"], "max_unlabeled": 1000}';


/** The shipped manifest text with a refine section (and its graph listed) at `version`. */
function withRefine(version = 3, section = REFINE) {
  return shippedText.replace('"format_version": 1', `"format_version": ${version}, "refine": ${section}`)
    .replace('"files": {', `"files": {"refine.onnx": {"sha256": "${'0'.repeat(64)}", "bytes": 10}, `);
}

test('format 3: a refine section is read in a version-3 manifest; a plain manifest is written as version 2', async () => {
  const m = await parse(withRefine());
  assert.equal(m.format_version, 3);
  assert.equal(m.refine.max_unlabeled, 1000);
  assert.equal(writerVersion(m), 3);
  assert.equal(writerVersion(await parse(shippedText)), 2);
  assert.equal((await parse(shippedText.replace('"format_version": 1', '"format_version": 3'))).format_version, 3);
});

const refused = [
  ['a refine section in a version-2 manifest', () => withRefine(2), /manifest section refine needs format version 3, but format_version is 2/],
  ['a refine section in a version-1 manifest', () => withRefine(1), /manifest section refine needs format version 3, but format_version is 1/],
  ['another refine graph name', () => withRefine(3, REFINE.replace('"graph": "refine.onnx"', '"graph": "x.onnx"')), /refine\.graph must be "refine\.onnx"/],
  ['another rule', () => withRefine(3, REFINE.replace('masked_soft_kmeans', 'kmeans')), /refine\.rule must be "masked_soft_kmeans"/],
  ['max_unlabeled 0', () => withRefine(3, REFINE.replace('1000', '0')), /refine\.max_unlabeled must be an integer in \[1, 1000000\]/],
  ['max_unlabeled as a float', () => withRefine(3, REFINE.replace('1000', '1000.0')), /refine\.max_unlabeled must be an integer/],
  ['refine outputs unlike the head', () => withRefine(3, REFINE.replace('["prototypes"]', '["weight"]')),
    /refine\.outputs is \["weight"\]; expected head\.outputs \["prototypes"\]/],
  ['a refine graph not listed', () => withRefine().replace(/"refine\.onnx": \{[^}]*\}, /, ''),
    /must list the refine graph \(refine\.onnx\) under files/],
];

for (const [what, text, message] of refused) {
  test(`format 3: refuses ${what}`, async () => {
    await assert.rejects(parse(text()), (err) => err instanceof em.BundleError && message.test(err.message));
  });
}

// ------------------------------------------------------------------ parity with the Python runtime


const FIXTURE = path.join(__dirname, 'refine-fixture', 'refine-case.json');
const LOGIT_TOL = 1e-4; // the tolerance of the other parity tests (parity.test.js)
const PROTO_TOL = 1e-5;
const fx = JSON.parse(fs.readFileSync(FIXTURE, 'utf8'));
const unpackF32 = (b64) => { const b = zlib.inflateSync(Buffer.from(b64, 'base64')); return new Float32Array(b.buffer, b.byteOffset, b.length / 4); };
const image = (e) => ({ data: unpackF32(e.zlib), height: e.height, width: e.width });
const support = fx.support.map(image);
const unlabeled = fx.unlabeled.map(image);
const query = fx.query.map(image);
const bundlePath = path.resolve(__dirname, 'refine-fixture', fx.bundle);

async function load() {
  return em.FewShotClassifier.load(ort, at(bundlePath), { precision: fx.precision, ink: fx.ink });
}

async function assertAnswers(clf, want, what) {
  assert.deepEqual(clf.classes, want.classes, `${what}: classes`);
  assert.equal(clf.poolSize, want.pool_rows, `${what}: unlabelled rows held`);
  const { data, c } = await clf.decisionFunction(query);
  let worst = 0;
  want.logits.forEach((row, r) => row.forEach((v, j) => { worst = Math.max(worst, Math.abs(data[r * c + j] - v)); }));
  assert.ok(worst <= LOGIT_TOL, `${what}: logits differ from Python's by ${worst} (limit ${LOGIT_TOL})`);
  assert.deepEqual(await clf.predict(query), want.predictions, `${what}: predictions`);
}

test('refine.onnx on Python\'s embeddings gives Python\'s prototypes', async () => {
  const clf = await load();
  const e = fx.embeddings;
  const s = unpackF32(e.support);
  const u = unpackF32(e.unlabeled);
  const D = clf.bundle.embeddingDim;
  const got = await clf.bundle.refiner.refine(s, s.length / D, unpackF32(e.onehot), e.ways, u, u.length / D);
  const worst = e.prototypes.reduce((m, v, i) => Math.max(m, Math.abs(got.prototypes.data[i] - v)), 0);
  assert.ok(worst <= PROTO_TOL, `prototypes differ by ${worst}`);
});

test('fit with unlabeled images answers as Python does', async () => {
  const clf = await load();
  await clf.fit(support, fx.labels, { unlabeled });
  await assertAnswers(clf, fx.expected.fit, 'fit');
});

test('partialFit in parts and addUnlabeled answer as Python does (and as one fit)', async () => {
  const clf = await load();
  await clf.partialFit(support.slice(0, 4), fx.labels.slice(0, 4), { unlabeled: unlabeled.slice(0, 5) });
  await clf.partialFit(support.slice(4), fx.labels.slice(4));
  await clf.addUnlabeled(unlabeled.slice(5));
  await assertAnswers(clf, fx.expected.parts, 'parts');
});

test('forget drops the class and the unlabelled rows it claimed, as Python does', async () => {
  const clf = await load();
  await clf.fit(support, fx.labels, { unlabeled });
  await clf.forget('b');
  await assertAnswers(clf, fx.expected.forget_b, 'forget b');
  await assert.rejects(clf.forget('zz'), (err) => err instanceof em.InputError && clf.poolSize === fx.expected.forget_b.pool_rows);
});

test('a bundle without a refine graph refuses unlabeled with Python\'s message', async () => {
  const shipped = path.resolve(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
  const clf = await em.FewShotClassifier.load(ort, at(shipped), { precision: 'fp32', ink: 'high' });
  await assert.rejects(clf.fit(support, fx.labels, { unlabeled }),
    (err) => err instanceof em.InputError && err.message === fx.expected.plain_refuses.replaceAll('PLAIN', shipped));
  assert.equal(typeof clf.addUnlabeled, 'undefined');
});

test('the pool keeps the most recent max_unlabeled rows', () => {
  const pool = Float32Array.of(1, 1, 2, 2);
  assert.deepEqual([...bounded(pool, Float32Array.of(3, 3, 4, 4), 2, 3)], [2, 2, 3, 3, 4, 4]);
  assert.deepEqual([...bounded(new Float32Array(0), Float32Array.of(5, 5), 2, 3)], [5, 5]);
});

// ------------------------------------------------------------------ a hostile refine graph at load


/** Bundle.load of a copy of the shipped refine bundle whose refine.onnx is `graph`, checksums and digest recomputed. */
const loadWithRefineGraph = (graph) => withBundleCopy(bundlePath, async (dir) => {
  fs.writeFileSync(path.join(dir, 'refine.onnx'), graph);
  const text = await relisted(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'), 'refine.onnx', graph);
  fs.writeFileSync(path.join(dir, 'manifest.json'), await resealed(text));
  return em.Bundle.load(ort, at(dir));
});

test('a refine graph of another contract or that is not ONNX is refused at load', async () => {
  const adapt = fs.readFileSync(path.join(bundlePath, 'adapt.onnx'));
  await assert.rejects(loadWithRefineGraph(adapt),
    (err) => err instanceof em.BundleError && /refine\.onnx inputs\/outputs .* do not follow the contract/.test(err.message));
  await assert.rejects(loadWithRefineGraph(Buffer.from('not an onnx graph at all')),
    (err) => err instanceof em.BundleError && /onnxruntime cannot load refine\.onnx/.test(err.message));
  const ok = await loadWithRefineGraph(fs.readFileSync(path.join(bundlePath, 'refine.onnx')));
  assert.equal(ok.refiner.maxUnlabeled, 1000);
});
