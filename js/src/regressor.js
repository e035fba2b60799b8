/**
 * Regression bundles (docs/regression.md): the same contract and rules as the Python runtime's
 * FewShotRegressor (edgemeta/runtime/regressor.py).
 *
 * - backbone.onnx: inputs [N, D] float32 -> embeddings [N, P] whose last column is 1 (normalisation inside);
 * - adapt.onnx: feature_gram [P, P] + feature_targets [P, O] (float64 sums over the support set) -> head;
 * - predict.onnx: embeddings + head -> predictions [N, O] (+ variances [N, O] for alpaca).
 *
 * The regressor keeps, per group of samples, only the sums phi^T phi and phi^T y (Float64Array), so
 * partialFit adds to them and forget(group) drops a group exactly; groups are summed in sorted order,
 * as in Python. saveState writes, and FewShotRegressor.load reads, the Python runtime's regression state
 * (plain or AES-256-GCM, docs/state-format.md, regression extension) with the same checks.
 */

import { BundleError, InputError, StateError } from './errors.js';
import { readBundle } from './bundle_reader.js';
import { checkBinding, checkSource, openSession, runGraph, sessionOptions } from './bundle.js';
import { compareCodePoints } from './canonical_json.js';
import { packBody, readBody, sealBody } from './state.js';
import { checkVectors } from './vectors.js';

const DEFAULT_GROUP = 'default';
const EMBED_CHUNK = 4096;

class RegressionBundle {
  /** Read, verify and open a regression bundle from `source` with the onnxruntime binding `ort`; BundleError on any mismatch. */
  static async load(ort, source, { threads = 1 } = {}) {
    checkBinding(ort);
    const { manifest, files } = await readBundle(checkSource(source));
    const bundlePath = source.name ?? 'bundle';
    if (!manifest.regression || !manifest.vector_input) {
      throw new BundleError(`${bundlePath} is not a vector-input regression bundle (no regression and vector_input sections)`);
    }
    const g = manifest.graphs;
    const opts = sessionOptions(threads);
    const [backbone, adapt, predict] = await Promise.all([g.backbone, g.adapt, g.predict].map(
      (f) => openSession(ort, files.get(f), opts, f, bundlePath)));
    const bundle = new RegressionBundle(manifest, String(bundlePath), { backbone, adapt, predict });
    bundle.ort = ort;
    await bundle.smokeTest();
    return bundle;
  }

  constructor(manifest, source, sessions) {
    Object.assign(this, { manifest, source, sessions });
    this.method = manifest.method;
    this.paramNames = [...manifest.head.outputs];
    this.inputDim = manifest.vector_input.dim;
    this.embeddingDim = manifest.embedding.dim;
    this.outputs = manifest.regression.outputs;
    this.givesVariance = manifest.regression.uncertainty === 'predictive_variance';
    this.identity = manifest.integrity.manifest_sha256;
    const outs = this.givesVariance ? ['predictions', 'variances'] : ['predictions'];
    const expect = [
      [sessions.backbone.inputNames, ['inputs']], [sessions.backbone.outputNames, ['embeddings']],
      [sessions.adapt.inputNames, ['feature_gram', 'feature_targets']], [sessions.adapt.outputNames, this.paramNames],
      [sessions.predict.inputNames, ['embeddings', ...this.paramNames]], [sessions.predict.outputNames, outs],
    ];
    for (const [got, want] of expect) {
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        throw new BundleError(`${source}: graph inputs/outputs ${JSON.stringify(got)} do not follow the contract ${JSON.stringify(want)}`);
      }
    }
  }

  /** Three vectors through every graph: embeddings end in 1, predictions finite. */
  async smokeTest() {
    const x = new Float32Array(3 * this.inputDim);
    x.fill(1, this.inputDim, 2 * this.inputDim);
    x.fill(-1, 2 * this.inputDim);
    const emb = await this.embed(x, 3);
    const P = this.embeddingDim;
    for (let i = 0; i < 3; i += 1) {
      if (emb[i * P + P - 1] !== 1) throw new BundleError(`${this.source}: backbone.onnx's embeddings must end in a column of ones`);
    }
    const { gram, targets } = sums(emb, 3, P, new Float64Array(3 * this.outputs).fill(1), this.outputs);
    const out = await this.predict(emb, 3, await this.adapt(gram, targets));
    if (!out.predictions.every(Number.isFinite)) throw new BundleError(`${this.source}: the graphs give non-finite predictions on a test task`);
  }

  /** Float32Array [N * D] -> embeddings Float32Array [N * P]. */
  async embed(x, n) {
    const D = this.inputDim;
    const P = this.embeddingDim;
    const out = new Float32Array(n * P);
    for (let s = 0; s < n; s += EMBED_CHUNK) {
      const m = Math.min(EMBED_CHUNK, n - s);
      const { embeddings } = await runGraph(this.sessions.backbone, this.source, 'backbone.onnx', { inputs: new this.ort.Tensor('float32', x.subarray(s * D, (s + m) * D), [m, D]) });
      out.set(embeddings.data, s * P);
    }
    return out;
  }

  /** float64 sums gram [P * P], targets [P * O] -> head parameters { name: ort.Tensor }. */
  async adapt(gram, targets) {
    const P = this.embeddingDim;
    const res = await runGraph(this.sessions.adapt, this.source, 'adapt.onnx', {
      feature_gram: new this.ort.Tensor('float64', gram, [P, P]),
      feature_targets: new this.ort.Tensor('float64', targets, [P, this.outputs]),
    });
    return Object.fromEntries(this.paramNames.map((name) => [name, res[name]]));
  }

  /** Embeddings [N * P] + head -> { predictions: Float32Array [N * O], variances: Float32Array or null }. */
  async predict(emb, n, params) {
    const res = await runGraph(this.sessions.predict, this.source, 'predict.onnx', { embeddings: new this.ort.Tensor('float32', emb, [n, this.embeddingDim]), ...params });
    return { predictions: res.predictions.data, variances: this.givesVariance ? res.variances.data : null };
  }
}

/** Sums over rows: gram = phi^T phi [P * P], targets = phi^T y [P * O] (Float64Array). */
function sums(phi, n, P, y, O) {
  const gram = new Float64Array(P * P);
  const targets = new Float64Array(P * O);
  for (let r = 0; r < n; r += 1) {
    for (let i = 0; i < P; i += 1) {
      const a = phi[r * P + i];
      for (let j = 0; j < P; j += 1) gram[i * P + j] += a * phi[r * P + j];
      for (let o = 0; o < O; o += 1) targets[i * O + o] += a * y[r * O + o];
    }
  }
  return { gram, targets };
}

/** Targets: [y1, ...] (one output) or [[y1..yO], ...] -> Float64Array [N * O]. */
function checkTargets(y, n, O) {
  if (!Array.isArray(y) || y.length !== n) throw new InputError(`targets must be an array of ${n} values`);
  const out = new Float64Array(n * O);
  y.forEach((v, r) => {
    const row = Array.isArray(v) ? v : [v];
    if (row.length !== O || !row.every((t) => typeof t === 'number' && Number.isFinite(t))) {
      throw new InputError(`targets row ${r} must be ${O} finite number(s)`);
    }
    row.forEach((t, o) => { out[r * O + o] = t; });
  });
  return out;
}

/** Sorted group names: strings by code point, integers by value (Python's sorted()). */
const sortGroups = (names) => [...names].sort((a, b) => (typeof a === 'number' ? a - b : compareCodePoints(a, b)));

class FewShotRegressor {
  constructor(bundle) {
    this.bundle = bundle;
    this.stats = new Map(); // group -> { gram, targets, count }
    this.head = null;
  }

  /**
   * Learn from these samples only (X: rows [N, D], vectors.js's form; groups: one name, or one per sample;
   * default "default").
   */
  async fit(X, y, groups) {
    const update = await this.statistics(X, y, groups);
    this.stats = new Map();
    await this.merge(update);
    return this;
  }

  /** Add samples; equals fit on every sample so far. */
  async partialFit(X, y, groups) {
    await this.merge(await this.statistics(X, y, groups));
    return this;
  }

  /** Drop every sample of `group`; equals fit on the other groups. */
  async forget(group) {
    if (!this.stats.has(group)) throw new InputError(`group ${JSON.stringify(group)} is not held; the held groups are ${JSON.stringify(this.groups)}`);
    this.stats.delete(group);
    this.head = this.stats.size ? await this.adaptAll(this.stats) : null;
    return this;
  }

  get groups() { return sortGroups(this.stats.keys()); }

  async statistics(X, y, groups) {
    const b = this.bundle;
    const { data: x, n } = checkVectors(X, b.inputDim, 'X');
    const t = checkTargets(y, n, b.outputs);
    const names = groups === undefined || groups === null ? Array(n).fill(DEFAULT_GROUP)
      : (Array.isArray(groups) ? groups : Array(n).fill(groups));
    if (names.length !== n || !names.every((g) => typeof g === 'string' || Number.isInteger(g))) {
      throw new InputError(`groups must be one name (string or integer) or one per sample (${n})`);
    }
    const phi = await b.embed(x, n);
    const P = b.embeddingDim;
    const O = b.outputs;
    const out = new Map();
    for (const name of new Set(names)) {
      const rows = names.map((g, i) => (g === name ? i : -1)).filter((i) => i >= 0);
      const f = new Float32Array(rows.length * P);
      const yy = new Float64Array(rows.length * O);
      rows.forEach((r, k) => { f.set(phi.subarray(r * P, (r + 1) * P), k * P); yy.set(t.subarray(r * O, (r + 1) * O), k * O); });
      out.set(name, { ...sums(f, rows.length, P, yy, O), count: rows.length });
    }
    return out;
  }

  async merge(update) {
    const kinds = new Set([...this.stats.keys(), ...update.keys()].map((k) => typeof k));
    if (kinds.size > 1) throw new InputError('groups mix strings and integers; expected one kind of group name');
    const next = new Map(this.stats);
    for (const [name, s] of update) {
      const old = next.get(name);
      next.set(name, old ? { gram: old.gram.map((v, i) => v + s.gram[i]), targets: old.targets.map((v, i) => v + s.targets[i]),
        count: old.count + s.count } : s);
    }
    this.head = await this.adaptAll(next);
    this.stats = next;
  }

  async adaptAll(stats) {
    const P = this.bundle.embeddingDim;
    const gram = new Float64Array(P * P);
    const targets = new Float64Array(P * this.bundle.outputs);
    for (const name of sortGroups(stats.keys())) {
      const s = stats.get(name);
      s.gram.forEach((v, i) => { gram[i] += v; });
      s.targets.forEach((v, i) => { targets[i] += v; });
    }
    return this.bundle.adapt(gram, targets);
  }

  /**
   * Predictions for rows X (vectors.js's form): { predictions: [N] (one output) or [N][O], std: the same shape, or null
   * where the rule gives no uncertainty (metasgd) }.
   */
  async predict(X) {
    if (!this.head) throw new InputError('this FewShotRegressor holds no samples; call fit(X, y) first');
    const b = this.bundle;
    const { data: x, n } = checkVectors(X, b.inputDim, 'X');
    const emb = await b.embed(x, n);
    const { predictions, variances } = await b.predict(emb, n, this.head);
    const O = b.outputs;
    const shape = (a, f = (v) => v) => Array.from({ length: n }, (_, i) => (O === 1 ? f(a[i]) : Array.from(a.subarray(i * O, (i + 1) * O), f)));
    return { predictions: shape(predictions), std: variances ? shape(variances, Math.sqrt) : null };
  }
}

// ---------------------------------------------------------------------------------------------
// The regressor's state (docs/state-format.md, regression extension): what the Python runtime's
// FewShotRegressor.save writes and load reads (edgemeta/runtime/regression_state.py), both ways.
// ---------------------------------------------------------------------------------------------

const STATE_ARRAYS = ['group_gram', 'group_targets', 'group_samples'];
const META_KEYS = ['bundle_id', 'groups', 'kind', 'method'];
const SYMMETRY_TOL = 1e-9; // |gram - gram^T| relative to the largest entry, as in Python

/**
 * The per-group sums and the head as state file bytes, in the Python runtime's layout: group_gram
 * float64 [G, P, P], group_targets float64 [G, P, O], group_samples int64 [G] (groups sorted), head.<name>
 * float32; meta bundle_id, kind 'regression', method, groups. `key`: 32 bytes or an AES-GCM CryptoKey.
 */
FewShotRegressor.prototype.saveState = async function saveState({ key = null } = {}) {
  const P = this.bundle.embeddingDim;
  const O = this.bundle.outputs;
  const names = this.groups;
  const G = names.length;
  const gram = new Float64Array(G * P * P);
  const targets = new Float64Array(G * P * O);
  names.forEach((name, i) => {
    const s = this.stats.get(name);
    gram.set(s.gram, i * P * P);
    targets.set(s.targets, i * P * O);
  });
  const arrays = [['group_gram', 'float64', [G, P, P], gram], ['group_targets', 'float64', [G, P, O], targets],
    ['group_samples', 'int64', [G], names.map((n) => this.stats.get(n).count)]];
  for (const name of Object.keys(this.head || {}).sort()) {
    const t = this.head[name];
    arrays.push([`head.${name}`, 'float32', [...t.dims], Float32Array.from(t.data)]);
  }
  const meta = { bundle_id: this.bundle.identity, kind: 'regression', method: this.bundle.method, groups: names };
  return sealBody(packBody(arrays, meta), key);
};

/**
 * A regressor for `bundle` holding the groups of a regression state (`bytes`: the file's bytes, written
 * by saveState or the Python runtime; `key`: 32 bytes or a CryptoKey if it is encrypted; `source`: a
 * name for messages), with the Python reader's checks; the head is adapted again from the sums.
 */
FewShotRegressor.load = async function load(bundle, bytes, { key = null, source = 'state' } = {}) {
  const file = source;
  const body = await readBody(bytes, { key, source });
  const arrays = Object.fromEntries(body.arrays);
  const { meta } = body;
  const metaKeys = meta && typeof meta === 'object' && !Array.isArray(meta) ? Object.keys(meta).sort() : null;
  if (!metaKeys || JSON.stringify(metaKeys) !== JSON.stringify(META_KEYS) || meta.kind !== 'regression') {
    throw new StateError(`${file} is not a regression state (meta keys ${JSON.stringify(metaKeys)}; expected ${JSON.stringify(META_KEYS)} ` +
      "with kind 'regression'); a classifier state loads with FewShotClassifier");
  }
  if (typeof meta.bundle_id !== 'string' || !/^[0-9a-f]{64}$/.test(meta.bundle_id)) {
    throw new StateError(`${file}: bundle_id is not a bundle's 64-hex-digit manifest sha256`);
  }
  if (meta.bundle_id !== bundle.identity) throw new StateError(`${file} was saved with another bundle; adapt again with this bundle`);
  if (!(typeof meta.method === 'string' && meta.method.length > 0 && meta.method.length <= 64)) {
    throw new StateError(`${file}: method must be a short string`);
  }
  const groups = meta.groups;
  if (!Array.isArray(groups) || !(groups.every((g) => typeof g === 'string') || groups.every(Number.isSafeInteger))) {
    throw new StateError(`${file}: groups must be a list of all strings or all integers (JavaScript holds them exactly up to 2^53)`);
  }
  if (new Set(groups).size !== groups.length) throw new StateError(`${file}: groups repeat a name; expected each group once`);
  const unknown = Object.keys(arrays).filter((k) => !STATE_ARRAYS.includes(k) && !k.startsWith('head.'));
  if (unknown.length) {
    throw new StateError(`${file}: unknown arrays ${JSON.stringify(unknown)}; a regression state holds ${JSON.stringify(STATE_ARRAYS)} and head.<name>`);
  }
  const P = bundle.embeddingDim;
  const O = bundle.outputs;
  const G = groups.length;
  const want = { group_gram: ['float64', [G, P, P]], group_targets: ['float64', [G, P, O]], group_samples: ['int64', [G]] };
  for (const [name, [dtype, shape]] of Object.entries(want)) {
    const a = arrays[name];
    if (!a || a.dtype !== dtype || JSON.stringify(a.shape) !== JSON.stringify(shape)) {
      const got = a ? `${a.dtype} ${JSON.stringify(a.shape)}` : 'missing';
      throw new StateError(`${file}: ${name} is ${got}; expected ${dtype} ${JSON.stringify(shape)} for ${G} groups of this bundle`);
    }
  }
  const g = arrays.group_gram.data;
  const t = arrays.group_targets.data;
  const counts = arrays.group_samples.data;
  if (!g.every(Number.isFinite) || !t.every(Number.isFinite)) throw new StateError(`${file}: statistics hold NaN or infinity; expected finite sums`);
  const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 1);
  for (let i = 0; i < G; i++) {
    for (let a = 0; a < P; a++) {
      if (g[i * P * P + a * P + a] < 0) throw new StateError(`${file}: group_gram is not symmetric with a non-negative diagonal; expected sums of phi^T phi`);
      for (let b = 0; b < a; b++) {
        if (Math.abs(g[i * P * P + a * P + b] - g[i * P * P + b * P + a]) > SYMMETRY_TOL * scale) {
          throw new StateError(`${file}: group_gram is not symmetric with a non-negative diagonal; expected sums of phi^T phi`);
        }
      }
    }
  }
  for (const [name, a] of Object.entries(arrays)) {
    if (name.startsWith('head.') && (a.dtype !== 'float32' || !a.data.every(Number.isFinite))) {
      throw new StateError(`${file}: ${name} must be finite float32`);
    }
  }
  const reg = new FewShotRegressor(bundle);
  groups.forEach((name, i) => {
    const count = Number(counts[i]);
    const gram = g.slice(i * P * P, (i + 1) * P * P);
    if (count < 1 || gram[P * P - 1] !== count) throw new StateError(`${file}: group_samples must be >= 1 and equal each gram's count entry`);
    reg.stats.set(name, { gram, targets: t.slice(i * P * O, (i + 1) * P * O), count });
  });
  reg.head = G ? await reg.adaptAll(reg.stats) : null;
  return reg;
};

export { RegressionBundle, FewShotRegressor, checkTargets, sums };
