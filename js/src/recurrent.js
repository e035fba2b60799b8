/**
 * Online learning with a recurrent bundle (method `recurrent`, bundle format version 3, docs/recurrent.md):
 * per class a fixed-size memory row [H] instead of the samples' embeddings. Mirrors
 * edgemeta/runtime/recurrent_memory.py.
 *
 * update.onnx: memory [C, H] + fresh [C] (1: start from the learned initial memory) + support_embeddings [S, D]
 * + support_labels_onehot [S, C] -> updated_memory [C, H] and the head rows (weight [C, D], bias [C]).
 * partialFit(a) then partialFit(b) equals fit(a + b) in that order; only the classes read go through the
 * graph; forget(label) drops a row exactly; one sample cannot be removed.
 */

import { BundleError, InputError, StateError } from './errors.js';
import { openSession, runGraph } from './bundle.js';

const INPUTS = ['memory', 'fresh', 'support_embeddings', 'support_labels_onehot'];

/** The update.onnx session of a verified recurrent bundle, its I/O checked against the contract. */
async function openMemoryUpdate(bundle, graph, options) {
  const { manifest, source, ort } = bundle;
  const session = await openSession(ort, graph, options, manifest.recurrent.graph, source);
  const outputs = ['updated_memory', ...bundle.paramNames];
  if (JSON.stringify(session.inputNames) !== JSON.stringify(INPUTS) || JSON.stringify(session.outputNames) !== JSON.stringify(outputs)) {
    throw new BundleError(`${source}: ${manifest.recurrent.graph} has inputs ${JSON.stringify(session.inputNames)} and outputs ` +
      `${JSON.stringify(session.outputNames)}; the contract says ${JSON.stringify(INPUTS)} and ${JSON.stringify(outputs)}`);
  }
  const update = new MemoryUpdate(ort, session, Number(manifest.recurrent.hidden), bundle.embeddingDim, bundle.paramNames,
    manifest.recurrent.graph, source);
  update.countsInMemory = manifest.recurrent.rule === 'gru_class_mean';   // a row's last number: its count
  // smoke run: two fresh classes, three samples; every output of its contract's shape and finite
  const D = bundle.embeddingDim;
  const support = Float32Array.from({ length: 3 * D }, (_, i) => (i % 7) / 7);
  const out = await update.run(new Float32Array(2 * update.hidden), Float32Array.of(1, 1), support, Float32Array.of(1, 0, 0, 1, 1, 0), 2, 3);
  const ok = out.memory.length === 2 * update.hidden && Object.values(out.params).every((p) => p.length % 2 === 0)
    && [out.memory, ...Object.values(out.params)].every((a) => a.every(Number.isFinite));
  if (!ok) throw new BundleError(`${source}: ${manifest.recurrent.graph} answers a 2-class test update with non-finite or misshapen outputs`);
  return update;
}

class MemoryUpdate {
  constructor(ort, session, hidden, dim, paramNames, graph = 'update.onnx', source = 'bundle') {
    Object.assign(this, { ort, session, hidden, dim, paramNames, graph, source });
  }

  /** memory Float32Array [C * H], fresh [C], support [S * D], onehot [S * C] -> { memory, params: {name: Float32Array} }. */
  async run(memory, fresh, support, onehot, C, S) {
    const res = await runGraph(this.session, this.source, this.graph, {
      memory: new this.ort.Tensor('float32', memory, [C, this.hidden]),
      fresh: new this.ort.Tensor('float32', fresh, [C]),
      support_embeddings: new this.ort.Tensor('float32', support, [S, this.dim]),
      support_labels_onehot: new this.ort.Tensor('float32', onehot, [S, C]),
    });
    this.ranks = Object.fromEntries(this.paramNames.map((n) => [n, res[n].dims.length]));   // weight 2, bias 1
    return { memory: res.updated_memory.data, params: Object.fromEntries(this.paramNames.map((n) => [n, res[n].data])) };
  }
}

/** The per-class rows a recurrent classifier holds: label -> { memory [H], shots, head: {name: row} }. */
async function readInto(update, rows, support, labels, sortLabels) {
  const touched = sortLabels([...new Set(labels)]);
  const col = new Map(touched.map((c, j) => [c, j]));
  const C = touched.length;
  const S = labels.length;
  const H = update.hidden;
  const memory = new Float32Array(C * H);
  const fresh = new Float32Array(C);
  touched.forEach((c, j) => {
    if (rows.has(c)) memory.set(rows.get(c).memory, j * H);
    else fresh[j] = 1;
  });
  const onehot = new Float32Array(S * C);
  const counts = new Array(C).fill(0);
  labels.forEach((y, r) => { onehot[r * C + col.get(y)] = 1; counts[col.get(y)] += 1; });
  const out = await update.run(memory, fresh, support, onehot, C, S);
  const next = new Map(rows);
  touched.forEach((c, j) => {
    const head = {};
    for (const [name, data] of Object.entries(out.params)) {
      const width = data.length / C;
      head[name] = data.slice(j * width, (j + 1) * width);
    }
    next.set(c, { memory: out.memory.slice(j * H, (j + 1) * H), shots: (rows.has(c) ? rows.get(c).shots : 0) + counts[j], head });
  });
  return next;
}

/** Stack the rows (in label order) into head tensors: weight [C, D], bias [C]. */
function stackHead(rows, classes, update) {
  const params = {};
  for (const name of update.paramNames) {
    const width = rows.get(classes[0]).head[name].length;
    const data = new Float32Array(classes.length * width);
    classes.forEach((c, j) => data.set(rows.get(c).head[name], j * width));
    params[name] = new update.ort.Tensor('float32', data, update.ranks[name] === 1 ? [classes.length] : [classes.length, width]);
  }
  return params;
}

/** Builds the OnlineClassifier class on top of classifier.js's FewShotClassifier (passed in: no require cycle). */
function makeOnlineClassifier(FewShotClassifier, uniqueSorted, labelKind) {
  return class OnlineClassifier extends FewShotClassifier {
    constructor(bundle, options = {}) {
      super(bundle, options);
      if (!bundle.memoryUpdate) throw new BundleError(`${bundle.source} is not a recurrent bundle (method ${JSON.stringify(bundle.method)})`);
      this._rows = new Map(); // label -> { memory, shots, head }: never embeddings
    }

    classCounts() {
      return new Map(uniqueSorted([...this._rows.keys()]).map((c) => [c, this._rows.get(c).shots]));
    }

    /** Memory Float32Array [C * H] in label order (what the state file's `memory` holds). */
    memory() {
      const classes = uniqueSorted([...this._rows.keys()]);
      const H = this.bundle.memoryUpdate.hidden;
      const out = new Float32Array(classes.length * H);
      classes.forEach((c, j) => out.set(this._rows.get(c).memory, j * H));
      return out;
    }

    _commit(rows) {
      this._rows = rows;
      this._labels = [...rows.keys()];
      const classes = uniqueSorted(this._labels);
      this._head = classes.length >= this._minWays()
        ? { classes, params: stackHead(rows, classes, this.bundle.memoryUpdate), shots: Math.min(...classes.map((c) => rows.get(c).shots)) }
        : null;
    }

    async _read(support, labels, start, allowFewer) {
      const all = [...start.keys(), ...labels];
      if (start.size && labelKind(labels) !== labelKind([...start.keys()])) {
        throw new InputError('labels mix types with the classes already registered; expected all ints or all strings');
      }
      this._checkClasses(all, { allowFewer });
      this._commit(await readInto(this.bundle.memoryUpdate, start, support, labels, uniqueSorted));
      return this;
    }

    /** Learn the classes in `labels` from `images`, read in the order given; replaces earlier classes. */
    async fit(images, labels) {
      return this._read(await this._embedSupport(images, labels), [...labels], new Map(), false);
    }

    async fitEmbeddings(support, labels) {
      if (!Array.isArray(labels) || support.length !== labels.length * this.bundle.embeddingDim) {
        throw new InputError(`got ${support.length / this.bundle.embeddingDim} embeddings but ${Array.isArray(labels) ? labels.length : 'no'} labels; expected one label per image`);
      }
      return this._read(Float32Array.from(support), [...labels], new Map(), false);
    }

    /** Read more samples into the memory, in the order given: equals fit() on everything in that order. */
    async partialFit(images, labels) {
      return this._read(await this._embedSupport(images, labels), [...labels], this._rows, true);
    }

    /** Remove class `label` (its memory row): exact, the other classes are unchanged. */
    async forget(label) {
      if (!this._rows.has(label)) {
        throw new InputError(`cannot forget ${JSON.stringify(label)}: not a registered class; registered: ` +
          `${JSON.stringify(uniqueSorted([...this._rows.keys()]))}`);
      }
      const rows = new Map(this._rows);
      rows.delete(label);
      this._commit(rows);
      return this;
    }

    /** The state a recurrent classifier saves: memory [C, H], samples per class and head rows; no embeddings. */
    _stateData() {
      const update = this.bundle.memoryUpdate;
      const classes = uniqueSorted([...this._rows.keys()]);
      const D = this.bundle.embeddingDim;
      const head = {};
      if (classes.length) {
        for (const [name, t] of Object.entries(stackHead(this._rows, classes, update))) head[name] = { data: t.data, shape: [...t.dims] };
      } else {
        for (const name of update.paramNames) head[name] = { data: new Float32Array(0), shape: update.ranks[name] === 1 ? [0] : [0, D] };
      }
      return {
        bundleId: this.bundle.identity, labels: classes, dim: D, embeddings: new Float32Array(0), sampleClass: [], head,
        method: this.bundle.method, ink: this.ink, memory: { data: this.memory(), hidden: update.hidden },
        memoryShots: classes.map((c) => this._rows.get(c).shots),
      };
    }

    /** Class memory of this bundle's width and no embeddings (Python: OnlineClassifier.load). */
    _checkStateShape(st, source) {
      const { hidden } = this.bundle.memoryUpdate;
      if (!st.memory || st.embeddings.length) {
        throw new StateError(`${source} holds embeddings and no memory; a recurrent bundle's state holds memory [C, ${hidden}] only ` +
          '(saved for a bundle of another method?)');
      }
      if (st.memory.hidden !== hidden) throw new StateError(`${source}: memory has shape [${st.labels.length}, ${st.memory.hidden}], expected [C, ${hidden}]`);
      if (this.bundle.memoryUpdate.countsInMemory) {
        const j = st.labels.findIndex((_, i) => st.memory.data[i * hidden + hidden - 1] !== Number(st.memoryShots[i]));
        if (j >= 0) {
          throw new StateError(`${source}: the memory row of class ${JSON.stringify(st.labels[j])} counts ${st.memory.data[j * hidden + hidden - 1]} ` +
            `samples where memory_shots says ${st.memoryShots[j]}; expected the same count (an altered state file)`);
        }
      }
    }

    /** The rows of a loaded state: the head read out of each memory again (no samples), as the Python runtime does. */
    async _restore(st) {
      const update = this.bundle.memoryUpdate;
      const C = st.labels.length;
      const rows = new Map();
      if (C) {
        const H = update.hidden;
        const out = await update.run(st.memory.data, new Float32Array(C), new Float32Array(0), new Float32Array(0), C, 0);
        st.labels.forEach((c, j) => {
          const head = {};
          for (const [name, data] of Object.entries(out.params)) {
            const width = data.length / C;
            head[name] = data.slice(j * width, (j + 1) * width);
          }
          rows.set(c, { memory: out.memory.slice(j * H, (j + 1) * H), shots: st.memoryShots[j], head });
        });
      }
      this._commit(rows);
    }

    /** Not possible: a sample's contribution cannot be taken out of a class's memory. */
    forgetSample() {
      throw new InputError('a recurrent bundle keeps one memory per class, not the samples: one sample cannot be removed; ' +
        'forget(label) drops the whole class, then partialFit its other samples again');
    }
  };
}

export { openMemoryUpdate, makeOnlineClassifier, MemoryUpdate, INPUTS };
