/**
 * Vector inputs [N, D] (sensor features, tabular readings) for bundles with a `vector_input` section:
 * the checks of the Python runtime's edgemeta/contract/vector_input.py, shared by the vector-input
 * classifier (bundle.js) and the regressor (regressor.js). The normalisation lives inside
 * backbone.onnx (`vector_input.normalization: in_graph`), so a checked batch is only packed as float32.
 *
 * One input form for both: an Array of N rows, each an Array, Float32Array or Float64Array of D
 * numbers, or one packed matrix `{ data: Float32Array | Float64Array of N * D numbers, rows: N, cols: D }`
 * (row-major).
 */

import { InputError } from './errors.js';

const FLOAT32_MAX = 3.0e38; // larger magnitudes overflow float32 (max 3.4028e38)
const MAX_ROWS = 10_000_000; // one call's rows, as in Python

const isFloatArray = (v) => v instanceof Float32Array || v instanceof Float64Array;

/** The first value of `values` that is not a finite number within +-FLOAT32_MAX, as a message; null if none. */
function badValue(values) {
  for (const v of values) {
    if (typeof v !== 'number') {
      return `${typeof v === 'boolean' ? 'a boolean' : JSON.stringify(v) ?? typeof v}; expected real numbers`;
    }
    if (!Number.isFinite(v)) return 'NaN or infinity; expected finite numbers';
    if (Math.abs(v) > FLOAT32_MAX) return `a value beyond ±${FLOAT32_MAX}; expected numbers that fit float32`;
  }
  return null;
}

/**
 * `x` checked and packed: `{ data: Float32Array [N * dim] (row-major), n: N }`. `x`: an Array of rows
 * (Array / Float32Array / Float64Array of `dim` numbers each) or `{ data, rows, cols }`. InputError naming
 * the shape, type or row otherwise: not that form, another width, no rows (unless `allowEmpty`), more than
 * MAX_ROWS rows, a non-number, NaN / infinity, or a magnitude beyond float32.
 */
function checkVectors(x, dim, what = 'inputs', { allowEmpty = false } = {}) {
  const form = `an Array of rows of ${dim} numbers or { data: Float32Array, rows: N, cols: ${dim} }`;
  let rows;
  if (Array.isArray(x)) {
    rows = x;
  } else if (x && typeof x === 'object' && !ArrayBuffer.isView(x) && 'data' in x) {
    if (!isFloatArray(x.data)) throw new InputError(`${what}.data must be a Float32Array or Float64Array; expected ${form}`);
    if (!Number.isSafeInteger(x.rows) || x.rows < 0 || x.cols !== dim || x.data.length !== x.rows * dim) {
      throw new InputError(`${what} is { rows: ${JSON.stringify(x.rows)}, cols: ${JSON.stringify(x.cols)} } with ` +
        `${x.data.length} values; this bundle takes ${dim} numbers per row (data.length = rows * ${dim})`);
    }
    rows = null;
  } else {
    const got = x === null ? 'null' : (ArrayBuffer.isView(x) ? `one ${x.constructor.name}` : typeof x);
    const hint = ArrayBuffer.isView(x) ? ' (one sample: [x])' : '';
    throw new InputError(`${what} is ${got}; expected ${form}${hint}`);
  }
  const n = rows ? rows.length : x.rows;
  if (n === 0 && !allowEmpty) throw new InputError(`${what} have no rows; expected at least one sample`);
  if (n > MAX_ROWS) throw new InputError(`${what} have ${n} rows; at most ${MAX_ROWS} per call (pass them in parts)`);
  const data = new Float32Array(n * dim);
  for (let r = 0; r < n; r += 1) {
    let row;
    if (rows) {
      row = rows[r];
      if (!(Array.isArray(row) || isFloatArray(row))) {
        throw new InputError(`${what} row ${r} is ${row === null ? 'null' : typeof row}; expected ${dim} numbers (an Array, Float32Array or Float64Array)`);
      }
      if (row.length !== dim) throw new InputError(`${what} row ${r} has ${row.length} columns; this bundle takes ${dim} numbers per row`);
    } else {
      row = x.data.subarray(r * dim, (r + 1) * dim);
    }
    const bad = badValue(row);
    if (bad) throw new InputError(`${what} row ${r} holds ${bad}`);
    data.set(row, r * dim);
  }
  return { data, n };
}

export { checkVectors, FLOAT32_MAX, MAX_ROWS };
