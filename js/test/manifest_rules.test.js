/**
 * The JavaScript loader refuses manifests the way the Python reader does (contract/bundle.py parse_manifest
 * + contract/manifest_schema.py), even when the integrity digest was recomputed after the edit, so
 * only the rules can catch it. Each case here was accepted by the loader before these rules.
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { sourceFromPath as at } from '../src/node.js';
import { parseResealed as parse, relisted, resealed, withBundleCopy } from './bundle_copies.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));

const SHIPPED = path.resolve(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
const shippedText = fs.readFileSync(path.join(SHIPPED, 'manifest.json'), 'utf8');


/** The shipped manifest as a format-version-2 colour manifest (84x84 RGB), as text. */
function colourText(preprocess = null, shape = '[-1, 3, 84, 84]') {
  const spec = preprocess ?? '{"channels": 3, "channel_order": "RGB", "size": [84, 84], "fit": "centre_crop", ' +
    '"resize": "box_int", "value_range": [0.0, 1.0], "normalization": "in_graph"}';
  return shippedText.replace('"format_version": 1', '"format_version": 2')
    .replace(/"preprocess": \{[^}]*\}/, `"preprocess": ${spec}`).replace(/"shape": \[[^\]]*\]/, `"shape": ${shape}`);
}

test('accepts the shipped version-1 manifest, a version-2 grey one and a version-2 colour one', async () => {
  assert.equal((await parse(shippedText)).format_version, 1);
  const v2grey = await parse(shippedText.replace('"format_version": 1', '"format_version": 2'));
  assert.equal(v2grey.preprocess.channels, 1);
  const colour = await parse(colourText());
  assert.deepEqual([colour.format_version, colour.preprocess.channels, colour.input.shape], [2, 3, [-1, 3, 84, 84]]);
  assert.equal((await parse(colourText(null, '[null, 3, 84, 84]'))).input.shape[0], null);
});

const refused = [
  ['format_version 1.0 (a float, not the integer 1)', () => shippedText.replace('"format_version": 1', '"format_version": 1.0'),
    /format version 1\.0 is not supported by this reader \(it reads versions 1, 2 and 3\)/],
  ['format_version true', () => shippedText.replace('"format_version": 1', '"format_version": true'), /format version true is not supported/],
  ['a duplicate key', () => shippedText.replace('"method": "proto"', '"method": "proto", "method": "proto"'),
    /not strict JSON: duplicate key "method"/],
  ['NaN in a field', () => shippedText.replace('"drop": -0.02', '"drop": NaN'), /not strict JSON: the constant NaN/],
  ['a float that overflows', () => shippedText.replace('"drop": -0.02', '"drop": 1e999'), /overflows a float/],
  ['a 41-digit integer', () => shippedText.replace('"min_shots": 1', `"min_shots": 1${'0'.repeat(40)}`), /a number literal of 41 characters/],
  ['nesting over 32 levels', () => shippedText.replace('"parity": {', `"deep": ${'['.repeat(40)}${']'.repeat(40)}, "parity": {`),
    /nests deeper than 32 levels/],
  ['a version-1 manifest with 3 channels', () => colourText().replace('"format_version": 2', '"format_version": 1'),
    /preprocess\.channels must be 1 in a format-version-1 bundle, got integer 3 \(colour bundles are version 2\)/],
  ['channels 2', () => shippedText.replace('"format_version": 1', '"format_version": 2').replace('"channels": 1', '"channels": 2'),
    /preprocess\.channels must be one of \[1, 3\], got integer 2/],
  ['a colour bundle without fit centre_crop', () => colourText().replace('"fit": "centre_crop"', '"fit": "pad"'),
    /preprocess\.fit must be "centre_crop", got string "pad"/],
  ['a colour bundle with resize nearest', () => colourText().replace('"resize": "box_int"', '"resize": "nearest"'),
    /preprocess\.resize must be "box_int"/],
  ['a colour bundle in BGR', () => colourText().replace('"channel_order": "RGB"', '"channel_order": "BGR"'), /channel_order must be "RGB"/],
  ['a colour bundle without normalization', () => colourText().replace(', "normalization": "in_graph"', ''),
    /manifest field preprocess lacks required fields \["normalization"\]/],
  ['a colour bundle with an ink field', () => colourText().replace('"normalization": "in_graph"', '"normalization": "in_graph", "ink": "high"'),
    /preprocess\.ink is set in a colour bundle/],
  ['a colour input shape with 1 channel', () => colourText(null, '[-1, 1, 84, 84]'), /input\.shape \[-1,1,84,84\] must be \[null or -1, channels/],
  ['batch -1 in a version-1 manifest', () => shippedText.replace(/"shape": \[\s*null/, '"shape": [-1'), /must be \[null, channels, \*preprocess\.size\]/],
  ['an ink other than high', () => shippedText.replace('"ink": "high"', '"ink": "low"'), /preprocess\.ink must be "high"/],
  ['head.method unlike method', () => shippedText.replace('"method": "proto",\n  "outputs"', '"method": "ridge",\n  "outputs"')
    .replace(/("head": \{[^}]*"method": )"proto"/, '$1"ridge"'), /head\.method is "ridge" but method is "proto"/],
  ['other head outputs', () => shippedText.replace('"outputs": [\n      "prototypes"\n    ]', '"outputs": ["weight"]')
    .replace(/"outputs": \[\s*"prototypes"\s*\]/, '"outputs": ["weight"]'), /head\.outputs is \["weight"\] but method "proto"/],
  ['an open-set threshold written as a string', () => shippedText.replace(/"1": -11\.041749000549316/, '"1": "-11"'),
    /open_set\.threshold_by_shots\.1 must be a number/],
  ['limits.min_ways above max_ways', () => shippedText.replace(/"min_ways": 2/, '"min_ways": 2000'), /limits\.min_ways 2000 exceeds limits\.max_ways 1000/],
  ['embedding.dim 0', () => shippedText.replace(/"dim": 64/, '"dim": 0'), /embedding\.dim must be an integer in \[1, 65536\], got integer 0/],
  ['a file listed in a folder', () => shippedText.replace('"adapt.onnx": {', '"../adapt.onnx": {"bytes": 1, "sha256": "' + '0'.repeat(64) + '"}, "adapt.onnx": {'),
    /files has the key "\.\.\/adapt\.onnx"; expected plain file names/],
  ['a sha256 in capitals', () => shippedText.replace(/("adapt\.onnx": \{[^}]*"sha256": ")([0-9a-f]{64})/, (m, a, h) => a + h.toUpperCase()),
    /files\.adapt\.onnx\.sha256 must be a string matching/],
];

for (const [what, edit, message] of refused) {
  test(`refuses a manifest with ${what} (digest recomputed)`, async () => {
    const text = edit();
    assert.notEqual(text, shippedText, 'the edit changed the manifest');
    await assert.rejects(parse(text), (e) => e instanceof em.BundleError && message.test(e.message), what);
  });
}

test('a bundle folder: only listed files are read, and a symlinked file is refused unread', async () => {
  await withBundleCopy(SHIPPED, async (dir) => {
    fs.mkdirSync(path.join(dir, 'notes.txt')); // an unlisted folder or file next to the bundle is ignored
    fs.symlinkSync('/dev/zero', path.join(dir, 'unlisted.bin')); // never opened: not listed
    assert.equal((await em.Bundle.load(ort, at(dir))).method, 'proto');
    fs.renameSync(path.join(dir, 'adapt.onnx'), path.join(dir, 'real-adapt.onnx'));
    fs.symlinkSync(path.join(dir, 'real-adapt.onnx'), path.join(dir, 'adapt.onnx'));
    await assert.rejects(em.Bundle.load(ort, at(dir)), (e) => e instanceof em.BundleError && /adapt\.onnx is a symbolic link/.test(e.message));
  });
});

test("precision 'auto' follows the manifest's precision.default, as the Python runtime does", async () => {
  await withBundleCopy(SHIPPED, async (dir) => {
    const slower = shippedText.replace(/("precision": \{\s*"default": )"int8"/, '$1"fp32"');
    assert.notEqual(slower, shippedText);
    fs.writeFileSync(path.join(dir, 'manifest.json'), await resealed(slower));
    assert.equal((await em.Bundle.load(ort, at(dir))).precision, 'fp32');
    assert.equal((await em.Bundle.load(ort, at(dir), { precision: 'int8' })).precision, 'int8');
    assert.equal((await em.Bundle.load(ort, at(SHIPPED))).precision, 'int8');
  });
});

test('a graph onnxruntime cannot load, in a bundle resealed around it, is a BundleError naming it; a bad precision an InputError', async () => {
  await withBundleCopy(SHIPPED, async (dir) => {
    const junk = new TextEncoder().encode('not an onnx graph at all');
    fs.writeFileSync(path.join(dir, 'classify.onnx'), junk);
    const text = await relisted(shippedText, 'classify.onnx', junk);
    assert.notEqual(text, shippedText);
    fs.writeFileSync(path.join(dir, 'manifest.json'), await resealed(text));
    await assert.rejects(em.Bundle.load(ort, at(dir)),
      (e) => e instanceof em.BundleError && /onnxruntime cannot load classify\.onnx .*expected a valid ONNX graph/.test(e.message));
    await assert.rejects(em.Bundle.load(ort, at(SHIPPED), { precision: 'fp16' }), (e) => e instanceof em.InputError && /precision must be/.test(e.message));
  });
});

test('a graph that fails at run time (inputs that do not fit it) is a BundleError naming the graph', async () => {
  const bundle = await em.Bundle.load(ort, at(SHIPPED));
  const D = bundle.embeddingDim;
  const misfit = { prototypes: new ort.Tensor('float32', new Float32Array(2 * (D + 3)), [2, D + 3]) };
  await assert.rejects(bundle.classify(new Float32Array(D), 1, misfit),
    (e) => e instanceof em.BundleError && new RegExp(`${SHIPPED}: classify\\.onnx failed at run time`).test(e.message));
});
