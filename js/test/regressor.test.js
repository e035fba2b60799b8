/**
 * Regression bundles in the JavaScript runtime: the version-3 vector_input and regression sections are read by the same
 * rules as Python, and regressor.js replays the Python runtime's fit / partialFit / forget(group) on the
 * shipped sinusoid bundles (regression-case.json, written by tests/test_regressor_node.py).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { parseResealed as parse } from './bundle_copies.js';
import { sourceFromPath as at } from '../src/node.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const { RegressionBundle, FewShotRegressor } = em;
const REPO = path.resolve(__dirname, '..', '..');
const CASE = JSON.parse(fs.readFileSync(path.join(__dirname, 'regression-case.json'), 'utf8'));
const METASGD = path.join(REPO, 'models', 'sinusoid-metasgd');
const text = fs.readFileSync(path.join(METASGD, 'manifest.json'), 'utf8');

const close = (got, want, tol, where) => {
  assert.equal(got.length, want.length, where);
  got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= tol * Math.max(1, Math.abs(want[i])), `${where}[${i}]: ${v} vs ${want[i]}`));
};

for (const c of CASE.cases) {
  test(`${c.bundle}: fit, partialFit and forget(group) equal the Python runtime`, async () => {
    const reg = new FewShotRegressor(await RegressionBundle.load(ort, at(path.join(REPO, c.bundle))));
    const query = c.query.map((v) => [v]);
    for (const [k, s] of c.steps.entries()) {
      if (s.op === 'forget') await reg.forget(s.group);
      else await reg[s.op === 'fit' ? 'fit' : 'partialFit'](s.x.map((v) => [v]), s.y, s.group);
      assert.deepEqual(reg.groups, s.groups);
      const out = await reg.predict(query);
      close(out.predictions, s.predictions, CASE.tolerance, `${c.bundle} step ${k} predictions`);
      if (s.std) close(out.std, s.std, CASE.tolerance, `${c.bundle} step ${k} std`);
      else assert.equal(out.std, null);
    }
  });
}

for (const c of CASE.cases) {
  test(`${c.bundle}: a state saved by Python loads (${c.state.key ? 'encrypted' : 'plain'}), predicts and forgets alike`, async () => {
    const bundle = await RegressionBundle.load(ort, at(path.join(REPO, c.bundle)));
    const file = path.join(__dirname, c.state.file);
    const key = c.state.key ? Buffer.from(c.state.key, 'hex') : null;
    const bytes = fs.readFileSync(file);
    const reg = await FewShotRegressor.load(bundle, bytes, { key, source: file });
    const query = c.query.map((v) => [v]);
    for (const k of [c.state.after_step, c.state.after_step + 1]) {
      const s = c.steps[k];
      if (s.op === 'forget') await reg.forget(s.group);
      assert.deepEqual(reg.groups, s.groups);
      const out = await reg.predict(query);
      close(out.predictions, s.predictions, CASE.tolerance, `${c.bundle} state step ${k}`);
      if (s.std) close(out.std, s.std, CASE.tolerance, `${c.bundle} state step ${k} std`);
    }
    if (key) {
      await assert.rejects(FewShotRegressor.load(bundle, bytes), /encrypted; pass the key/);
      await assert.rejects(FewShotRegressor.load(bundle, bytes, { key: new Uint8Array(32) }), /wrong key/);
    }
    for (const damaged of [bytes.subarray(0, bytes.length - 5), Buffer.concat([bytes, Buffer.from('x')]),
      Buffer.from(bytes.map((v, i) => (i === bytes.length - 30 ? v ^ 1 : v)))]) {
      await assert.rejects(FewShotRegressor.load(bundle, damaged, { key }), { name: 'StateError' });
    }
    const other = await RegressionBundle.load(ort, at(path.join(REPO, CASE.cases.find((o) => o !== c).bundle)));
    await assert.rejects(FewShotRegressor.load(other, bytes, { key }), /another bundle/);
  });
}

test('the shipped regression manifest is read as version 3; sections are checked as in Python', async () => {
  assert.equal((await parse(text)).format_version, 3);
  const refused = [
    [text.replace('"format_version": 3', '"format_version": 2'), /manifest section (vector_input|regression) needs format version 3/],
    [text.replace('"shape": [\n      -1,\n      1\n    ]', '"shape": [-1, 2]'), /input\.shape/],
    [text.replace('"uncertainty": "none"', '"uncertainty": "predictive_variance"'), /regression\.uncertainty/],
    [text.replace('"normalization": "in_graph"', '"normalization": "none"'), /vector_input\.normalization/],
    [text.replace('"predict": "predict.onnx"', '"predict": "classify.onnx"'), /graphs\.predict|graph "predict"/],
  ];
  for (const [t, re] of refused) {
    assert.notEqual(t, text);
    await assert.rejects(parse(t), re);
  }
});

test('hostile inputs are refused with InputError; a classifier bundle is not a regression bundle', async () => {
  const reg = new FewShotRegressor(await RegressionBundle.load(ort, at(METASGD)));
  for (const X of [[], [[1, 2]], [[NaN]], [['a']], [[1e39]], 'x']) {
    await assert.rejects(reg.fit(X, X.length ? [0] : []), { name: 'InputError' });
  }
  await assert.rejects(reg.predict([[0]]), /no samples/);
  await assert.rejects(RegressionBundle.load(ort, at(path.join(REPO, 'models', 'omniglot-conv4-proto'))), { name: 'BundleError' });
  await assert.rejects(em.Bundle.load(ort, at(METASGD)), /regression bundle/);
});

test('saveState -> FewShotRegressor.load round trips (plain and encrypted); foreign and damaged states are refused', async () => {
  const bundle = await RegressionBundle.load(ort, at(path.join(REPO, 'models', 'sinusoid-alpaca')));
  const reg = new FewShotRegressor(bundle);
  await reg.fit([[0.5], [1.2], [-3.0]], [0.1, 0.8, -1.4], 'phone');
  await reg.partialFit([[2.0], [4.0]], [1.1, -0.7], 'watch');
  const query = [[0.0], [4.5], [-2.2]];
  const want = await reg.predict(query);
  const key = Uint8Array.from({ length: 32 }, (_, i) => 255 - i);
  for (const k of [null, key]) {
    const back = await FewShotRegressor.load(bundle, await reg.saveState({ key: k }), { key: k });
    assert.deepEqual(back.groups, ['phone', 'watch']);
    assert.deepEqual(await back.predict(query), want);
  }
  const bytes = await reg.saveState();
  const { arrays, meta } = await em.readBody(bytes);
  assert.deepEqual([...arrays.keys()], ['group_gram', 'group_targets', 'group_samples', 'head.covariance', 'head.noise_variance', 'head.weight']);
  assert.deepEqual(meta, { bundle_id: bundle.identity, groups: ['phone', 'watch'], kind: 'regression', method: 'alpaca' });
  const { packBody, sealBody } = await import('../src/state.js');
  const list = [...arrays].map(([name, a]) => [name, a.dtype, a.shape, a.data]);
  const skewed = list.map((a) => (a[0] === 'group_gram' ? [a[0], a[1], a[2], a[3].map((v, i) => (i === 1 ? v + 1 : v))] : a));
  await assert.rejects(FewShotRegressor.load(bundle, await sealBody(packBody(skewed, meta))), /not symmetric/);
  await assert.rejects(FewShotRegressor.load(bundle, await sealBody(packBody(list, { ...meta, extra: 1 }))), /is not a regression state/);
  await assert.rejects(FewShotRegressor.load(bundle, await sealBody(packBody(list, { ...meta, groups: ['a', 'a'] }))), /repeat a name/);
  const clf = await em.FewShotClassifier.load(ort, at(path.join(REPO, 'models', 'omniglot-conv4-proto')));
  await assert.rejects(clf.loadState(bytes), { name: 'StateError' });
  const other = await RegressionBundle.load(ort, at(METASGD));
  await assert.rejects(FewShotRegressor.load(other, bytes), /another bundle/);
});
