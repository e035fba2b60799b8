/**
 * FewShotClassifier: learn a user's classes from a few samples (mirrors edgemeta/runtime/classifier.py).
 *
 *   import * as ort from 'onnxruntime-node';            // or 'onnxruntime-web' in a browser
 *   import { FewShotClassifier, urlSource } from 'edgemeta-js';
 *   const clf = await FewShotClassifier.load(ort, urlSource('models/omniglot-conv4-proto/'));   // verifies everything
 *   await clf.fit(supportImages, ['alpha', 'alpha', 'beta', 'beta', 'gamma']);
 *   await clf.predict(queryImages);          // -> ['beta', ...]
 *   await clf.predictProba(queryImages);     // -> [[p0, p1, p2], ...], columns in clf.classes order
 *   const bytes = await clf.saveState();     // the Python runtime's state file (state.js)
 *
 * Images: see preprocess.js; a vector-input bundle takes rows [N, D] instead (vectors.js). Labels
 * are all strings or all integers; `classes` is sorted like numpy.unique (strings by code point,
 * numbers numerically) and gives the column order of the probabilities.
 */

import { InputError, StateError } from './errors.js';
import { compareCodePoints } from './canonical_json.js';
import { INKS } from './preprocess.js';
import { Bundle } from './bundle.js';
import { makeSemiSupervisedClassifier, refuseUnlabeled } from './refine.js';
import { makeOnlineClassifier } from './recurrent.js';
import { decodeState, encodeState } from './state.js';
import { MAX_ROWS } from './vectors.js';

function labelKind(labels, what = 'labels') {
  if (!Array.isArray(labels)) throw new InputError(`${what} must be an Array with one label per image`);
  if (labels.every((y) => typeof y === 'string')) return 'string';
  if (labels.every((y) => Number.isInteger(y))) return 'int';
  throw new InputError(`${what} must be all integers or all strings (e.g. 'cat', 3); got ${JSON.stringify(labels.slice(0, 5))}`);
}

/** Distinct labels sorted like numpy.unique: strings by code point, integers numerically. */
function uniqueSorted(labels) {
  const u = [...new Set(labels)];
  return typeof u[0] === 'string' ? u.sort(compareCodePoints) : u.sort((a, b) => a - b);
}

function softmaxRows(logits) {
  const rows = [];
  for (let r = 0; r < logits.n; r++) {
    const row = logits.data.subarray(r * logits.c, (r + 1) * logits.c);
    const mx = Math.max(...row);
    const e = Array.from(row, (v) => Math.exp(v - mx));
    const sum = e.reduce((a, b) => a + b, 0);
    rows.push(e.map((v) => v / sum));
  }
  return rows;
}

class FewShotClassifier {
  /**
   * Load and verify a bundle from `source` with the onnxruntime binding `ort` (see Bundle.load), then
   * wrap it; with `state` (bytes a saveState or the Python runtime wrote; `key` if encrypted), restore
   * what it holds. Options: ink ('auto' per image, the default | 'high' | 'low'),
   * threads (intra-op, default 1),
   * precision ('auto' | 'fp32' | 'int8', see Bundle.load),
   * unknownLabel (what predict(..., {rejectUnknown: true}) answers, default 'unknown'), unknownThreshold
   * (a max-logit threshold overriding the manifest's open_set calibration).
   */
  static async load(ort, source, { threads = 1, precision = 'auto', state = null, key = null, ...options } = {}) {
    const bundle = await Bundle.load(ort, source, { threads, precision });
    const clf = FewShotClassifier.forBundle(bundle, options);
    if (state !== null && state !== undefined) await clf.loadState(state, { key });
    return clf;
  }

  /** The classifier class a loaded bundle needs (refine: unlabelled pool; recurrent: class memory), constructed. */
  static forBundle(bundle, options = {}) {
    if (bundle.refiner) return new (semiSupervisedClassifier())(bundle, options);
    return bundle.memoryUpdate ? new (onlineClassifier())(bundle, options) : new FewShotClassifier(bundle, options);
  }

  constructor(bundle, { ink, unknownLabel = 'unknown', unknownThreshold = null } = {}) {
    if (ink !== undefined && !INKS.includes(ink)) throw new InputError(`ink must be 'auto', 'high' or 'low', got ${JSON.stringify(ink)}`);
    this.bundle = bundle;
    this.ink = ink ?? 'auto';
    this._inkGiven = ink !== undefined; // a loaded state's ink applies unless one was given here
    this.unknownLabel = unknownLabel;
    this.unknownThreshold = unknownThreshold;
    // Held support set: embeddings [M * D] (never the raw images) and one label per row, in the order
    // given (later samples appended). Every change re-adapts on all of it, so the head always equals
    // a fit() on everything held.
    this._support = new Float32Array(0);
    this._labels = [];
    this._head = null; // { classes, params, shots } or null while fewer than min_ways classes are held
  }

  /** The labels in column order (sorted like numpy.unique), or null while there is no head. */
  get classes() { return this._head ? [...this._head.classes] : null; }

  /** Samples held per class, as a Map in label order (also while there is no head yet). */
  classCounts() {
    const counts = new Map(uniqueSorted(this._labels).map((c) => [c, 0]));
    for (const y of this._labels) counts.set(y, counts.get(y) + 1);
    return counts;
  }

  /** Raw images -> embeddings Float32Array [N * D]. */
  async embed(images, what = 'images') {
    return this.bundle.embed(this.bundle.preprocess(images, { ink: this.ink, what }));
  }

  _minWays() { return (this.bundle.manifest.limits || {}).min_ways ?? 2; }

  _checkClasses(labels, { allowFewer = false } = {}) {
    labelKind(labels);
    const n = new Set(labels).size;
    const lo = this._minWays();
    const hi = (this.bundle.manifest.limits || {}).max_ways ?? 1e9;
    if (n < lo && !allowFewer) {
      throw new InputError(`the support set has ${n} class (${JSON.stringify(uniqueSorted(labels))}); expected at least ` +
        `${lo} different labels to tell apart`);
    }
    if (n > hi) throw new InputError(`${n} classes exceed this bundle's limit of ${hi}`);
  }

  async _embedSupport(images, labels) {
    // vector-input bundles also take one packed matrix { data, rows, cols } (vectors.js checks it)
    if (Array.isArray(images) ? images.length === 0 : this.bundle.vectorDim === null) {
      throw new InputError('the support set is empty; expected at least one image per class');
    }
    const x = this.bundle.preprocess(images, { ink: this.ink, what: 'support images' });
    if (!Array.isArray(labels) || labels.length !== x.n) {
      throw new InputError(`got ${x.n} images but ${Array.isArray(labels) ? labels.length : 'no'} labels; expected one label per image`);
    }
    labelKind(labels);
    return this.bundle.embed(x);
  }

  /** Re-adapt on all held embeddings and commit (state changes only once adapt succeeded). */
  async _set(support, labels) {
    const classes = uniqueSorted(labels);
    const col = new Map(classes.map((c, j) => [c, j]));
    const S = labels.length;
    const C = classes.length;
    const onehot = new Float32Array(S * C);
    const counts = new Array(C).fill(0);
    labels.forEach((y, r) => { onehot[r * C + col.get(y)] = 1; counts[col.get(y)] += 1; });
    const params = await this._headParams(support, S, onehot, C);
    this._support = support;
    this._labels = labels;
    this._head = { classes, params, shots: Math.min(...counts) };
  }

  /** The head parameters for a support set (refine.js's classifier refines them with its unlabelled pool). */
  async _headParams(support, S, onehot, C) { return this.bundle.adapt(support, S, onehot, C); }

  /** Hold these samples; adapt a head if there are enough classes, else hold none. */
  async _store(support, labels) {
    if (new Set(labels).size >= this._minWays()) return this._set(support, labels);
    this._support = support;
    this._labels = labels;
    this._head = null;
    return undefined;
  }

  /** Learn the classes in `labels` from `images`; replaces everything learned before. */
  async fit(images, labels, options = {}) {
    refuseUnlabeled(this.bundle, options); // { unlabeled }: bundles with a refine graph (refine.js)
    const emb = await this._embedSupport(images, labels);
    this._checkClasses(labels);
    await this._set(emb, [...labels]);
    return this;
  }

  /** fit on precomputed support embeddings (Float32Array [S * D]). */
  async fitEmbeddings(support, labels) {
    if (!Array.isArray(labels) || support.length !== labels.length * this.bundle.embeddingDim) {
      throw new InputError(`got ${support.length / this.bundle.embeddingDim} embeddings but ${Array.isArray(labels) ? labels.length : 'no'} labels; expected one label per image`);
    }
    this._checkClasses(labels);
    await this._set(Float32Array.from(support), [...labels]);
    return this;
  }

  /**
   * Add samples of known or new classes; equals fit() on everything held so far. Earlier samples
   * are kept as embeddings, nothing is re-embedded. Classes may arrive one at a time: until
   * min_ways (2) classes are held there is no head to predict with.
   */
  async partialFit(images, labels, options = {}) {
    refuseUnlabeled(this.bundle, options);
    const emb = await this._embedSupport(images, labels);
    const all = [...this._labels, ...labels];
    if (this._labels.length && labelKind(labels) !== labelKind(this._labels)) {
      throw new InputError('labels mix types with the classes already registered; expected all ints or all strings');
    }
    this._checkClasses(all, { allowFewer: true });
    const support = new Float32Array(this._support.length + emb.length);
    support.set(this._support);
    support.set(emb, this._support.length);
    await this._store(support, all);
    return this;
  }

  /** Add one class (or more samples of an existing one) from `images`. */
  async addClass(label, images) {
    // a packed matrix { data, rows, cols } of a vector-input bundle: `rows` labels (vectors.js checks the rest first)
    const rows = images?.rows;
    const n = Array.isArray(images) ? images.length : (Number.isSafeInteger(rows) && rows >= 0 && rows <= MAX_ROWS ? rows : 0);
    return this.partialFit(images, new Array(n).fill(label));
  }

  /** Remove class `label` and every stored embedding of it, then re-adapt without it. */
  async forget(label) {
    if (!this._labels.includes(label)) {
      throw new InputError(`cannot forget ${JSON.stringify(label)}: not a registered class; registered: ` +
        `${JSON.stringify(uniqueSorted(this._labels))}`);
    }
    const D = this.bundle.embeddingDim;
    const keep = [];
    this._labels.forEach((y, r) => { if (y !== label) keep.push(r); });
    const support = new Float32Array(keep.length * D);
    keep.forEach((r, k) => support.set(this._support.subarray(r * D, (r + 1) * D), k * D));
    await this._store(support, keep.map((r) => this._labels[r]));
    return this;
  }

  // ---------------------------------------------------------------------------------- state

  /**
   * The private state as the bytes of a state file (docs/state-format.md), exactly what the Python
   * runtime's FewShotClassifier.save writes for the same content: embeddings, labels, head, bundle
   * identity (never a sample). `key`: 32 bytes (Uint8Array) or an AES-GCM CryptoKey to encrypt it
   * with AES-256-GCM (see deriveStateKey). Store it where the platform keeps private data.
   */
  async saveState({ key = null } = {}) {
    return encodeState(this._stateData(), key);
  }

  /** What saveState writes (state.js encodeState's fields). */
  _stateData() {
    const head = this._head;
    // no head: Python writes sorted(set(labels), key=str)
    const labels = head ? [...head.classes] : [...new Set(this._labels)].sort((a, b) => compareCodePoints(String(a), String(b)));
    const order = new Map(labels.map((v, i) => [v, i]));
    const params = head ? Object.fromEntries(Object.entries(head.params).map(([n, t]) => [n, { data: t.data, shape: [...t.dims] }])) : {};
    return {
      bundleId: this.bundle.identity, labels, dim: this.bundle.embeddingDim, embeddings: this._support,
      sampleClass: this._labels.map((v) => order.get(v)), head: params, method: this.bundle.method, ink: this.ink,
      unlabeled: this._pool ?? null,
    };
  }

  /**
   * Restore a state saved by saveState or by the Python runtime (`bytes`: the file's bytes; `key` if it
   * is encrypted), replacing what this classifier holds. StateError naming the check on a damaged,
   * altered, wrongly keyed file or one saved for another bundle; the classifier is unchanged then.
   */
  async loadState(bytes, { key = null, source = 'state' } = {}) {
    const st = await decodeState(bytes, { key, source });
    this._checkState(st, source);
    await this._restore(st, source);
    if (Object.hasOwn(st.meta, 'ink') && !this._inkGiven) this.ink = st.meta.ink;
    return this;
  }

  /** The Python loader's refusals: another bundle, another width, too many classes, another method. */
  _checkState(st, source) {
    const { bundle } = this;
    if (st.bundleId !== bundle.identity) {
      throw new StateError(`${source} was saved for another bundle (${st.bundleId.slice(0, 12)}…), not ${bundle.source} ` +
        `(${bundle.identity.slice(0, 12)}…); adapt again with this bundle`);
    }
    this._checkStateShape(st, source);
    const limit = (bundle.manifest.limits || {}).max_ways;
    if (limit !== undefined && st.labels.length > limit) {
      throw new StateError(`${source} holds ${st.labels.length} classes; this bundle's limit is ${limit}`);
    }
    if ((st.meta.method ?? bundle.method) !== bundle.method) {
      throw new StateError(`${source} was adapted with method ${JSON.stringify(st.meta.method)}; this bundle's is ${JSON.stringify(bundle.method)}`);
    }
  }

  /** Embeddings of this bundle's width, and no class memory (that is a recurrent bundle's state). */
  _checkStateShape(st, source) {
    if (st.dim !== this.bundle.embeddingDim) {
      throw new StateError(`${source}: embeddings have shape [${st.sampleClass.length}, ${st.dim}], expected [M, ${this.bundle.embeddingDim}]`);
    }
    if (st.memory) {
      throw new StateError(`${source} holds class memory [C, ${st.memory.hidden}]: a recurrent bundle's state; this bundle's method is ` +
        `${JSON.stringify(this.bundle.method)}`);
    }
  }

  /** The unlabelled pool a state holds, checked against the bundle (Python: semisupervised.checked_pool). */
  _statePool(st, source) {
    const D = this.bundle.embeddingDim;
    if (!st.unlabeled || st.unlabeled.length === 0) return new Float32Array(0);
    const rows = st.unlabeled.length / D;
    const { refiner } = this.bundle;
    if (!refiner) throw new StateError(`${source} holds ${rows} unlabeled embeddings but ${this.bundle.source} has no refine graph to use them`);
    if (rows > refiner.maxUnlabeled) {
      throw new StateError(`${source}: unlabeled embeddings have shape [${rows}, ${D}]; expected at most [${refiner.maxUnlabeled}, ${D}]`);
    }
    return st.unlabeled;
  }

  /** Hold the state's embeddings (and pool) and re-adapt the head from them, as the Python runtime does. */
  async _restore(st, source) {
    const pool = this._statePool(st, source);
    const labels = st.sampleClass.map((i) => st.labels[i]);
    if (this._pool === undefined) return this._store(Float32Array.from(st.embeddings), labels);
    return this._withPool(pool, () => this._store(Float32Array.from(st.embeddings), labels));
  }

  _snapshot() {
    if (this._head) return this._head;
    const held = uniqueSorted(this._labels);
    if (held.length) {
      throw new InputError(`this classifier holds ${held.length} class (${JSON.stringify(held)}); it needs at least ` +
        `${this._minWays()} to tell apart: add another with addClass(label, images)`);
    }
    throw new InputError('this classifier has no classes to tell apart yet; call fit(images, labels) with at least two classes first');
  }

  async _logits(images) {
    const head = this._snapshot(); // one consistent head for this call, even if another call re-adapts meanwhile
    const emb = await this.embed(images);
    return { logits: await this.bundle.classify(emb, emb.length / this.bundle.embeddingDim, head.params), head };
  }

  /** Logits { data: Float32Array [N * C], n, c } (column j = classes[j]). */
  async decisionFunction(images) {
    return (await this._logits(images)).logits;
  }

  /** Class probabilities: one Array of C numbers per image (column j = classes[j]). */
  async predictProba(images) {
    return softmaxRows(await this.decisionFunction(images));
  }

  /**
   * The open-set threshold on the max logit: unknownThreshold if set, else the manifest's optional
   * open_set.threshold_by_shots entry for the calibrated shot count nearest to `shots`; null if none.
   */
  thresholdFor(shots) {
    if (this.unknownThreshold !== null && this.unknownThreshold !== undefined) return Number(this.unknownThreshold);
    const cal = (this.bundle.manifest.open_set || {}).threshold_by_shots;
    if (!cal || !Object.keys(cal).length) return null;
    const keys = Object.keys(cal).sort((a, b) => (Math.abs(Number(a) - shots) - Math.abs(Number(b) - shots)) || (Number(a) - Number(b)));
    return Number(cal[keys[0]]);
  }

  /**
   * The most probable label of each image. With { rejectUnknown: true }, unknownLabel where the
   * max logit is below the open-set threshold (thresholdFor the fewest shots of any class).
   */
  async predict(images, { rejectUnknown = false } = {}) {
    const { logits: { data, n, c }, head } = await this._logits(images);
    const thr = rejectUnknown ? this.thresholdFor(head.shots) : null;
    if (rejectUnknown && thr === null) {
      throw new InputError('this bundle has no calibrated open-set threshold; pass unknownThreshold to the classifier');
    }
    const out = [];
    for (let r = 0; r < n; r++) {
      let best = 0;
      for (let j = 1; j < c; j++) if (data[r * c + j] > data[r * c + best]) best = j; // first max, like argmax
      out.push(rejectUnknown && data[r * c + best] < thr ? this.unknownLabel : head.classes[best]);
    }
    return out;
  }
}

let OnlineClassifier = null;
let SemiSupervisedClassifier = null;
/** The classifier of bundles with a refine graph (refine.js: FewShotClassifier plus an unlabelled pool); FewShotClassifier.load picks it. */
function semiSupervisedClassifier() {
  SemiSupervisedClassifier ??= makeSemiSupervisedClassifier(FewShotClassifier);
  return SemiSupervisedClassifier;
}

/** The classifier of recurrent bundles (recurrent.js: per-class memory, no embeddings); FewShotClassifier.load picks it. */
function onlineClassifier() {
  OnlineClassifier ??= makeOnlineClassifier(FewShotClassifier, uniqueSorted, labelKind);
  return OnlineClassifier;
}

export { FewShotClassifier, onlineClassifier, semiSupervisedClassifier, uniqueSorted, labelKind, softmaxRows };
