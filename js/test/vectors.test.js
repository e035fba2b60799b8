/**
 * Vector inputs [N, D] (src/vectors.js): checkVectors packs the two accepted forms (an Array of rows; a
 * row-major { data, rows, cols }) into the same float32 batch and refuses everything else with InputError
 * naming what was expected, as edgemeta/contract/vector_input.py; the regressor answers both forms alike on
 * the shipped sinusoid bundle. The classifier side, against the Python runtime, is tests/test_js_vectors.py.
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { checkVectors, FewShotRegressor, RegressionBundle } from '../src/index.js';
import { sourceFromPath } from '../src/node.js';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

test('checkVectors packs rows, typed rows and a packed matrix into the same float32 batch', () => {
  const rows = [[1, 2.5, -3], [0.1, 1e-3, 7]];
  const want = Float32Array.from(rows.flat());
  for (const x of [rows, rows.map((r) => Float64Array.from(r)), rows.map((r) => Float32Array.from(r)),
    { data: Float64Array.from(rows.flat()), rows: 2, cols: 3 }, { data: Float32Array.from(rows.flat()), rows: 2, cols: 3 }]) {
    const { data, n } = checkVectors(x, 3);
    assert.equal(n, 2);
    assert.deepEqual(data, want);
  }
  assert.equal(checkVectors([], 3, 'X', { allowEmpty: true }).n, 0);
});

test('checkVectors refuses other widths, no rows, non-numbers, NaN and float32 overflow with InputError naming the row', () => {
  const cases = [
    [[[1, 2]], /row 0 has 2 columns; this bundle takes 3/],
    [{ data: new Float32Array(4), rows: 2, cols: 2 }, /takes 3 numbers per row/],
    [{ data: new Float32Array(5), rows: 2, cols: 3 }, /data.length = rows \* 3/],
    [[], /no rows/],
    [{ data: new Float32Array(0), rows: 0, cols: 3 }, /no rows/],
    [[[0, 0, 0], [0, NaN, 0]], /row 1 holds NaN or infinity/],
    [{ data: Float64Array.of(0, 0, 0, 0, 0, -Infinity), rows: 2, cols: 3 }, /row 1 holds NaN or infinity/],
    [[[0, 0, 1e39]], /beyond/],
    [[[0, true, 0]], /a boolean; expected real numbers/],
    [[[0, '1', 0]], /"1"; expected real numbers/],
    [[[0, 0, 0], null], /row 1 is null/],
    [Float32Array.of(1, 2, 3), /one Float32Array.*\(one sample: \[x\]\)/],
    [{ data: Int32Array.of(1, 2, 3), rows: 1, cols: 3 }, /Float32Array or Float64Array/],
    [{ data: [1, 2, 3], rows: 1, cols: 3 }, /Float32Array or Float64Array/],
    ['x', /is string/],
    [null, /is null/],
    [undefined, /is undefined/],
  ];
  for (const [x, message] of cases) {
    assert.throws(() => checkVectors(x, 3), (e) => e.name === 'InputError' && message.test(e.message), String(message));
  }
});

test('the regressor answers rows and the packed matrix alike', async () => {
  const bundle = await RegressionBundle.load(ort, sourceFromPath(path.join(REPO, 'models', 'sinusoid-metasgd')));
  const x = Array.from({ length: 8 }, (_, i) => [-4 + i]);
  const y = x.map(([v]) => Math.sin(v));
  const q = [[-1.5], [0.25], [3.5]];
  const packed = (rows) => ({ data: Float64Array.from(rows.flat()), rows: rows.length, cols: 1 });
  const a = await (await new FewShotRegressor(bundle).fit(x, y)).predict(q);
  const b = await (await new FewShotRegressor(bundle).fit(packed(x), y)).predict(packed(q));
  assert.deepEqual(b.predictions, a.predictions);
  assert.equal(a.predictions.length, 3);
  await assert.rejects(new FewShotRegressor(bundle).fit(packed(x), y.slice(1)), { name: 'InputError' });
});
