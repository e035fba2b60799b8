/**
 * A verified bundle with its onnxruntime sessions: backbone (images -> embeddings), adapt (support set
 * -> head parameters) and classify (embeddings + head -> logits), plus update.onnx (recurrent bundles)
 * and refine.onnx (bundles with a refine section). The onnxruntime binding is a parameter: pass
 * `import * as ort from 'onnxruntime-node'` in Node, `onnxruntime-web` in a browser.
 */

import { BundleError, InputError } from './errors.js';
import { readBundle } from './bundle_reader.js';
import { preprocess } from './preprocess.js';
import { openRefiner } from './refine.js';
import { openMemoryUpdate } from './recurrent.js';
import { checkVectors } from './vectors.js';

const EMBED_CHUNK = 256;

/** `ort` looks like an onnxruntime binding (InferenceSession.create and Tensor); TypeError otherwise. */
function checkBinding(ort) {
  if (!ort || typeof ort.InferenceSession?.create !== 'function' || typeof ort.Tensor !== 'function') {
    throw new TypeError('the first argument must be the onnxruntime binding: import * as ort from ' +
      "'onnxruntime-node' (Node) or 'onnxruntime-web' (browser), then load(ort, source)");
  }
  return ort;
}

/**
 * An onnxruntime session over the verified bytes of graph `name`; a graph onnxruntime cannot load (a
 * bundle resealed around a broken file) is a BundleError naming it.
 */
async function openSession(ort, bytes, options, name, source) {
  try {
    return await ort.InferenceSession.create(new Uint8Array(bytes), options);
  } catch (err) {
    throw new BundleError(`${source}: onnxruntime cannot load ${name} (${String(err && err.message).slice(0, 300)}); expected a valid ONNX graph`);
  }
}

/**
 * `session.run(feeds)`; an onnxruntime failure at run time (a graph whose shapes do not fit the contract)
 * becomes a BundleError naming bundle `source`'s graph `name` (Python: loaded_bundle.run_graph).
 */
async function runGraph(session, source, name, feeds) {
  try {
    return await session.run(feeds);
  } catch (err) {
    throw new BundleError(`${source}: ${name} failed at run time (${String(err && err.message).slice(0, 300)})`);
  }
}

/** `source` is a bundle source ({ readManifest, readFile }); TypeError naming the helpers otherwise. */
function checkSource(source) {
  if (!source || typeof source.readManifest !== 'function' || typeof source.readFile !== 'function') {
    const hint = typeof source === 'string' ? ` (got the string ${JSON.stringify(source)}: in Node use sourceFromPath from ` +
      "'edgemeta-js/node', in a browser urlSource(url))" : '';
    throw new TypeError(`a bundle source must have readManifest() and readFile(name, bytes): zipSource(bytes), urlSource(url) or ` +
      `folderSource(path)${hint}`);
  }
  return source;
}

/** A CPU session options object; `threads` intra-op threads (1 gives predictable latency on a device). */
function sessionOptions(threads = 1) {
  return { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
}

class Bundle {
  /**
   * Read, verify and open a bundle from `source` (see bundle_reader.js: zipSource, urlSource,
   * node.js's folderSource / sourceFromPath) with the onnxruntime binding `ort` (onnxruntime-node or
   * onnxruntime-web, passed in); throws BundleError on any mismatch. Options: threads (intra-op threads, default 1); precision: 'auto' (the manifest's precision.default;
   * for bundles without one, the int8 backbone graphs.backbone_int8 when present; what the Python runtime does),
   * 'fp32' or 'int8'.
   */
  static async load(ort, source, { threads = 1, precision = 'auto' } = {}) {
    checkBinding(ort);
    if (!['auto', 'fp32', 'int8'].includes(precision)) throw new InputError(`precision must be 'auto', 'fp32' or 'int8', got ${JSON.stringify(precision)}`);
    const { manifest, files } = await readBundle(checkSource(source));
    const bundlePath = source.name ?? 'bundle';
    const g = manifest.graphs;
    if (manifest.regression) throw new BundleError(`${bundlePath} is a regression bundle; load it with RegressionBundle / FewShotRegressor`);
    const hasInt8 = typeof g.backbone_int8 === 'string' && files.has(g.backbone_int8);
    if (precision === 'int8' && !hasInt8) throw new BundleError(`${bundlePath} has no int8 backbone; use precision 'fp32'`);
    // auto: the manifest's precision.default (export sets it from accuracy and measured speed); a
    // manifest without one (bundles exported before the speed gate) means int8 whenever present.
    const declared = (manifest.precision && typeof manifest.precision === 'object' && manifest.precision.default) || 'int8';
    const useInt8 = precision === 'int8' || (precision === 'auto' && hasInt8 && declared === 'int8');
    const opts = sessionOptions(threads);
    // sessions are built from the verified bytes: nothing is re-read from disk between check and use
    const [backbone, adapt, classify] = await Promise.all([useInt8 ? g.backbone_int8 : g.backbone, g.adapt, g.classify].map(
      (f) => openSession(ort, files.get(f), opts, f, bundlePath)));
    const bundle = new Bundle(manifest, String(bundlePath), backbone, adapt, classify);
    bundle.ort = ort;
    bundle.precision = useInt8 ? 'int8' : 'fp32';
    bundle.graphNames = { backbone: useInt8 ? g.backbone_int8 : g.backbone, adapt: g.adapt, classify: g.classify };
    await bundle.smokeTest();
    // recurrent bundles (format 3): update.onnx, the per-class memory update (recurrent.js)
    bundle.memoryUpdate = manifest.recurrent ? await openMemoryUpdate(bundle, files.get(manifest.recurrent.graph), opts) : null;
    // bundles with a refine section (format 3): refine.onnx, unlabelled samples refine the prototypes (refine.js)
    bundle.refiner = manifest.refine ? await openRefiner(bundle, files.get(manifest.refine.graph), opts) : null;
    return bundle;
  }

  constructor(manifest, source, backbone, adapt, classify) {
    this.manifest = manifest;
    this.source = source;
    this.method = manifest.method;
    if (!Array.isArray(manifest.head.outputs) || !manifest.head.outputs.every((n) => typeof n === 'string')) {
      throw new BundleError(`${source}: manifest head.outputs must be a list of graph output names`);
    }
    // vector-input bundles (format 3): backbone.onnx takes `inputs` [N, D], D = vector_input.dim (vectors.js)
    this.vectorDim = manifest.vector_input ? Number(manifest.vector_input.dim) : null;
    const vectors = this.vectorDim !== null;
    if (!Array.isArray(manifest.input.shape) || (!vectors && (!Array.isArray(manifest.preprocess.size) || manifest.preprocess.size.length !== 2))) {
      throw new BundleError(`${source}: manifest input.shape and preprocess.size must be lists ([N, C, H, W] and [H, W])`);
    }
    this.paramNames = [...manifest.head.outputs];
    this.embeddingDim = Number(manifest.embedding.dim);
    this.preprocessSpec = manifest.preprocess;
    this.identity = manifest.integrity.manifest_sha256;
    this.sessions = { backbone, adapt, classify };
    const expect = [
      [backbone.inputNames, [vectors ? 'inputs' : 'images']], [backbone.outputNames, ['embeddings']],
      [adapt.inputNames, ['support_embeddings', 'support_labels_onehot']], [adapt.outputNames, this.paramNames],
      [classify.inputNames, ['embeddings', ...this.paramNames]], [classify.outputNames, ['logits']],
    ];
    for (const [got, want] of expect) {
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        throw new BundleError(`${source}: graph inputs/outputs ${JSON.stringify(got)} do not follow the contract ${JSON.stringify(want)}`);
      }
    }
    // the manifest's input shape and preprocess size must be what backbone.onnx takes (symbolic dims = -1)
    const meta = (list) => (Array.isArray(list) && list[0] && Array.isArray(list[0].shape) ? list[0].shape : null);
    const graphIn = meta(backbone.inputMetadata);
    if (graphIn) {
      const g = graphIn.slice(1).map((v) => (Number.isInteger(v) ? v : -1));
      const spec = manifest.preprocess;
      for (const shape of vectors ? [[this.vectorDim]] : [manifest.input.shape.slice(1), [spec.channels ?? 1, ...spec.size]]) {
        if (JSON.stringify(shape.map(Number)) !== JSON.stringify(g)) {
          throw new BundleError(`${source}: the manifest's input ${JSON.stringify(shape)} does not match backbone.onnx's input ` +
            `${JSON.stringify(graphIn.slice(1))}; the manifest and graphs are from different exports`);
        }
      }
    }
    const graphOut = meta(backbone.outputMetadata);
    if (graphOut && Number.isInteger(graphOut[graphOut.length - 1]) && graphOut[graphOut.length - 1] !== this.embeddingDim) {
      throw new BundleError(`${source}: embedding.dim is ${this.embeddingDim} but backbone.onnx outputs ${graphOut[graphOut.length - 1]}-d embeddings`);
    }
  }

  /**
   * Run the three graphs once on a tiny synthetic task (a blank and a full image; 3 support rows of 2
   * classes) and check every output's shape and finiteness, so a bundle that loads is one fit / predict
   * can use (Python: Bundle._smoke_test).
   */
  async smokeTest() {
    const [C, H, W] = this.vectorDim !== null ? [1, 1, this.vectorDim] : [this.preprocessSpec.channels ?? 1, ...this.preprocessSpec.size].map(Number);
    const data = new Float32Array(2 * C * H * W);
    data.fill(1, C * H * W);
    const D = this.embeddingDim;
    const emb = await this.embed({ data, n: 2, channels: C, height: H, width: W });
    this.expect('backbone', 'embeddings', emb, 2 * D);
    const support = new Float32Array(3 * D);
    support.set(emb.subarray(0, D), 0);
    support.set(emb.subarray(D), D);
    support.set(emb.subarray(0, D), 2 * D);
    const params = await this.adapt(support, 3, Float32Array.of(1, 0, 0, 1, 1, 0), 2);
    for (const [name, t] of Object.entries(params)) this.expect('adapt', name, t.data, name === 'bias' ? 2 : 2 * D);
    this.expect('classify', 'logits', (await this.classify(support.subarray(0, D), 1, params)).data, 2);
  }

  /** `values` holds `count` finite numbers; BundleError naming the graph and output otherwise. */
  expect(role, what, values, count) {
    if (!values || values.length !== count || !values.every(Number.isFinite)) {
      throw new BundleError(`${this.source}: ${this.graphNames[role]} answers a 2-class test task with ${what} of ` +
        `${values ? values.length : 0} values (finite: ${!!values && values.every(Number.isFinite)}); expected ${count} finite values`);
    }
  }

  /**
   * Raw images -> preprocessed batch (see preprocess()); for a vector-input bundle, rows [N, D] -> the
   * checked float32 batch { data, n } (vectors.js: the normalisation is inside backbone.onnx).
   */
  preprocess(images, { ink = 'auto', what = 'images' } = {}) {
    if (this.vectorDim !== null) return checkVectors(images, this.vectorDim, what);
    return preprocess(images, this.preprocessSpec, { ink, what });
  }

  /**
   * Preprocessed batch [N, C, H, W] (vector bundles: { data, n } of [N, vectorDim]) -> embeddings
   * Float32Array [N * D] (row-major), in chunks of 256 samples.
   */
  async embed(batch) {
    const vectors = this.vectorDim !== null;
    const { n } = batch;
    const [C, H, W] = vectors ? [1, 1, this.vectorDim] : [batch.channels ?? 1, batch.height, batch.width];
    const D = this.embeddingDim;
    const out = new Float32Array(n * D);
    for (let s = 0; s < n; s += EMBED_CHUNK) {
      const m = Math.min(EMBED_CHUNK, n - s);
      const x = new this.ort.Tensor('float32', batch.data.subarray(s * C * H * W, (s + m) * C * H * W), vectors ? [m, W] : [m, C, H, W]);
      const feeds = vectors ? { inputs: x } : { images: x };
      const { embeddings } = await runGraph(this.sessions.backbone, this.source, this.graphNames.backbone, feeds);
      if (embeddings.dims[1] !== D) throw new BundleError(`${this.source}: backbone gives ${embeddings.dims[1]}-d embeddings, the manifest says ${D}`);
      out.set(embeddings.data, s * D);
    }
    return out;
  }

  /** Support embeddings [S * D] + one-hot labels [S * C] -> head parameters { name: ort.Tensor }. */
  async adapt(support, S, onehot, C) {
    const D = this.embeddingDim;
    const res = await runGraph(this.sessions.adapt, this.source, this.graphNames.adapt, {
      support_embeddings: new this.ort.Tensor('float32', support, [S, D]),
      support_labels_onehot: new this.ort.Tensor('float32', onehot, [S, C]),
    });
    return Object.fromEntries(this.paramNames.map((name) => [name, res[name]]));
  }

  /** Embeddings [N * D] + head parameters -> logits { data: Float32Array [N * C], n, c }. */
  async classify(embeddings, n, params) {
    const res = await runGraph(this.sessions.classify, this.source, this.graphNames.classify, {
      embeddings: new this.ort.Tensor('float32', embeddings, [n, this.embeddingDim]), ...params,
    });
    return { data: res.logits.data, n: res.logits.dims[0], c: res.logits.dims[1] };
  }

  async release() {
    await Promise.all(Object.values(this.sessions).map((s) => s.release()));
  }
}

export { Bundle, sessionOptions, openSession, runGraph, checkBinding, checkSource, EMBED_CHUNK };
