/**
 * The manifest rules of the Python reader (edgemeta/contract/manifest_schema.py and the version
 * rules of docs/bundle-format.md), for every field this JavaScript runtime reads.
 *
 * Rules run on the parse tree of canonical_json.js's parsePyJson ({t: 'obj'|'arr'|'str'|'int'|'float'|'lit', v}),
 * not on JSON.parse values, so an integer field written as 1.0 is refused exactly as Python's
 * `type(v) is int` refuses it. Unknown fields are allowed and ignored, as in Python.
 */

import { BundleError } from './errors.js';

const FORMAT_NAME = 'edgemeta-bundle';
const FORMAT_VERSIONS = [1, 2, 3]; // 1: single-channel only; 2: adds colour (RGB) bundles; 3: adds capability sections (V3_SECTIONS)
const SECTION_VERSION = 3;
const RESIZE_FILTERS = ['nearest', 'box', 'bilinear', 'hamming', 'bicubic', 'lanczos'];
const HEAD_OUTPUTS = {
  proto: ['prototypes'], metasgd: ['weight', 'bias'], ridge: ['weight', 'bias'], finetune: ['weight', 'bias'], recurrent: ['weight', 'bias'],
};
const GRAPH_FILES = { backbone: 'backbone.onnx', adapt: 'adapt.onnx', classify: 'classify.onnx' };
const INT8_GRAPH = 'backbone.int8.onnx';
const MAX_FILES = 16;
const MAX_FILE_BYTES = 2 ** 30;
const MAX_BUNDLE_BYTES = 512 * 2 ** 20; // all listed files together: what loading a bundle may cost at most
const MAX_SIDE = 1024;
const MAX_DIM = 2 ** 16;
const MAX_WAYS = 1000000;
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
const SHOTS_KEY = /^[1-9][0-9]{0,5}$/;
const SHA256 = /^[0-9a-f]{64}$/;

const KIND = { obj: 'object', arr: 'list', str: 'string', int: 'integer', float: 'number' };
const kindOf = (n) => (n.t === 'lit' ? (n.v === 'null' ? 'null' : 'boolean') : KIND[n.t]);
function short(n) {
  let text;
  if (n.t === 'str') text = JSON.stringify(n.v);
  else if (n.t === 'int' || n.t === 'lit') text = String(n.v);
  else if (n.t === 'float') text = Number.isInteger(n.v) ? n.v.toFixed(1) : String(n.v); // 1.0, as Python writes it
  else if (n.t === 'arr') text = `[${n.v.map(short).join(', ')}]`;
  else text = `{${[...n.v.keys()].map((k) => JSON.stringify(k)).join(', ')}}`;
  return text.length <= 60 ? text : `${text.slice(0, 57)}...`;
}

/** A plain listed file name: letters, digits, `_ . -`, no folder, not hidden, not `..`. */
const plainFileName = (name) => typeof name === 'string' && FILE_NAME.test(name) && name !== '.' && name !== '..';

/** A rule: `ok(node)` and `expected` (words for the message); `check` throws BundleError naming the field. */
class Rule {
  check(node, path, source) {
    if (!this.ok(node)) {
      throw new BundleError(`${source}: manifest field ${path} must be ${this.expected}, got ${kindOf(node)} ${short(node)}`);
    }
  }
}

class Const extends Rule {
  constructor(value) { super(); this.value = value; this.expected = JSON.stringify(value); }
  ok(n) {
    if (typeof this.value === 'string') return n.t === 'str' && n.v === this.value;
    return n.t === 'int' && BigInt(n.v) === BigInt(this.value);
  }
}

class OneOf extends Rule {
  constructor(values) { super(); this.values = values; this.expected = `one of ${JSON.stringify(values)}`; }
  ok(n) { return n.t === 'str' && this.values.includes(n.v); }
}

class Int extends Rule {
  constructor(lo, hi) { super(); this.lo = BigInt(lo); this.hi = BigInt(hi); this.expected = `an integer in [${lo}, ${hi}]`; }
  ok(n) { return n.t === 'int' && BigInt(n.v) >= this.lo && BigInt(n.v) <= this.hi; }
}

class Num extends Rule {
  constructor(lo = -1e300, hi = 1e300) { super(); this.lo = lo; this.hi = hi; this.expected = `a number in [${lo}, ${hi}]`; }
  ok(n) {
    const v = n.t === 'int' ? Number(n.v) : n.t === 'float' ? n.v : NaN;
    return v >= this.lo && v <= this.hi;
  }
}

class Str extends Rule {
  constructor(pattern = /^[\s\S]{0,4096}$/u) { super(); this.pattern = pattern; this.expected = `a string matching ${pattern.source}`; }
  ok(n) { return n.t === 'str' && this.pattern.test(n.v); }
}

class Nullable extends Rule {
  constructor(rule) { super(); this.rule = rule; this.expected = `null or ${rule.expected}`; }
  check(n, path, source) { if (!(n.t === 'lit' && n.v === 'null')) this.rule.check(n, path, source); }
}

class List extends Rule {
  constructor(item, minLen = 0, maxLen = 1024, exact = null) {
    super();
    Object.assign(this, { item, minLen, maxLen, exact });
    this.expected = exact ? `the list ${JSON.stringify(exact)}` : `a list of ${minLen}..${maxLen} items, each ${item.expected}`;
  }
  check(n, path, source) {
    if (!(n.t === 'arr' && n.v.length >= this.minLen && n.v.length <= this.maxLen)) super.check(n, path, source);
    n.v.forEach((x, i) => this.item.check(x, `${path}[${i}]`, source));
    if (this.exact && !this.exact.every((v, i) => Number(n.v[i].v) === v)) super.check(n, path, source);
  }
  ok() { return false; }
}

/** A JSON object: required / optional fields by name, or one rule for every value; other keys ignored. */
class Obj extends Rule {
  constructor({ required = {}, optional = {}, values = null, keys = null, keysExpected = '', maxKeys = 256 } = {}) {
    super();
    Object.assign(this, { required, optional, values, keys, keysExpected, maxKeys });
    this.expected = 'an object';
  }
  check(n, path, source) {
    if (n.t !== 'obj') super.check(n, path, source);
    if (n.v.size > this.maxKeys) {
      throw new BundleError(`${source}: manifest field ${path} has ${n.v.size} entries; expected at most ${this.maxKeys}`);
    }
    const missing = Object.keys(this.required).filter((k) => !n.v.has(k));
    if (missing.length) {
      throw new BundleError(`${source}: ${path ? `manifest field ${path}` : 'manifest'} lacks required fields ${JSON.stringify(missing)}`);
    }
    for (const [key, v] of n.v) {
      const sub = path ? `${path}.${key}` : key;
      if (this.keys && !this.keys(key)) {
        throw new BundleError(`${source}: manifest field ${path} has the key ${JSON.stringify(key)}; expected ${this.keysExpected}`);
      }
      const rule = (Object.hasOwn(this.required, key) && this.required[key])
        || (Object.hasOwn(this.optional, key) && this.optional[key]) || this.values;
      if (rule) rule.check(v, sub, source);
    }
  }
  ok() { return false; }
}

const FINITE = new Num();
const SIDE = new Int(1, MAX_SIDE);
const UNIT_RANGE = new List(FINITE, 2, 2, [0, 1]);

/** preprocess of a single-channel bundle (format versions 1 and 2). */
const GREY_PREPROCESS = new Obj({
  required: { size: new List(SIDE, 2, 2), resize: new OneOf(RESIZE_FILTERS) },
  optional: { channels: new Const(1), ink: new Const('high'), value_range: UNIT_RANGE },
});

/** preprocess of a colour bundle (format version 2): the only colour pipeline runtimes implement. */
const COLOUR_PREPROCESS = new Obj({
  required: {
    channels: new Const(3), channel_order: new Const('RGB'), size: new List(SIDE, 2, 2), fit: new Const('centre_crop'),
    resize: new Const('box_int'), normalization: new Const('in_graph'),
  },
  optional: { value_range: UNIT_RANGE },
});

const SCHEMA = new Obj({
  required: {
    format: new Const(FORMAT_NAME),
    format_version: oneOfInts(FORMAT_VERSIONS),
    method: new OneOf(Object.keys(HEAD_OUTPUTS)),
    input: new Obj({
      required: { shape: new List(new Nullable(new Int(-1, MAX_SIDE)), 4, 4) },
      optional: { name: new Const('images'), dtype: new Const('float32'), range: UNIT_RANGE },
    }),
    preprocess: new Obj(), // by version and channels: checkPreprocess
    embedding: new Obj({
      required: { dim: new Int(1, MAX_DIM) },
      optional: { name: new Const('embeddings'), shift_views: new List(new List(new Int(-8, 8), 2, 2), 1, 81) },
    }),
    head: new Obj({ required: { method: new OneOf(Object.keys(HEAD_OUTPUTS)), outputs: new List(new Str(/^[a-z_]{1,32}$/), 1, 8) } }),
    graphs: new Obj({
      required: Object.fromEntries(Object.entries(GRAPH_FILES).map(([role, name]) => [role, new Const(name)])),
      optional: { backbone_int8: new Const(INT8_GRAPH) },
    }),
    files: new Obj({
      values: new Obj({ required: { sha256: new Str(SHA256), bytes: new Int(0, MAX_FILE_BYTES) } }),
      keys: plainFileName, maxKeys: MAX_FILES,
      keysExpected: "plain file names (letters, digits, '_', '.', '-'; no folder, not hidden)",
    }),
    provenance: new Obj(),
    validation: new Obj(),
    integrity: new Obj({ required: { manifest_sha256: new Str(SHA256) } }),
  },
  optional: {
    limits: new Obj({ optional: { min_ways: new Int(2, MAX_WAYS), max_ways: new Int(2, MAX_WAYS), min_shots: new Int(1, 10 ** 6) } }),
    open_set: new Obj({
      optional: {
        score: new Const('max_logit'),
        threshold_by_shots: new Obj({ values: FINITE, keys: (k) => SHOTS_KEY.test(k), keysExpected: "shot counts ('1', '5', ...)" }),
      },
    }),
    precision: new Obj({ optional: { default: new OneOf(['fp32', 'int8']) } }),
  },
});

/** The refine section needs a proto head, the same outputs, and its graph listed under files. */
function relateRefine(m, source) {
  if (m.method !== 'proto') {
    throw new BundleError(`${source}: manifest section refine needs method 'proto' (it refines prototypes), got ${JSON.stringify(m.method)}`);
  }
  if (JSON.stringify(m.refine.outputs) !== JSON.stringify(m.head.outputs)) {
    throw new BundleError(`${source}: manifest field refine.outputs is ${JSON.stringify(m.refine.outputs)}; expected head.outputs ` +
      `${JSON.stringify(m.head.outputs)}`);
  }
  if (!Object.hasOwn(m.files, m.refine.graph)) {
    throw new BundleError(`${source}: manifest must list the refine graph (${m.refine.graph}) under files`);
  }
}

const REFINE_GRAPH = 'refine.onnx';

/** The recurrent section needs method recurrent, the same outputs, and its update graph listed under files. */
function relateRecurrent(m, source) {
  if (m.method !== 'recurrent') {
    throw new BundleError(`${source}: manifest section recurrent needs method 'recurrent', got ${JSON.stringify(m.method)}`);
  }
  if (JSON.stringify(m.recurrent.outputs) !== JSON.stringify(m.head.outputs)) {
    throw new BundleError(`${source}: manifest field recurrent.outputs is ${JSON.stringify(m.recurrent.outputs)}; expected ` +
      `head.outputs ${JSON.stringify(m.head.outputs)}`);
  }
  if (!Object.hasOwn(m.files, m.recurrent.graph)) {
    throw new BundleError(`${source}: manifest must list the recurrent update graph (${m.recurrent.graph}) under files`);
  }
}

const RECURRENT_GRAPH = 'update.onnx';
const RECURRENT_RULES = ['gru_class_memory', 'gru_class_mean'];

// vector inputs and regression bundles (docs/regression.md), the same rules as manifest_schema.py
const MAX_VECTOR_DIM = 1 << 16;
const MAX_TARGETS = 1024;
const REGRESSION_GRAPH_FILES = { backbone: 'backbone.onnx', adapt: 'adapt.onnx', predict: 'predict.onnx' };
const REGRESSION_HEAD_OUTPUTS = { alpaca: ['weight', 'covariance', 'noise_variance'], metasgd: ['weight'] };
const REGRESSION_UNCERTAINTY = { alpaca: 'predictive_variance', metasgd: 'none' };
const NAMES = (max) => new List(new Str(/^[\s\S]{1,64}$/u), 1, max);

/** input.shape [null or -1, D] with D = vector_input.dim; feature names, if any, one per column. */
function relateVectorInput(m, source) {
  const { shape } = m.input;
  const { dim } = m.vector_input;
  if (![null, -1].includes(shape[0]) || shape[1] !== dim) {
    throw new BundleError(`${source}: manifest input.shape ${JSON.stringify(shape)} must be [null or -1, vector_input.dim] = [-1, ${dim}]`);
  }
  const names = m.vector_input.feature_names;
  if (names !== undefined && names.length !== dim) {
    throw new BundleError(`${source}: manifest field vector_input.feature_names has ${names.length} names; expected vector_input.dim = ${dim}`);
  }
}

/** The regression method's head outputs and uncertainty; target names, if any, one per output. */
function relateRegression(m, source) {
  const want = REGRESSION_HEAD_OUTPUTS[m.method];
  if (JSON.stringify(m.head.outputs) !== JSON.stringify(want)) {
    throw new BundleError(`${source}: manifest field head.outputs is ${JSON.stringify(m.head.outputs)} but regression method ` +
      `${JSON.stringify(m.method)} has the head parameters ${JSON.stringify(want)}`);
  }
  if (m.regression.uncertainty !== REGRESSION_UNCERTAINTY[m.method]) {
    throw new BundleError(`${source}: manifest field regression.uncertainty is ${JSON.stringify(m.regression.uncertainty)}; method ` +
      `${JSON.stringify(m.method)} gives ${JSON.stringify(REGRESSION_UNCERTAINTY[m.method])}`);
  }
  const names = m.regression.target_names;
  if (names !== undefined && names.length !== m.regression.outputs) {
    throw new BundleError(`${source}: manifest field regression.target_names has ${names.length} names; expected regression.outputs = ` +
      `${m.regression.outputs}`);
  }
}
/**
 * Version-3 sections, one entry per capability (the same table as manifest_schema.py's V3_SECTIONS):
 * top-level manifest key -> { rule: checks its fields, relate(manifest, source): its relation to the rest, or null }.
 */
const V3_SECTIONS = {
  refine: {
    rule: new Obj({
      required: { graph: new Const(REFINE_GRAPH), rule: new Const('masked_soft_kmeans'), outputs: new List(new Str(/^[a-z_]{1,32}$/), 1, 8),
        max_unlabeled: new Int(1, 10 ** 6) },
      optional: { steps: new Int(1, 16), distractor: new Obj(), calibrated_on: new Str(/^[\s\S]{0,512}$/u) },
    }),
    relate: relateRefine,
  },
  // recurrent class memory (docs/recurrent.md); `methods`: bundles of these methods need the section
  recurrent: {
    rule: new Obj({
      // rule gru_class_memory: the memory is the GRU state; gru_class_mean: GRU state, class mean, count
      required: { graph: new Const(RECURRENT_GRAPH), rule: new OneOf(RECURRENT_RULES), hidden: new Int(1, 1 << 15),
        outputs: new List(new Str(/^[a-z_]{1,32}$/), 1, 8) },
      optional: { gru_hidden: new Int(1, 1 << 14) },
    }),
    relate: relateRecurrent,
    methods: ['recurrent'],
  },
  // vector inputs [N, D]: replaces the rules of input and preprocess (normalisation inside backbone.onnx)
  vector_input: {
    rule: new Obj({ required: { dim: new Int(1, MAX_VECTOR_DIM), normalization: new Const('in_graph') },
      optional: { feature_names: NAMES(MAX_VECTOR_DIM) } }),
    relate: relateVectorInput,
    replaces: {
      input: new Obj({ required: { shape: new List(new Nullable(new Int(-1, MAX_VECTOR_DIM)), 2, 2) },
        optional: { name: new Const('inputs'), dtype: new Const('float32'), kind: new Const('vectors') } }),
      preprocess: new Obj({ required: { kind: new Const('vectors') } }),
    },
  },
  // real-valued predictions from sufficient statistics: predict.onnx instead of classify.onnx
  regression: {
    rule: new Obj({ required: { outputs: new Int(1, MAX_TARGETS), uncertainty: new OneOf(['predictive_variance', 'none']),
      statistics: new Const('feature_gram,feature_targets') }, optional: { target_names: NAMES(MAX_TARGETS) } }),
    relate: relateRegression,
    methods: ['alpaca'],
    replaces: {
      method: new OneOf(Object.keys(REGRESSION_HEAD_OUTPUTS)),
      head: new Obj({ required: { method: new OneOf(Object.keys(REGRESSION_HEAD_OUTPUTS)), outputs: new List(new Str(/^[a-z_]{1,32}$/), 1, 8) } }),
      graphs: new Obj({ required: Object.fromEntries(Object.entries(REGRESSION_GRAPH_FILES).map(([r, n]) => [r, new Const(n)])) }),
      validation: new Obj(),
    },
    graphs: REGRESSION_GRAPH_FILES,
  },
};

/** Base fields whose rule a present version-3 section replaces -> that rule (plain manifest values). */
const replacedRules = (m) => Object.assign({}, ...Object.entries(V3_SECTIONS)
  .filter(([name, sec]) => Object.hasOwn(m, name) && sec.replaces).map(([, sec]) => sec.replaces));

/** The fixed graph files (role -> name) of a manifest: GRAPH_FILES unless a section says otherwise. */
function graphFiles(m) {
  for (const [name, sec] of Object.entries(V3_SECTIONS)) {
    if (Object.hasOwn(m, name) && sec.graphs) return sec.graphs;
  }
  return GRAPH_FILES;
}

/** The lowest format version that expresses a manifest (plain values): 3 with a version-3 section, else 2. */
const writerVersion = (m) => (Object.keys(V3_SECTIONS).some((name) => Object.hasOwn(m, name)) ? SECTION_VERSION : 2);

/** A version-1 or -2 manifest holding a version-3 section is refused (an older reader would ignore it). */
function checkSectionVersions(tree, version, source) {
  if (version >= SECTION_VERSION) return;
  for (const name of Object.keys(V3_SECTIONS)) {
    if (tree.v.has(name)) {
      throw new BundleError(`${source}: manifest section ${name} needs format version ${SECTION_VERSION}, but format_version is ` +
        `${version} (a version-${version} reader would ignore it)`);
    }
  }
}

/** One of these JSON integers (not 1.0, not true). */
function oneOfInts(values) {
  const rule = new Rule();
  rule.expected = `one of the integers ${values.join(', ')}`;
  rule.ok = (n) => n.t === 'int' && values.some((v) => BigInt(n.v) === BigInt(v));
  return rule;
}

/** The format version (1, 2 or 3) of a manifest tree; BundleError naming the versions read otherwise. */
function formatVersion(tree, source) {
  const node = tree.v.get('format_version');
  if (!node || !SCHEMA.required.format_version.ok(node)) {
    const got = node ? short(node) : 'null';
    throw new BundleError(`${source}: bundle format version ${got} is not supported by this reader (it reads versions ` +
      `${FORMAT_VERSIONS.slice(0, -1).join(', ')} and ${FORMAT_VERSIONS.at(-1)}); re-export the bundle with a matching edgemeta version`);
  }
  return Number(node.v);
}

/** preprocess by its channels (absent = 1): 1 grey, 3 colour (version 2 only), nothing else. */
function checkPreprocess(tree, version, source) {
  const spec = tree.v.get('preprocess');
  const node = spec.v.get('channels') ?? { t: 'int', v: '1' };
  const channels = node.t === 'int' ? Number(node.v) : null;
  if (version === 1 && channels !== 1) {
    throw new BundleError(`${source}: manifest field preprocess.channels must be 1 in a format-version-1 bundle, ` +
      `got ${kindOf(node)} ${short(node)} (colour bundles are version 2)`);
  }
  const rule = { 1: GREY_PREPROCESS, 3: COLOUR_PREPROCESS }[channels];
  if (!rule) {
    throw new BundleError(`${source}: manifest field preprocess.channels must be one of [1, 3], got ${kindOf(node)} ${short(node)}`);
  }
  rule.check(spec, 'preprocess', source);
}

/**
 * Check a manifest's parse tree against the rules above and the cross-field rules; BundleError
 * "{source}: manifest field <path> must be <expected>, got ..." on the first broken one.
 * `manifest`: the same manifest as plain values. Returns the format version.
 */
function validateManifest(tree, manifest, source = 'bundle') {
  const version = formatVersion(tree, source);
  checkSectionVersions(tree, version, source);
  const replaced = replacedRules(manifest);
  if (!replaced.preprocess) checkPreprocess(tree, version, source);
  const schema = Object.keys(replaced).length
    ? new Obj({ required: { ...SCHEMA.required, ...replaced }, optional: SCHEMA.optional }) : SCHEMA;
  schema.check(tree, '', source);
  const m = manifest;
  if (m.head.method !== m.method) {
    throw new BundleError(`${source}: manifest field head.method is ${JSON.stringify(m.head.method)} but method is ` +
      `${JSON.stringify(m.method)}; expected the same`);
  }
  const want = HEAD_OUTPUTS[m.method];
  if (!replaced.head && JSON.stringify(m.head.outputs) !== JSON.stringify(want)) {
    throw new BundleError(`${source}: manifest field head.outputs is ${JSON.stringify(m.head.outputs)} but method ` +
      `${JSON.stringify(m.method)} has the head parameters ${JSON.stringify(want)}`);
  }
  for (const [role, name] of Object.entries(m.graphs)) {
    if (typeof name === 'string' && !Object.hasOwn(m.files, name)) {
      throw new BundleError(`${source}: manifest must list graph "${role}" (${name}) under files`);
    }
  }
  const limits = m.limits || {};
  if ((limits.min_ways ?? 2) > (limits.max_ways ?? MAX_WAYS)) {
    throw new BundleError(`${source}: manifest limits.min_ways ${limits.min_ways} exceeds limits.max_ways ${limits.max_ways}`);
  }
  if (replaced.input) return checkSections(tree, m, source, version); // the section's relate checks the input it describes
  const { shape } = m.input;
  const spec = m.preprocess;
  const channels = spec.channels ?? 1;
  const batch = version === 1 ? [null] : [null, -1]; // the batch dimension: null (version 1), or -1 from version 2 on
  if (!batch.includes(shape[0]) || JSON.stringify(shape.slice(1)) !== JSON.stringify([channels, ...spec.size])) {
    const first = version === 1 ? 'null' : 'null or -1';
    throw new BundleError(`${source}: manifest input.shape ${JSON.stringify(shape)} must be [${first}, channels, *preprocess.size] = ` +
      `[${first}, ${channels}, ${spec.size[0]}, ${spec.size[1]}]`);
  }
  if (channels !== 1 && Object.hasOwn(spec, 'ink')) {
    throw new BundleError(`${source}: manifest field preprocess.ink is set in a colour bundle; expected no ink ` +
      'field (ink applies to single-channel bundles only)');
  }
  return checkSections(tree, m, source, version);
}

/** Each present version-3 section's rule and cross-field check; a method that needs a missing section is refused. */
function checkSections(tree, m, source, version) {
  for (const [name, section] of Object.entries(V3_SECTIONS)) {
    if (!tree.v.has(name)) {
      if ((section.methods || []).includes(m.method)) {
        throw new BundleError(`${source}: method ${JSON.stringify(m.method)} needs the manifest section ${name} (format version ` +
          `${SECTION_VERSION}); re-export the bundle`);
      }
      continue;
    }
    section.rule.check(tree.v.get(name), name, source);
    if (section.relate) section.relate(m, source);
  }
  return version;
}

export {
  FORMAT_NAME, FORMAT_VERSIONS, GRAPH_FILES, REGRESSION_GRAPH_FILES, graphFiles, HEAD_OUTPUTS, MAX_BUNDLE_BYTES, RECURRENT_GRAPH, REFINE_GRAPH,
  SECTION_VERSION, V3_SECTIONS, validateManifest, formatVersion, plainFileName, writerVersion,
};
