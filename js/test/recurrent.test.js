/**
 * Recurrent bundles (method `recurrent`, format version 3) in the JavaScript runtime: the online classifier
 * replays the Python runtime's partial_fit / forget sequence (test/recurrent-case.json, written by
 * tests/test_recurrent_node.py from test/recurrent-bundle) with the same memory and logits; partialFit in
 * parts equals fit in that order; the manifest section rules hold.
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
import { parseResealed as parse } from './bundle_copies.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));

const CASE = JSON.parse(fs.readFileSync(path.join(__dirname, 'recurrent-case.json'), 'utf8'));
const BUNDLE = path.join(__dirname, CASE.bundle);
const MEMORY_TOL = 1e-5;
const LOGIT_TOL = 1e-4;

const unpack = (b64) => new Uint8Array(zlib.inflateSync(Buffer.from(b64, 'base64')));
const floats = (b64) => new Float32Array(unpack(b64).buffer);
const image = (e) => ({ data: unpack(e.zlib), height: e.height, width: e.width });
const maxDiff = (a, b) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);

test('recurrent: Node replays partialFit / forget like Python (memory, counts, logits, predictions)', async () => {
  const clf = await em.FewShotClassifier.load(ort, at(BUNDLE), { ink: CASE.ink });
  assert.equal(clf.constructor.name, 'OnlineClassifier');
  assert.equal(clf.bundle.manifest.format_version, 3);
  const query = CASE.query.map(image);
  for (const [i, step] of CASE.steps.entries()) {
    if (step.op === 'partial_fit') await clf.partialFit(step.images.map(image), step.labels);
    else await clf.forget(step.label);
    const what = `step ${i} (${step.op})`;
    assert.deepEqual(clf.classes, step.classes, `${what}: classes`);
    assert.deepEqual(Object.fromEntries(clf.classCounts()), step.counts, `${what}: samples per class`);
    const memory = clf.memory();
    const want = floats(step.memory);
    assert.equal(memory.length, want.length, `${what}: memory size`);
    assert.ok(maxDiff(memory, want) <= MEMORY_TOL, `${what}: memory differs from Python's by ${maxDiff(memory, want)}`);
    if (step.logits === null) {
      await assert.rejects(clf.predict(query), em.InputError, `${what}: one class held, no head yet`);
      continue;
    }
    const logits = await clf.decisionFunction(query);
    const wantLogits = floats(step.logits);
    assert.ok(maxDiff(logits.data, wantLogits) <= LOGIT_TOL, `${what}: logits differ by ${maxDiff(logits.data, wantLogits)}`);
    const predictions = await clf.predict(query);
    predictions.forEach((p, r) => {
      const row = Array.from(wantLogits.subarray(r * logits.c, (r + 1) * logits.c));
      const sorted = [...row].sort((a, b) => b - a);
      if (sorted[0] - sorted[1] > 1e-3) assert.equal(p, step.classes[row.indexOf(sorted[0])], `${what}: prediction ${r}`);
    });
  }
});

test('recurrent: partialFit in parts equals fit on the same samples in that order (to float rounding); one sample cannot be forgotten', async () => {
  const steps = CASE.steps.slice(0, 3);
  const imgs = steps.flatMap((s) => s.images.map(image));
  const labels = steps.flatMap((s) => s.labels);
  const whole = await em.FewShotClassifier.load(ort, at(BUNDLE), { ink: CASE.ink });
  await whole.fit(imgs, labels);
  const parts = await em.FewShotClassifier.load(ort, at(BUNDLE), { ink: CASE.ink });
  for (const s of steps) await parts.partialFit(s.images.map(image), s.labels);
  // the GRU steps are the same; the class mean updated in parts differs from one update only by float rounding
  const [got, want] = [parts.memory(), whole.memory()];
  assert.equal(got.length, want.length);
  got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 1e-6 * Math.max(1, Math.abs(want[i])), `memory[${i}]: ${v} vs ${want[i]}`));
  assert.throws(() => whole.forgetSample('a', 0), /one sample cannot be removed/);
  await assert.rejects(whole.forget('zz'), /cannot forget "zz"/);
});

test('recurrent: a state whose memory rows count other samples than memory_shots is refused (class-mean layout)', async () => {
  const steps = CASE.steps.slice(0, 3);
  const clf = await em.FewShotClassifier.load(ort, at(BUNDLE), { ink: CASE.ink });
  await clf.fit(steps.flatMap((s) => s.images.map(image)), steps.flatMap((s) => s.labels));
  const good = clf._stateData();
  const back = await em.FewShotClassifier.load(ort, at(BUNDLE), { ink: CASE.ink });
  await back.loadState(await em.encodeState(good));                 // the saved counts agree: loads
  const altered = { ...good, memoryShots: good.memoryShots.map((n, i) => (i === 0 ? n + 1 : n)) };
  await assert.rejects(back.loadState(await em.encodeState(altered), { source: 'altered.state' }),
    /altered\.state: the memory row of class .* counts \d+ samples where memory_shots says \d+/);
});

test('recurrent: a recurrent method without its section, or the section in a version-2 manifest, is refused', async () => {
  const text = fs.readFileSync(path.join(BUNDLE, 'manifest.json'), 'utf8');
  assert.equal((await parse(text)).recurrent.hidden, CASE.hidden);
  const m = JSON.parse(text);
  const { recurrent, ...without } = m;
  assert.ok(recurrent);
  await assert.rejects(parse(JSON.stringify(without)), /method "recurrent" needs the manifest section recurrent/);
  await assert.rejects(parse(JSON.stringify({ ...m, format_version: 2 })), /section recurrent needs format version 3/);
  await assert.rejects(parse(JSON.stringify({ ...m, recurrent: { ...recurrent, outputs: ['prototypes'] } })), /expected head.outputs/);
});
