#!/usr/bin/env node
/**
 * The JavaScript side of tests/test_js_state.py (state files shared with the Python runtime).
 * Reads one JSON request on stdin, writes one JSON answer on stdout:
 *
 *   { op: 'fit-save', bundle, support, labels, unlabeled?, query, out, key? }  fit, saveState -> out; answers
 *   { op: 'load', bundle, state, key?, query }                                  loadState; answers (or the error)
 *   { op: 'derive', passphrase, salt, iterations }                              { key }: deriveStateKey, hex
 *   { op: 'regress-save', bundle, x, y, groups, query, out, key? }              FewShotRegressor fit, saveState -> out
 *   { op: 'regress-load', bundle, state, key?, query }                          FewShotRegressor.load; predictions
 *
 * Images are { data: base64 of float32 values, height, width }; keys and salts are hex. Answers:
 * { classes, counts, logits: [[...]], predictions } or { error: { name, message } }.
 */

import fs from 'node:fs';
import * as ort from 'onnxruntime-node';
import { FewShotClassifier, FewShotRegressor, RegressionBundle, deriveStateKey, fromHex, toHex } from '../src/index.js';
import { sourceFromPath } from '../src/node.js';

const image = (e) => {
  const bytes = Buffer.from(e.data, 'base64');
  return { data: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)), height: e.height, width: e.width };
};

async function answers(clf, query) {
  const logits = await clf.decisionFunction(query);
  const rows = Array.from({ length: logits.n }, (_, r) => Array.from(logits.data.subarray(r * logits.c, (r + 1) * logits.c)));
  return { classes: clf.classes, counts: [...clf.classCounts()], logits: rows, predictions: await clf.predict(query), ink: clf.ink };
}

async function run(req) {
  const key = req.key ? fromHex(req.key) : null;
  if (req.op === 'derive') return { key: toHex(await deriveStateKey(req.passphrase, fromHex(req.salt), req.iterations)) };
  if (req.op === 'regress-save' || req.op === 'regress-load') {
    const bundle = await RegressionBundle.load(ort, sourceFromPath(req.bundle));
    let reg;
    if (req.op === 'regress-save') {
      reg = new FewShotRegressor(bundle);
      await reg.fit(req.x, req.y, req.groups);
      fs.writeFileSync(req.out, await reg.saveState({ key }));
    } else {
      try {
        reg = await FewShotRegressor.load(bundle, fs.readFileSync(req.state), { key, source: req.state });
      } catch (e) {
        return { error: { name: e.name, message: e.message } };
      }
    }
    const { predictions, std } = await reg.predict(req.query);
    return { groups: reg.groups, predictions, std };
  }
  const options = { threads: 1, precision: req.precision ?? 'auto', ...(req.ink ? { ink: req.ink } : {}) };
  const query = req.query.map(image);
  if (req.op === 'fit-save') {
    const clf = await FewShotClassifier.load(ort, sourceFromPath(req.bundle), options);
    await clf.fit(req.support.map(image), req.labels, req.unlabeled ? { unlabeled: req.unlabeled.map(image) } : {});
    for (const label of req.forget ?? []) await clf.forget(label);
    fs.writeFileSync(req.out, await clf.saveState({ key }));
    return answers(clf, query);
  }
  if (req.op === 'load') {
    try {
      const clf = await FewShotClassifier.load(ort, sourceFromPath(req.bundle), { ...options, state: fs.readFileSync(req.state), key });
      return answers(clf, query);
    } catch (e) {
      return { error: { name: e.name, message: e.message } };
    }
  }
  throw new Error(`unknown op ${req.op}`);
}

const request = JSON.parse(fs.readFileSync(0, 'utf8'));
process.stdout.write(JSON.stringify(await run(request)));
