/**
 * Semi-supervised refinement (bundle format version 3, the `refine` section, docs/semi-supervised.md):
 * unlabelled samples refine the prototypes a few labels taught. Mirrors edgemeta/runtime/semisupervised.py.
 *
 * refine.onnx: support_embeddings [S, D] + support_labels_onehot [S, C] + unlabeled_embeddings [U, D]
 * -> the head parameters (prototypes [C, D], masked soft k-means), which classify.onnx consumes as it
 * consumes adapt.onnx's. The classifier keeps an unlabelled pool of embeddings only (never the samples),
 * at most refine.max_unlabeled rows, the most recent; forget(label) also drops the pooled rows the
 * current head assigns to that class.
 */

import { BundleError, InputError } from './errors.js';
import { openSession, runGraph } from './bundle.js';

const INPUTS = ['support_embeddings', 'support_labels_onehot', 'unlabeled_embeddings'];
const SMOKE_TOL = 1e-4; // refine.onnx with no unlabelled sample must give adapt.onnx's prototypes

class Refiner {
  constructor(ort, session, dim, outputs, maxUnlabeled, graph, source) {
    Object.assign(this, { ort, session, dim, outputs, maxUnlabeled, graph, source });
  }

  /** support [S * D], onehot [S * C], unlabeled [U * D] (Float32Arrays) -> head parameters { name: ort.Tensor }. */
  async refine(support, S, onehot, C, unlabeled, U) {
    const res = await runGraph(this.session, this.source, this.graph, {
      support_embeddings: new this.ort.Tensor('float32', support, [S, this.dim]),
      support_labels_onehot: new this.ort.Tensor('float32', onehot, [S, C]),
      unlabeled_embeddings: new this.ort.Tensor('float32', unlabeled, [U, this.dim]),
    });
    return Object.fromEntries(this.outputs.map((name) => [name, res[name]]));
  }
}

/** The refine.onnx session of a verified bundle: I/O names against the contract, then a smoke run. */
async function openRefiner(bundle, graph, options) {
  const { manifest, source, ort } = bundle;
  const section = manifest.refine;
  const session = await openSession(ort, graph, options, section.graph, source);
  const outputs = [...section.outputs];
  if (JSON.stringify(session.inputNames) !== JSON.stringify(INPUTS) || JSON.stringify(session.outputNames) !== JSON.stringify(outputs)) {
    throw new BundleError(`${source}: ${section.graph} inputs/outputs ${JSON.stringify([...session.inputNames, ...session.outputNames])} ` +
      `do not follow the contract ${JSON.stringify([...INPUTS, ...outputs])}`);
  }
  const refiner = new Refiner(ort, session, bundle.embeddingDim, outputs, Number(section.max_unlabeled), section.graph, source);
  const D = bundle.embeddingDim;
  const support = Float32Array.from({ length: 3 * D }, (_, i) => Math.sin(i + 1));
  const onehot = Float32Array.of(1, 0, 0, 1, 1, 0);
  const plain = await bundle.adapt(support, 3, onehot, 2);
  const empty = await refiner.refine(support, 3, onehot, 2, new Float32Array(0), 0);
  const some = await refiner.refine(support, 3, onehot, 2, support.map((v) => v + 0.1).subarray(0, 2 * D), 2);
  for (const name of outputs) {
    const want = plain[name].data;
    for (const got of [empty[name].data, some[name].data]) {
      if (got.length !== want.length || !got.every(Number.isFinite)) {
        throw new BundleError(`${source}: ${section.graph} answers a 2-class test task with a non-finite or misshapen ${name}`);
      }
    }
    const top = want.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    const gap = empty[name].data.reduce((m, v, i) => Math.max(m, Math.abs(v - want[i])), 0);
    if (gap > SMOKE_TOL * (1 + top)) {
      throw new BundleError(`${source}: ${section.graph} without unlabelled samples differs from adapt.onnx by ${gap} in ${name}; ` +
        'expected the same head (the graphs are from different exports)');
    }
  }
  return refiner;
}

/** InputError saying why a bundle cannot use unlabelled samples (Python: semisupervised.require_refiner). */
function noRefiner(bundle) {
  if (bundle.method !== 'proto') {
    return new InputError(`unlabeled samples refine prototypes; this bundle's method is '${bundle.method}', whose linear head has none ` +
      "(use a 'proto' bundle with a refine graph)");
  }
  return new InputError(`${bundle.source} has no refine graph, so unlabeled samples cannot be used; add one with ` +
    `\`edgemeta add-refine ${bundle.source} OUT\``);
}

/** Refuse `{ unlabeled }` on a classifier whose bundle has no refine graph (the base classifier's fit/partialFit). */
function refuseUnlabeled(bundle, options) {
  if (options && options.unlabeled != null) throw noRefiner(bundle);
}

/** `pool` [P * D] then `rows` [R * D], keeping the `limit` most recent rows. */
function bounded(pool, rows, D, limit) {
  const all = new Float32Array(pool.length + rows.length);
  all.set(pool);
  all.set(rows, pool.length);
  const n = all.length / D;
  return n > limit ? all.slice((n - limit) * D) : all;
}

/** The classifier of bundles with a refine graph: FewShotClassifier plus the unlabelled pool. */
function makeSemiSupervisedClassifier(Base) {
  return class SemiSupervisedClassifier extends Base {
    constructor(bundle, options) {
      super(bundle, options);
      this._pool = new Float32Array(0); // unlabelled embeddings [U * D]
    }

    /** Unlabelled embeddings held (at most refine.max_unlabeled). */
    get poolSize() { return this._pool.length / this.bundle.embeddingDim; }

    async _embedUnlabeled(images) {
      if (images == null) return new Float32Array(0);
      if (!Array.isArray(images)) throw new InputError('unlabeled must be an Array of images');
      if (images.length === 0) return new Float32Array(0);
      return this.bundle.embed(this.bundle.preprocess(images, { ink: this.ink, what: 'unlabeled images' }));
    }

    /** Run `op` with `pool` held; the previous pool comes back if it fails. */
    async _withPool(pool, op) {
      const old = this._pool;
      this._pool = pool;
      try {
        return await op();
      } catch (err) {
        this._pool = old;
        throw err;
      }
    }

    /** The head: adapt.onnx with an empty pool, refine.onnx otherwise (the base classifier's _set calls this). */
    async _headParams(support, S, onehot, C) {
      const U = this.poolSize;
      if (U === 0) return this.bundle.adapt(support, S, onehot, C);
      return this.bundle.refiner.refine(support, S, onehot, C, this._pool, U);
    }

    _bounded(pool, rows) {
      return bounded(pool, rows, this.bundle.embeddingDim, this.bundle.refiner.maxUnlabeled);
    }

    /** Learn `labels` from `images`, refined by `unlabeled` images; replaces earlier classes and the pool. */
    async fit(images, labels, { unlabeled = null } = {}) {
      const rows = await this._embedUnlabeled(unlabeled);
      return this._withPool(this._bounded(new Float32Array(0), rows), () => super.fit(images, labels));
    }

    /** fit on precomputed embeddings; `unlabeled`: Float32Array [U * D]. */
    async fitEmbeddings(support, labels, { unlabeled = null } = {}) {
      const rows = unlabeled == null ? new Float32Array(0) : Float32Array.from(unlabeled);
      if (rows.length % this.bundle.embeddingDim !== 0 || !rows.every(Number.isFinite)) {
        throw new InputError(`unlabeled embeddings must be finite numbers, a multiple of ${this.bundle.embeddingDim} long`);
      }
      return this._withPool(this._bounded(new Float32Array(0), rows), () => super.fitEmbeddings(support, labels));
    }

    /** Add labelled samples (and `unlabeled` images to the pool); equals fit() on everything seen so far. */
    async partialFit(images, labels, { unlabeled = null } = {}) {
      const rows = await this._embedUnlabeled(unlabeled);
      return this._withPool(this._bounded(this._pool, rows), () => super.partialFit(images, labels));
    }

    /** Add images without labels to the pool and refine the head with them. */
    async addUnlabeled(images) {
      if (!Array.isArray(images) || images.length === 0) throw new InputError('no unlabeled images given; expected at least one');
      const rows = await this._embedUnlabeled(images);
      await this._withPool(this._bounded(this._pool, rows), () => this._store(this._support, this._labels));
      return this;
    }

    /** Remove class `label`, its embeddings, and the pooled rows the current head assigns to it. */
    async forget(label) {
      const D = this.bundle.embeddingDim;
      const U = this.poolSize;
      let pool = this._pool;
      if (this._labels.includes(label) && U > 0) {
        if (!this._head) {
          pool = new Float32Array(0); // one class held: every row is its
        } else {
          const column = this._head.classes.indexOf(label);
          const { data, c } = await this.bundle.classify(this._pool, U, this._head.params);
          const keep = [];
          for (let r = 0; r < U; r += 1) {
            let best = 0;
            for (let j = 1; j < c; j += 1) if (data[r * c + j] > data[r * c + best]) best = j;
            if (best !== column) keep.push(r);
          }
          pool = new Float32Array(keep.length * D);
          keep.forEach((r, k) => pool.set(this._pool.subarray(r * D, (r + 1) * D), k * D));
        }
      }
      return this._withPool(pool, () => super.forget(label));
    }
  };
}

export { openRefiner, makeSemiSupervisedClassifier, refuseUnlabeled, noRefiner, bounded, Refiner };
