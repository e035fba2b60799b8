'use strict';
/**
 * Semi-supervised refinement in the Node runtime: bundle format version 3 (the refine section) is read by
 * the same rules as the Python reader (contract/manifest_schema.py V3_SECTIONS).
 */

const test = require('node:test');
const assert = require('node:assert/strict');
const fs = require('fs');
const path = require('path');
const em = require('../edgemeta');
const { writerVersion } = require('../manifest_schema');

const SHIPPED = path.resolve(__dirname, '..', '..', '..', 'models', 'omniglot-conv4-proto');
const shippedText = fs.readFileSync(path.join(SHIPPED, 'manifest.json'), 'utf8');
const REFINE = '{"graph": "refine.onnx", "rule": "masked_soft_kmeans", "outputs": ["prototypes"], "max_unlabeled": 1000}';

const resealed = (text) => text.replace(/"manifest_sha256": "[0-9a-f]+"/, `"manifest_sha256": "${em.manifestDigest(text)}"`);
const parse = (text) => em.parseManifest(Buffer.from(resealed(text), 'utf8'), 'b');

/** The shipped manifest text with a refine section (and its graph listed) at `version`. */
function withRefine(version = 3, section = REFINE) {
  return shippedText.replace('"format_version": 1', `"format_version": ${version}, "refine": ${section}`)
    .replace('"files": {', `"files": {"refine.onnx": {"sha256": "${'0'.repeat(64)}", "bytes": 10}, `);
}

test('format 3: a refine section is read in a version-3 manifest; a plain manifest is written as version 2', () => {
  const m = parse(withRefine());
  assert.equal(m.format_version, 3);
  assert.equal(m.refine.max_unlabeled, 1000);
  assert.equal(writerVersion(m), 3);
  assert.equal(writerVersion(parse(shippedText)), 2);
  assert.equal(parse(shippedText.replace('"format_version": 1', '"format_version": 3')).format_version, 3);
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
  test(`format 3: refuses ${what}`, () => {
    assert.throws(() => parse(text()), (err) => err instanceof em.BundleError && message.test(err.message));
  });
}
