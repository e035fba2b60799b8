/**
 * The runtime is one code base for Node.js and the browser: no module in src/ imports onnxruntime (the
 * binding is a parameter), only src/node.js imports Node's modules, and the core uses no Node global
 * (Buffer, process, require). Checked on the source text, comments removed.
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src');
const files = fs.readdirSync(SRC).filter((f) => f.endsWith('.js'));
/** Source text without comments (block, line) and with string contents kept (imports are strings). */
const code = (f) => fs.readFileSync(path.join(SRC, f), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
const imports = (text) => [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]);

test('no module imports onnxruntime; only node.js imports node: modules; everything else is relative', () => {
  assert.ok(files.length >= 15 && files.includes('index.js') && files.includes('node.js'), files.join(', '));
  for (const f of files) {
    const specs = imports(code(f));
    for (const spec of specs) {
      assert.ok(!/onnxruntime/.test(spec), `${f} imports ${spec}: the binding must be passed in`);
      if (f === 'node.js') assert.ok(spec.startsWith('./') || ['node:fs', 'node:path'].includes(spec), `${f} imports ${spec}`);
      else assert.ok(spec.startsWith('./'), `${f} imports ${spec}: only node.js may import Node modules`);
    }
  }
  assert.deepEqual(imports(code('node.js')).filter((s) => s.startsWith('node:')).sort(), ['node:fs', 'node:path']);
});

test('the core uses no Node global (Buffer, process, require, __dirname)', () => {
  for (const f of files.filter((name) => name !== 'node.js')) {
    const found = code(f).match(/\b(Buffer|process|require|__dirname)\b/);
    assert.equal(found, null, `${f} uses ${found && found[1]}`);
  }
});

test('index.js exports the whole core API and none of node.js', async () => {
  const api = await import('../src/index.js');
  for (const name of ['FewShotClassifier', 'Bundle', 'RegressionBundle', 'FewShotRegressor', 'zipSource', 'urlSource',
    'memorySource', 'deriveStateKey', 'readBundle', 'parseManifest', 'preprocess', 'BundleError', 'InputError', 'StateError']) {
    assert.equal(typeof api[name], 'function', name);
  }
  for (const name of ['folderSource', 'sourceFromPath', 'loadFromPath']) assert.equal(api[name], undefined, name);
});
