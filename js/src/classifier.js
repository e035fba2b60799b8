'use strict';
/**
 * edgemeta for Node.js: load, verify and personalise an edgemeta bundle with onnxruntime-node.
 *
 * A second, independent reader of the bundle contract (docs/bundle-format.md), written from the spec
 * and checked against the Python runtime (edgemeta/runtime/) by test/parity.test.js. No Python, no
 * build step: plain CommonJS over `onnxruntime-node`.
 *
 *   const { FewShotClassifier } = require('./edgemeta');
 *   const clf = await FewShotClassifier.load('models/omniglot-conv4-proto');   // verifies everything
 *   await clf.fit(supportImages, ['alpha', 'alpha', 'beta', 'beta', 'gamma']);
 *   await clf.predict(queryImages);          // -> ['beta', ...]
 *   await clf.predictProba(queryImages);     // -> [[p0, p1, p2], ...], columns in clf.classes order
 *
 * Images are raw pictures, one object each: `{ data, height, width[, channels] }` with `data` in
 * row-major order (`data[r * width + c]`, `height * width` values; for colour, `channels` = 3 (RGB)
 * or 4 (RGBA) interleaved values per pixel, as ImageData, Android bitmaps and camera frames give):
 *   - Uint8Array / Uint8ClampedArray: uint8 0..255 (divided by 255);
 *   - Float32Array / Float64Array / Array of numbers: floats already in [0, 1];
 *   - Array of booleans, or any of the above with `dtype: 'bool'`: true / nonzero = ink = 1.
 * An explicit `dtype` ('bool' | 'uint8' | 'float32' | 'float64') overrides the guess from `data`.
 * Colour becomes grey as Pillow's convert("L") (RGBA composited over white first). Any size: images
 * are resized to the manifest's `preprocess.size` (only the `nearest` filter is implemented here).
 * Ink polarity is found per image by default (`ink: 'auto'`: a mean above 0.5 is dark ink on bright
 * paper, inverted); `{ ink: 'high' }` / `{ ink: 'low' }` force bright / dark strokes.
 *
 * Colour bundles (format version 2, preprocess.channels 3) take the same objects (channels 1, 3 or 4)
 * and give [N, 3, H, W] RGB: RGBA over white in integers, centre crop, box_int resize (see
 * preprocessColour); any aspect ratio; ink has no effect there.
 *
 * Labels are all strings or all integers; `classes` is sorted like numpy.unique (strings by code
 * point, numbers numerically) and gives the column order of the probabilities.
 */

const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const ort = require('onnxruntime-node');

const { FORMAT_NAME, FORMAT_VERSIONS, MAX_BUNDLE_BYTES, validateManifest, formatVersion, plainFileName, graphFiles } = require('./manifest_schema');
const { ZipArchive, MAX_ZIP_ENTRIES } = require('./zip_reader');

const MANIFEST = 'manifest.json';
const MAX_MANIFEST_BYTES = 1 << 20; // the shipped manifests are about 6 KB
const MAX_JSON_DEPTH = 32;
const MAX_NUMBER_CHARS = 40; // digits of an integer / characters of a float literal
const REQUIRED_KEYS = ['format', 'format_version', 'method', 'input', 'preprocess', 'embedding',
  'head', 'graphs', 'files', 'provenance', 'validation', 'integrity'];
const PILLOW_FILTERS = ['nearest', 'box', 'bilinear', 'hamming', 'bicubic', 'lanczos'];
const EMBED_CHUNK = 256;
const MIN_SIDE = 4; // smaller images carry no usable strokes
const MAX_ASPECT = 4; // beyond this an "image" is almost always a flattened or mis-shaped array
const MAX_PIXELS = 50000000; // per image; larger ones are refused (downscale first)

const { BundleError, InputError } = require('./errors');

// ---------------------------------------------------------------------------------------------
// Canonical JSON, byte for byte what Python's
//   json.dumps(json.loads(text) minus "integrity", sort_keys=True, separators=(",", ":"), ensure_ascii=True)
// writes. JSON.parse/JSON.stringify cannot do this: they lose the int/float distinction ("1.0" and
// "1" are different to Python), format floats differently (1e-05 vs 0.00001, 1.0 vs 1), sort keys by
// UTF-16 unit instead of code point and do not escape non-ASCII. So: a small parser that keeps the
// number tokens, and a writer that follows CPython's rules.
// ---------------------------------------------------------------------------------------------

/** Python's repr() of a float (shortest round-trip digits; what json.dumps writes for a float). */
function pyFloatRepr(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // String(x) has the shortest round-trip digits too (ECMA-262 Number::toString); only the layout differs.
  const [mant, expPart] = String(Math.abs(x)).split('e');
  const [intPart, frac = ''] = mant.split('.');
  let digits = intPart + frac;
  let decpt = intPart.length + (expPart ? parseInt(expPart, 10) : 0); // value = 0.DIGITS * 10^decpt
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead).replace(/0+$/, '');
  decpt -= lead;
  if (decpt > -4 && decpt <= 16) { // CPython float_repr_style 'short': fixed notation in this range
    if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const e = decpt - 1;
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
}

const SHORT_ESCAPES = { 0x22: '\\"', 0x5c: '\\\\', 0x08: '\\b', 0x0c: '\\f', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t' };

/** A string as json.dumps(ensure_ascii=True) writes it: everything outside ' '..'~' as \uXXXX (lowercase). */
function pyJsonString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i); // UTF-16 units: astral characters come out as surrogate pairs, like Python
    if (SHORT_ESCAPES[c] !== undefined) out += SHORT_ESCAPES[c];
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

/** Compare strings by Unicode code point (Python's str order and numpy.unique's), not UTF-16 unit. */
function compareCodePoints(a, b) {
  const A = Array.from(a, (ch) => ch.codePointAt(0));
  const B = Array.from(b, (ch) => ch.codePointAt(0));
  const n = Math.min(A.length, B.length);
  for (let i = 0; i < n; i++) if (A[i] !== B[i]) return A[i] < B[i] ? -1 : 1;
  return A.length - B.length;
}

/**
 * Parse JSON text the way Python's json.loads does (NaN / Infinity accepted, last duplicate key
 * wins, raw control characters in strings refused) into a tree that remembers int vs float.
 * `strict`: also refuse what the Python reader's loads_strict refuses in a manifest (duplicate keys,
 * NaN / Infinity, number literals over 40 characters, floats that overflow, nesting over 32 levels),
 * with a StrictJsonError.
 */
function parsePyJson(text, { strict = false } = {}) {
  let i = 0;
  let depth = 0;
  const fail = (what) => { throw new SyntaxError(`${what} at character ${i}`); };
  const refuse = (what) => { if (strict) throw new StrictJsonError(what); };
  const enter = () => { depth += 1; if (depth > MAX_JSON_DEPTH) refuse(`nests deeper than ${MAX_JSON_DEPTH} levels; expected a plain document`); };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;

  function value() {
    ws();
    const c = text[i];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return { t: 'str', v: string() };
    for (const [lit, node] of [['true', { t: 'lit', v: 'true' }], ['false', { t: 'lit', v: 'false' }],
      ['null', { t: 'lit', v: 'null' }], ['NaN', { t: 'float', v: NaN }],
      ['Infinity', { t: 'float', v: Infinity }], ['-Infinity', { t: 'float', v: -Infinity }]]) {
      if (text.startsWith(lit, i)) {
        if (node.t === 'float') refuse(`is not strict JSON: the constant ${lit} (JSON has no NaN or Infinity; expected a finite number)`);
        i += lit.length;
        return node;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail('expecting value');
    i += m[0].length;
    const isInt = m[1] === undefined && m[2] === undefined;
    const chars = isInt ? m[0].replace('-', '').length : m[0].length;
    if (chars > MAX_NUMBER_CHARS) refuse(`is not strict JSON: a number literal of ${chars} characters (expected at most ${MAX_NUMBER_CHARS})`);
    if (isInt) return { t: 'int', v: m[0] };
    if (!Number.isFinite(Number(m[0]))) refuse(`is not strict JSON: the number ${m[0]} overflows a float (expected a finite number)`);
    return { t: 'float', v: Number(m[0]) };
  }

  function string() {
    i++; // opening quote
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) { i++; return out; }
      if (c < 0x20) fail('invalid control character in string');
      if (c !== 0x5c) { out += text[i++]; continue; }
      const e = text[i + 1];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) { out += simple; i += 2; continue; }
      if (e !== 'u' || !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('invalid escape');
      out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
      i += 6;
    }
  }

  function array() {
    i++;
    enter();
    const items = [];
    ws();
    if (text[i] === ']') { i++; depth -= 1; return { t: 'arr', v: items }; }
    for (;;) {
      items.push(value());
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === ']') { i++; depth -= 1; return { t: 'arr', v: items }; }
      fail("expecting ',' delimiter");
    }
  }

  function object() {
    i++;
    enter();
    const entries = new Map();
    ws();
    if (text[i] === '}') { i++; depth -= 1; return { t: 'obj', v: entries }; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail('expecting property name enclosed in double quotes');
      const key = string();
      ws();
      if (text[i] !== ':') fail("expecting ':' delimiter");
      i++;
      if (entries.has(key)) refuse(`is not strict JSON: duplicate key ${JSON.stringify(key)} in one object (expected each key once)`);
      entries.set(key, value()); // a later duplicate replaces the value, as in a Python dict
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === '}') { i++; depth -= 1; return { t: 'obj', v: entries }; }
      fail("expecting ',' delimiter");
    }
  }

  const tree = value();
  ws();
  if (i !== text.length) fail('extra data');
  return tree;
}

/** What a strict parse refuses (the message follows the file name). */
class StrictJsonError extends Error {}

function canonicalTree(node) {
  switch (node.t) {
    case 'obj': {
      const keys = [...node.v.keys()].sort(compareCodePoints);
      return `{${keys.map((k) => `${pyJsonString(k)}:${canonicalTree(node.v.get(k))}`).join(',')}}`;
    }
    case 'arr': return `[${node.v.map(canonicalTree).join(',')}]`;
    case 'str': return pyJsonString(node.v);
    case 'int': return BigInt(node.v).toString(); // Python int: arbitrary precision, "-0" -> "0"
    case 'float': return pyFloatRepr(node.v);
    default: return node.v; // true / false / null
  }
}

function treeValue(node) {
  switch (node.t) {
    case 'obj': {
      const out = {};
      for (const [k, v] of node.v) Object.defineProperty(out, k, { value: treeValue(v), enumerable: true, writable: true, configurable: true });
      return out;
    }
    case 'arr': return node.v.map(treeValue);
    case 'str': return node.v;
    case 'int': return Number(node.v);
    case 'float': return node.v;
    default: return JSON.parse(node.v);
  }
}

/** The canonical form of a manifest's JSON text: its top-level object without "integrity". */
function canonicalManifest(text) {
  const tree = parsePyJson(text);
  if (tree.t !== 'obj') throw new SyntaxError('the manifest is not a JSON object');
  const body = new Map(tree.v);
  body.delete('integrity');
  return canonicalTree({ t: 'obj', v: body });
}

const sha256 = (bytes) => crypto.createHash('sha256').update(bytes).digest('hex');

/** sha256 of the canonical manifest body: what manifest.integrity.manifest_sha256 must be. */
function manifestDigest(text) {
  return sha256(Buffer.from(canonicalManifest(text), 'ascii'));
}

// ---------------------------------------------------------------------------------------------
// Reading and verifying a bundle (directory or flat .zip), exactly the checks of contract/bundle.py.
// ---------------------------------------------------------------------------------------------

/**
 * Open `bundlePath` (a regular file) as a zip and run `use(zip)` (zip: ZipArchive) with it; the file
 * is closed afterwards. Not a zip: BundleError "neither a bundle directory nor a .zip bundle".
 */
function withZip(bundlePath, source, use) {
  let fd;
  try {
    fd = fs.openSync(bundlePath, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK || 0));
  } catch (e) {
    throw new BundleError(`cannot read ${source} (${e.code}); expected a bundle directory or .zip`);
  }
  try {
    const st = fs.fstatSync(fd);
    const zip = st.isFile() ? ZipArchive.open(fd, st.size, source) : null;
    if (!zip) throw new BundleError(`${source} is neither a bundle directory nor a .zip bundle`);
    return use(zip);
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`${source}: the zip is damaged (${e.message})`);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Every file of a bundle directory or a flat .zip (an .npz too) as name -> Buffer, bounded: at most
 * MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES in all, regular files only (no symbolic links), zip entries
 * checked as ZipArchive does and each inflated only up to its declared size. Nothing is executed.
 */
function readBundleFiles(bundlePath) {
  const source = String(bundlePath);
  const budget = MAX_BUNDLE_BYTES + MAX_MANIFEST_BYTES;
  let st;
  try { st = fs.statSync(bundlePath); } catch (e) {
    throw new BundleError(`bundle not found: ${source} (expected a bundle directory or .zip)`);
  }
  const tooMuch = () => new BundleError(`${source}: its files hold more than ${budget} bytes; a bundle holds at most ` +
    `${MAX_BUNDLE_BYTES} bytes of listed files and a ${MAX_MANIFEST_BYTES}-byte manifest`);
  const files = new Map();
  let total = 0;
  if (st.isDirectory()) {
    for (const name of fs.readdirSync(bundlePath).sort()) {
      let isFile = false;
      try { isFile = fs.lstatSync(path.join(bundlePath, name)).isFile(); } catch (e) { /* gone since listed */ }
      if (!isFile) continue;
      const data = readListedFile(bundlePath, name, budget - total, source);
      if (data === null) continue;
      total += data.length;
      if (total > budget) throw tooMuch();
      files.set(name, data);
    }
    return files;
  }
  return withZip(bundlePath, source, (zip) => {
    const entries = zip.entries.filter((e) => !e.isDir);
    if (entries.reduce((sum, e) => sum + e.size, 0) > budget) throw tooMuch();
    for (const e of entries) files.set(e.name.split('/').pop(), zip.read(e, e.size)); // flat: folders ignored
    return files;
  });
}

/** The folder prefix of manifest.json in a zip: "" (flat) or "<folder>/" (one level, as `zip -r b.zip b/`). */
function zipRoot(zip, source) {
  const found = zip.entries.filter((e) => !e.isDir && e.name.split('/').pop() === MANIFEST).map((e) => e.name);
  if (!found.length) throw new BundleError(`${source}: no ${MANIFEST}; is this an edgemeta bundle?`);
  if (found.length > 1) {
    throw new BundleError(`${source}: the zip holds several manifests ${JSON.stringify(found.slice(0, 4))}; expected one bundle per zip`);
  }
  const root = found[0].slice(0, -MANIFEST.length);
  if (root && !plainFileName(root.slice(0, -1))) {
    throw new BundleError(`${source}: "${found[0]}": expected ${MANIFEST} at the top of the zip or in one folder ` +
      '(nested folders are not supported)');
  }
  return root;
}

/**
 * manifest.json and the entries it lists from a bundle .zip (contract/bundle.py _read_zip): each entry's
 * declared size is compared with the manifest before it is inflated, only listed entries are inflated,
 * each is checked (size, sha256) as soon as it is read. Returns { manifest, files }.
 */
function readZipBundle(bundlePath, source) {
  return withZip(bundlePath, source, (zip) => {
    const root = zipRoot(zip, source);
    const manifest = parseManifest(zip.read(zip.get(root + MANIFEST), MAX_MANIFEST_BYTES), source);
    const files = new Map();
    for (const [name, meta] of Object.entries(manifest.files)) {
      const entry = zip.get(root + name);
      if (!entry || entry.isDir) throw new BundleError(`${source}: file "${name}" listed in the manifest is missing`);
      if (entry.size !== meta.bytes) {
        throw new BundleError(`${source}: ${name} is ${entry.size} bytes, the manifest says ${meta.bytes} ` +
          '(truncated or replaced); refused without inflating it');
      }
      files.set(name, checkFile(name, meta, zip.read(entry, meta.bytes), source));
    }
    return { manifest, files };
  });
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Parse and check manifest.json bytes as the Python reader does (contract/bundle.py parse_manifest):
 * strict JSON, format, version (1, 2 or 3), required fields, file entries, integrity digest, graph names,
 * then every rule of manifest_schema.js. Returns the manifest as plain values; BundleError naming the rule.
 */
function parseManifest(raw, source = 'bundle') {
  if (raw.length > MAX_MANIFEST_BYTES) {
    throw new BundleError(`${source}: ${MANIFEST} is larger than ${MAX_MANIFEST_BYTES} bytes; expected a small JSON document`);
  }
  let text;
  let tree;
  try {
    // fatal: invalid UTF-8 is an error; ignoreBOM: keep a BOM so the parser refuses it, as Python does
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
    tree = parsePyJson(text, { strict: true });
  } catch (e) {
    if (e instanceof StrictJsonError) throw new BundleError(`${source}: ${MANIFEST} ${e.message}`);
    throw new BundleError(`${source}: ${MANIFEST} is not valid JSON (${e.message}); the file is damaged`);
  }
  const manifest = treeValue(tree);
  if (!isObject(manifest) || manifest.format !== FORMAT_NAME) {
    const got = isObject(manifest) ? manifest.format : undefined;
    throw new BundleError(`${source}: format is ${JSON.stringify(got ?? null)}, expected "${FORMAT_NAME}"`);
  }
  formatVersion(tree, source);
  const missing = REQUIRED_KEYS.filter((k) => !Object.hasOwn(manifest, k));
  if (missing.length) throw new BundleError(`${source}: manifest lacks required fields ${JSON.stringify(missing)}`);
  for (const key of ['integrity', 'graphs', 'files', 'head', 'preprocess', 'input', 'embedding']) {
    if (!isObject(manifest[key])) throw new BundleError(`${source}: manifest field "${key}" must be an object`);
  }
  for (const [name, entry] of tree.v.get('files').v) {
    const sha = entry.t === 'obj' ? entry.v.get('sha256') : undefined;
    const size = entry.t === 'obj' ? entry.v.get('bytes') : undefined;
    if (!(sha && sha.t === 'str' && size && size.t === 'int')) {
      throw new BundleError(`${source}: manifest entry for "${name}" must be {"sha256": string, "bytes": integer}`);
    }
  }
  if (manifest.integrity.manifest_sha256 !== manifestDigest(text)) {
    throw new BundleError(`${source}: manifest.json was altered after export (its integrity digest does not match); ` +
      'use the bundle as exported');
  }
  for (const [role, name] of Object.entries(graphFiles(manifest))) {
    if (manifest.graphs[role] !== name || !Object.hasOwn(manifest.files, name)) {
      throw new BundleError(`${source}: manifest must list graph "${role}" as "${name}"`);
    }
  }
  validateManifest(tree, manifest, source);
  const total = Object.values(manifest.files).reduce((sum, meta) => sum + meta.bytes, 0);
  if (total > MAX_BUNDLE_BYTES) {
    throw new BundleError(`${source}: the manifest lists ${total} bytes of files; a bundle holds at most ${MAX_BUNDLE_BYTES} bytes`);
  }
  return manifest;
}

/**
 * `data` as the manifest lists `name` (its size and sha256); returns `data`. Called as soon as each
 * file is read, so a mismatch stops loading before the next file is read.
 */
function checkFile(name, meta, data, source = 'bundle') {
  if (data.length !== meta.bytes) {
    const got = data.length <= meta.bytes ? `${data.length} bytes` : `more than ${meta.bytes} bytes`;
    throw new BundleError(`${source}: ${name} is ${got}, the manifest says ${meta.bytes} (truncated or replaced)`);
  }
  if (sha256(data) !== meta.sha256) {
    throw new BundleError(`${source}: sha256 of ${name} does not match the manifest (the file was altered)`);
  }
  return data;
}

/** Every file the manifest lists is in `files` (name -> bytes) with the listed size and sha256. */
function checkFiles(manifest, files, source = 'bundle') {
  for (const [name, meta] of Object.entries(manifest.files)) {
    if (!files.has(name)) throw new BundleError(`${source}: file "${name}" listed in the manifest is missing`);
    checkFile(name, meta, files.get(name), source);
  }
}

/**
 * Check a bundle held in memory (`files`: Map name -> bytes): the manifest (parseManifest) and every
 * listed file's size and sha256. Returns the parsed manifest; throws BundleError naming the mismatch.
 */
function verify(files, source = 'bundle') {
  if (!files.has(MANIFEST)) throw new BundleError(`${source}: no ${MANIFEST}; is this an edgemeta bundle?`);
  const manifest = parseManifest(files.get(MANIFEST), source);
  checkFiles(manifest, files, source);
  return manifest;
}

/**
 * The bytes of regular file `folder/name` (at most `limit + 1`: one more shows a file that grew), or
 * null if there is none. A symbolic link or anything but a regular file is refused unread.
 */
function readListedFile(folder, name, limit, source) {
  const p = path.join(folder, name);
  let st;
  try { st = fs.lstatSync(p); } catch (e) {
    if (e.code === 'ENOENT') return null;
    throw new BundleError(`${source}: cannot read ${name} (${e.code})`);
  }
  if (st.isSymbolicLink()) throw new BundleError(`${source}: ${name} is a symbolic link; a bundle's files must be regular files in the folder`);
  if (!st.isFile()) throw new BundleError(`${source}: ${name} is not a regular file; a bundle's files must be regular files`);
  let fd;
  try {
    fd = fs.openSync(p, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW || 0) | (fs.constants.O_NONBLOCK || 0));
  } catch (e) {
    throw new BundleError(`${source}: cannot read ${name} (${e.code}); expected a readable regular file`);
  }
  try {
    if (!fs.fstatSync(fd).isFile()) throw new BundleError(`${source}: ${name} is not a regular file; a bundle's files must be regular files`);
    const buf = Buffer.alloc(Math.min(limit + 1, Math.max(fs.fstatSync(fd).size, 0) + 1));
    let got = 0;
    for (;;) {
      const n = fs.readSync(fd, buf, got, buf.length - got, null);
      if (n === 0) break;
      got += n;
      if (got === buf.length) break;
    }
    return buf.subarray(0, got);
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Read and verify a bundle directory or .zip. Returns { manifest, files } (only the listed files).
 * A directory: manifest.json first, then only the files it lists (others are never opened).
 */
function readBundle(bundlePath) {
  const source = String(bundlePath);
  let st;
  try { st = fs.statSync(bundlePath); } catch (e) {
    throw new BundleError(`bundle not found: ${source} (expected a bundle directory or .zip)`);
  }
  if (!st.isDirectory()) return readZipBundle(bundlePath, source);
  const raw = readListedFile(bundlePath, MANIFEST, MAX_MANIFEST_BYTES, source);
  if (raw === null) throw new BundleError(`${source}: no ${MANIFEST}; is this an edgemeta bundle?`);
  const manifest = parseManifest(raw, source);
  const files = new Map();
  for (const [name, meta] of Object.entries(manifest.files)) {
    const data = readListedFile(bundlePath, name, meta.bytes, source);
    if (data === null) throw new BundleError(`${source}: file "${name}" listed in the manifest is missing`);
    files.set(name, checkFile(name, meta, data, source));
  }
  return { manifest, files };
}

// ---------------------------------------------------------------------------------------------
// Preprocessing (contract/preprocess.py): raw single-channel image -> float32 [N, 1, H, W].
// ---------------------------------------------------------------------------------------------

const INKS = ['auto', 'high', 'low'];
const NUMPY_BUFSIZE = 8192; // numpy's reduction buffer (elements) when a sum casts float32 -> float64
const PAIRWISE_BLOCK = 128; // numpy's PW_BLOCKSIZE

function dtypeOf(img) {
  if (img.dtype !== undefined) {
    if (!['bool', 'uint8', 'float32', 'float64'].includes(img.dtype)) {
      throw new InputError(`dtype ${JSON.stringify(img.dtype)} is not one of 'bool', 'uint8', 'float32', 'float64'`);
    }
    return img.dtype;
  }
  const d = img.data;
  if (d instanceof Uint8Array || d instanceof Uint8ClampedArray) return 'uint8';
  if (d instanceof Float32Array) return 'float32';
  if (d instanceof Float64Array) return 'float64';
  if (Array.isArray(d) && d.length && d.every((v) => typeof v === 'boolean')) return 'bool';
  if (Array.isArray(d) && d.every((v) => typeof v === 'number')) return 'float64';
  throw new InputError('image data must be a Uint8Array (0..255), a Float32Array/Float64Array or Array of numbers ' +
    '(in [0, 1]), or booleans');
}

/**
 * Channels of an interleaved image: `img.channels` if given (1, 3 = RGB or 4 = RGBA), else guessed
 * from the number of values (height * width, 3x or 4x that: what ImageData gives is RGBA).
 */
function channelsOf(img, what) {
  const hw = img.height * img.width;
  const n = img.data.length;
  if (img.channels !== undefined) {
    if (![1, 3, 4].includes(img.channels)) {
      throw new InputError(`${what} has channels ${JSON.stringify(img.channels)}; expected 1 (grey), 3 (RGB) or 4 (RGBA)`);
    }
    if (n !== hw * img.channels) {
      throw new InputError(`${what} has ${n} values; expected height * width * channels = ${hw * img.channels}`);
    }
    return img.channels;
  }
  for (const c of [1, 3, 4]) if (n === hw * c) return c;
  throw new InputError(`${what} has ${n} values; expected height * width = ${hw} (grey), or 3x / 4x that ` +
    '(interleaved RGB / RGBA)');
}

/**
 * float64 sum of `a[lo .. lo + n)` in numpy's pairwise order (numpy's DOUBLE_pairwise_sum): under 8
 * values one by one; up to 128 in 8 interleaved partial sums; above, split in two at a multiple of 8.
 */
function pairwiseSum(a, lo, n) {
  if (n < 8) {
    let res = 0;
    for (let i = 0; i < n; i++) res += a[lo + i];
    return res;
  }
  if (n <= PAIRWISE_BLOCK) {
    const r = [a[lo], a[lo + 1], a[lo + 2], a[lo + 3], a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]];
    let i = 8;
    for (; i < n - (n % 8); i += 8) for (let j = 0; j < 8; j++) r[j] += a[lo + i + j];
    let res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
    for (; i < n; i++) res += a[lo + i];
    return res;
  }
  let n2 = Math.floor(n / 2);
  n2 -= n2 % 8;
  return pairwiseSum(a, lo, n2) + pairwiseSum(a, lo + n2, n - n2);
}

/**
 * numpy's `x.mean(dtype=np.float64)` of one image, bit for bit: a Float32Array is cast in buffers of
 * 8192 values, each summed pairwise; a Float64Array needs no cast and is summed pairwise in one go.
 */
function meanFloat64(a) {
  const block = a instanceof Float64Array ? a.length : NUMPY_BUFSIZE;
  let sum = 0;
  for (let lo = 0; lo < a.length; lo += block) sum += pairwiseSum(a, lo, Math.min(block, a.length - lo));
  return sum / a.length;
}

/** Check that a plain Array declared uint8 holds integers 0..255. */
function checkUint8Array(data, what) {
  if (data instanceof Uint8Array || data instanceof Uint8ClampedArray) return;
  for (let k = 0; k < data.length; k++) {
    const v = data[k];
    if (!Number.isInteger(v) || v < 0 || v > 255) throw new InputError(`${what} declared uint8 hold ${v}; expected 0..255`);
  }
}

/**
 * uint8 grey levels of an interleaved uint8 image with `ch` channels, in integers as Pillow does:
 * RGBA composited over white per channel, c' = (c * a + 255 * (255 - a) + 127) // 255, then
 * convert("L"): L = (19595 R + 38470 G + 7471 B + 32768) >> 16.
 */
function greyUint8(data, ch, hw) {
  if (ch === 1) return data;
  const out = new Uint8Array(hw);
  for (let p = 0, k = 0; p < hw; p++, k += ch) {
    let [r, g, b] = [data[k], data[k + 1], data[k + 2]];
    if (ch === 4) {
      const a = data[k + 3];
      const white = 255 * (255 - a) + 127;
      r = Math.floor((r * a + white) / 255);
      g = Math.floor((g * a + white) / 255);
      b = Math.floor((b * a + white) / 255);
    }
    out[p] = (19595 * r + 38470 * g + 7471 * b + 32768) >> 16;
  }
  return out;
}

const F32 = Math.fround;
const [WR, WG, WB] = [F32(0.299), F32(0.587), F32(0.114)];

/**
 * float32 grey levels of an interleaved float image in [0, 1] with `ch` channels, in float32 steps
 * as numpy computes them: RGBA over white c' = c * a + (1 - a), then L = 0.299 R + 0.587 G + 0.114 B.
 */
function greyFloat(data, ch, hw) {
  const out = new Float32Array(hw);
  if (ch === 1) {
    for (let p = 0; p < hw; p++) out[p] = data[p];
    return out;
  }
  for (let p = 0, k = 0; p < hw; p++, k += ch) {
    let [r, g, b] = [F32(data[k]), F32(data[k + 1]), F32(data[k + 2])];
    if (ch === 4) {
      const a = F32(data[k + 3]);
      const paper = F32(1 - a);
      r = F32(F32(r * a) + paper);
      g = F32(F32(g * a) + paper);
      b = F32(F32(b * a) + paper);
    }
    out[p] = Math.min(F32(F32(F32(WR * r) + F32(WG * g)) + F32(WB * b)), 1); // float32 rounding can pass 1
  }
  return out;
}

/**
 * The values of a float image, checked finite and in [0, 1] in their own precision (float64 data is
 * not rounded to float32 first; a plain Array declared 'float32' is rounded to float32 as numpy would).
 */
function unitFloats(data, dtype, what) {
  const raw = dtype === 'float32' && !(data instanceof Float32Array) ? Float32Array.from(data) : data;
  let lo = 0;
  let hi = 0;
  for (let k = 0; k < raw.length; k++) {
    const v = raw[k];
    if (!Number.isFinite(v)) throw new InputError(`${what} contain NaN or inf; expected finite values in [0, 1]`);
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  if (lo < 0 || hi > 1) {
    throw new InputError(`${what} have values in [${lo}, ${hi}]; expected float images scaled to [0, 1] ` +
      '(or uint8 0..255, or bool)');
  }
  return raw;
}

/**
 * One raw image -> { values: Float32Array [h * w] in [0, 1] (colour converted to grey), darkInk }.
 * `darkInk` is the automatic polarity rule: the mean value (float64; for uint8 exactly
 * 2 * sum > 255 * count, for bool 2 * sum > count) is above 0.5, i.e. dark strokes on bright paper.
 */
function unitGrey(img, what) {
  const { data } = img;
  const dtype = dtypeOf(img);
  const ch = channelsOf(img, what);
  const hw = img.height * img.width;
  const values = new Float32Array(hw);
  if (dtype === 'bool') {
    if (ch !== 1) throw new InputError(`${what} is a ${ch}-channel bool image; expected a single-channel ink mask`);
    let sum = 0;
    for (let k = 0; k < hw; k++) if (data[k]) { values[k] = 1; sum += 1; }
    return { values, darkInk: 2 * sum > hw };
  }
  if (dtype === 'uint8') {
    checkUint8Array(data, what);
    const grey = greyUint8(data, ch, hw);
    let sum = 0;
    for (let k = 0; k < hw; k++) { sum += grey[k]; values[k] = grey[k] / 255; } // = numpy float32(v) / float32(255)
    return { values, darkInk: 2 * sum > 255 * hw };
  }
  const raw = unitFloats(data, dtype, what);
  const grey = greyFloat(raw, ch, hw);
  // grey float64 images are judged on their float64 values, colour ones on the float32 grey
  const judged = ch === 1 && dtype === 'float64' ? Float64Array.from(raw) : grey;
  return { values: grey, darkInk: meanFloat64(judged) > 0.5 };
}

/**
 * Pillow's nearest-neighbour source index of each output pixel (docs/bundle-format.md, preprocess 3):
 * a float64 running sum x_0 = step / 2, x_i = x_{i-1} + step with step = nIn / nOut, index
 * min(floor(x_i), nIn - 1). Not (i + 0.5) * step: where that is a whole number the running sum can
 * land just below it (64 -> 28 differs by one pixel).
 */
function nearestIndices(nIn, nOut) {
  const idx = new Int32Array(nOut);
  const step = nIn / nOut;
  let x = 0.5 * step;
  for (let i = 0; i < nOut; i++, x += step) idx[i] = Math.min(Math.floor(x), nIn - 1);
  return idx;
}

/**
 * Raw images -> { data: Float32Array [N * 1 * H * W], n, height: H, width: W } as the manifest's
 * `preprocess` spec says. `images`: an Array of { data, height, width[, channels][, dtype] } (sizes
 * may differ; 3 / 4 channels = interleaved RGB / RGBA, converted to grey first).
 * `ink`: 'auto' (per image: dark strokes on bright paper if the mean value is above 0.5), 'high'
 * (strokes bright in the input) or 'low' (strokes dark).
 */
function preprocess(images, spec, { ink = 'auto', what = 'images' } = {}) {
  if (spec.channels === 3) return preprocessColour(images, spec, { ink, what });
  if ((spec.channels ?? 1) !== 1) throw new InputError(`preprocess.channels ${JSON.stringify(spec.channels)}: expected 1 (grey) or 3 (colour)`);
  if (!PILLOW_FILTERS.includes(spec.resize)) {
    throw new InputError(`unknown resize filter ${JSON.stringify(spec.resize)}; expected one of ${PILLOW_FILTERS.join(', ')}`);
  }
  if (!INKS.includes(ink)) {
    throw new InputError(`ink must be 'auto' (per image), 'high' (bright strokes) or 'low' (dark strokes), got ${JSON.stringify(ink)}`);
  }
  if (!Array.isArray(images)) throw new InputError(`${what} must be an Array of {data, height, width} images`);
  if (images.length === 0) throw new InputError(`${what} are empty; expected at least one image`);
  const [H, W] = [Number(spec.size[0]), Number(spec.size[1])];
  const bundleInk = spec.ink ?? 'high';
  const out = new Float32Array(images.length * H * W);
  images.forEach((img, n) => {
    const name = `${what}[${n}]`;
    if (!img || img.data === undefined || !Number.isInteger(img.height) || !Number.isInteger(img.width)) {
      throw new InputError(`${name} must be an object {data, height, width} (one image)`);
    }
    const { height: h, width: w } = img;
    if (Math.min(h, w) < MIN_SIDE || Math.max(h, w) > MAX_ASPECT * Math.min(h, w)) {
      throw new InputError(`${name} has size ${h}x${w}; expected 2-D images at least ${MIN_SIDE}x${MIN_SIDE} with an ` +
        `aspect ratio within ${MAX_ASPECT}:1 (they are resized to ${H}x${W}); a flattened or transposed array looks like this`);
    }
    if (h * w > MAX_PIXELS) {
      throw new InputError(`${name} has size ${h}x${w} (${Math.round(h * w / 1e6)} megapixels); expected at most ` +
        `${MAX_PIXELS / 1e6} megapixels per image: downscale it first`);
    }
    const { values, darkInk } = unitGrey(img, name);
    const given = ink === 'auto' ? (darkInk ? 'low' : 'high') : ink;
    const base = n * H * W;
    if (h === H && w === W) {
      out.set(values, base);
    } else if (spec.resize === 'nearest') {
      const rows = nearestIndices(h, H);
      const cols = nearestIndices(w, W);
      for (let i = 0; i < H; i++) {
        const src = rows[i] * w;
        const dst = base + i * W;
        for (let j = 0; j < W; j++) out[dst + j] = values[src + cols[j]];
      }
    } else {
      throw new InputError(`resize filter "${spec.resize}" is not supported in this example (only "nearest"); ` +
        `give ${H}x${W} images or resize them with Pillow's ${spec.resize} filter first`);
    }
    if (given !== bundleInk) for (let k = base; k < base + H * W; k++) out[k] = 1 - out[k]; // float32 1 - x
  });
  return { data: out, n: images.length, channels: 1, height: H, width: W };
}
// ---------------------------------------------------------------------------------------------
// Colour preprocessing (format version 2, preprocess.channels 3): raw image -> float32 [N, 3, H, W],
// in integers wherever possible, bit for bit what contract/preprocess.py computes.
// ---------------------------------------------------------------------------------------------

/** floor(a / b) for integers 0 <= a < 2^53, b > 0: exact (the float quotient cannot round across an integer there). */
const idiv = (a, b) => Math.floor(a / b);

/** A float in [0, 1] -> uint8: floor(x * 255 + 0.5) in float64. */
const quantise = (x) => Math.floor(x * 255 + 0.5);

/**
 * A function filling `dst` (Uint8Array [cw * 3]) with the RGB bytes of source row `r`, columns
 * x0 .. x0 + cw, of one raw image: uint8 as is, grey replicated (bool: 0 / 255), RGBA composited over
 * white per channel in integers, c' = (c * a + 255 * (255 - a) + 127) // 255; floats (checked here,
 * once) composited in float64, c' = c * a + (1 - a), then quantised. Only one row is held at a time.
 */
function rgbRowReader(img, what) {
  const dtype = dtypeOf(img);
  const ch = channelsOf(img, what);
  const { width: w } = img;
  if (dtype === 'bool') {
    if (ch !== 1) throw new InputError(`${what} is a ${ch}-channel bool image; expected a single-channel mask or uint8 / float colour`);
    const { data } = img;
    return (r, x0, cw, dst) => {
      for (let x = 0, k = r * w + x0; x < cw; x++, k++) dst.fill(data[k] ? 255 : 0, 3 * x, 3 * x + 3);
    };
  }
  let data;
  if (dtype === 'uint8') {
    checkUint8Array(img.data, what);
    data = img.data;
  } else {
    data = unitFloats(img.data, dtype, what);
  }
  const toByte = dtype === 'uint8' ? (v) => v : quantise;
  if (ch === 1) {
    return (r, x0, cw, dst) => {
      for (let x = 0, k = r * w + x0; x < cw; x++, k++) dst.fill(toByte(data[k]), 3 * x, 3 * x + 3);
    };
  }
  if (ch === 3) {
    return (r, x0, cw, dst) => {
      for (let j = 0, k = (r * w + x0) * 3; j < 3 * cw; j++, k++) dst[j] = toByte(data[k]);
    };
  }
  if (dtype === 'uint8') {
    return (r, x0, cw, dst) => {
      for (let x = 0, k = (r * w + x0) * 4; x < cw; x++, k += 4) {
        const a = data[k + 3];
        const white = 255 * (255 - a) + 127;
        for (let c = 0; c < 3; c++) dst[3 * x + c] = idiv(data[k + c] * a + white, 255);
      }
    };
  }
  return (r, x0, cw, dst) => {
    for (let x = 0, k = (r * w + x0) * 4; x < cw; x++, k += 4) {
      const a = data[k + 3]; // float64 arithmetic throughout (float32 values are exact in float64)
      for (let c = 0; c < 3; c++) dst[3 * x + c] = quantise(data[k + c] * a + (1 - a));
    }
  };
}

/**
 * The centre crop of an h x w source to the aspect of the H x W target, in integers:
 * too wide (w * H > h * W): cw = (h * W) // H, x0 = (w - cw) // 2; else ch = (w * H) // W, y0 = (h - ch) // 2.
 */
function centreCrop(h, w, H, W) {
  if (w * H > h * W) {
    const cw = Math.max(1, idiv(h * W, H)); // 1 only for extreme target aspects
    return { y0: 0, x0: idiv(w - cw, 2), ch: h, cw };
  }
  const ch = Math.max(1, idiv(w * H, W));
  return { y0: idiv(h - ch, 2), x0: 0, ch, cw: w };
}

/**
 * The source bins of one axis resized nIn -> nOut (box_int): { lo, hi } (Int32Array [nOut] each),
 * output i covering source [lo[i], hi[i]). Downscaling (nIn >= nOut): [i * nIn // nOut, (i + 1) * nIn // nOut),
 * never empty; upscaling: the single source pixel Pillow's nearest rule picks (nearestIndices).
 */
function boxBins(nIn, nOut) {
  const lo = new Int32Array(nOut);
  const hi = new Int32Array(nOut);
  if (nIn >= nOut) {
    for (let i = 0; i < nOut; i++) { lo[i] = idiv(i * nIn, nOut); hi[i] = idiv((i + 1) * nIn, nOut); }
  } else {
    const idx = nearestIndices(nIn, nOut);
    for (let i = 0; i < nOut; i++) { lo[i] = idx[i]; hi[i] = idx[i] + 1; }
  }
  return { lo, hi };
}

/**
 * One image's RGB bytes (read row by row by `readRow`, see rgbRowReader) of the crop `crop` resized to
 * H x W: per channel (S + C // 2) // C with S the exact integer sum over the (row bin x column bin) and
 * C its pixel count, then v / 255 as float32, written planar into out[base + c * H * W + i * W + j].
 * Holds one crop row and one row of column sums (O(w) memory).
 */
function boxIntResize(readRow, crop, H, W, out, base) {
  const rows = boxBins(crop.ch, H);
  const cols = boxBins(crop.cw, W);
  const line = new Uint8Array(crop.cw * 3);
  const acc = new Float64Array(crop.cw * 3); // exact: at most 255 * 50e6 per entry
  const plane = H * W;
  for (let i = 0; i < H; i++) {
    acc.fill(0);
    for (let r = rows.lo[i]; r < rows.hi[i]; r++) {
      readRow(crop.y0 + r, crop.x0, crop.cw, line);
      for (let k = 0; k < line.length; k++) acc[k] += line[k];
    }
    const nRows = rows.hi[i] - rows.lo[i];
    for (let j = 0; j < W; j++) {
      const count = nRows * (cols.hi[j] - cols.lo[j]);
      const half = idiv(count, 2);
      for (let c = 0; c < 3; c++) {
        let sum = 0;
        for (let x = cols.lo[j]; x < cols.hi[j]; x++) sum += acc[3 * x + c];
        out[base + c * plane + i * W + j] = idiv(sum + half, count) / 255; // = numpy float32(v) / float32(255)
      }
    }
  }
}

/**
 * Raw images -> { data: Float32Array [N * 3 * H * W] (RGB planes), n, channels: 3, height: H, width: W }
 * for a colour bundle (preprocess {channels: 3, channel_order: 'RGB', fit: 'centre_crop', resize: 'box_int'}).
 * Images: { data, height, width[, channels][, dtype] }, channels 1 (grey), 3 (RGB) or 4 (RGBA)
 * interleaved; any size from 4x4 up to 50 megapixels, any aspect ratio (centre-cropped). `ink` is
 * checked but has no effect on colour bundles.
 */
function preprocessColour(images, spec, { ink = 'auto', what = 'images' } = {}) {
  if (spec.channel_order !== 'RGB' || spec.fit !== 'centre_crop' || spec.resize !== 'box_int') {
    throw new InputError(`colour preprocess ${JSON.stringify(spec)}: expected channel_order 'RGB', fit 'centre_crop', resize 'box_int'`);
  }
  if (!INKS.includes(ink)) {
    throw new InputError(`ink must be 'auto' (per image), 'high' (bright strokes) or 'low' (dark strokes), got ${JSON.stringify(ink)}`);
  }
  if (!Array.isArray(images)) throw new InputError(`${what} must be an Array of {data, height, width, channels} images`);
  if (images.length === 0) throw new InputError(`${what} are empty; expected at least one image`);
  const [H, W] = [Number(spec.size[0]), Number(spec.size[1])];
  const out = new Float32Array(images.length * 3 * H * W);
  images.forEach((img, n) => {
    const name = `${what}[${n}]`;
    if (!img || img.data === undefined || !Number.isInteger(img.height) || !Number.isInteger(img.width)) {
      throw new InputError(`${name} must be an object {data, height, width, channels} (one image)`);
    }
    const { height: h, width: w } = img;
    if (Math.min(h, w) < MIN_SIDE) {
      throw new InputError(`${name} has size ${h}x${w}; expected images at least ${MIN_SIDE}x${MIN_SIDE} (they are ` +
        `centre-cropped and resized to ${H}x${W})`);
    }
    if (h * w > MAX_PIXELS) {
      throw new InputError(`${name} has size ${h}x${w} (${Math.round(h * w / 1e6)} megapixels); expected at most ` +
        `${MAX_PIXELS / 1e6} megapixels per image: downscale it first`);
    }
    boxIntResize(rgbRowReader(img, name), centreCrop(h, w, H, W), H, W, out, n * 3 * H * W);
  });
  return { data: out, n: images.length, channels: 3, height: H, width: W };
}


// ---------------------------------------------------------------------------------------------
// The bundle with its three onnxruntime sessions.
// ---------------------------------------------------------------------------------------------

/** A CPU session options object; `threads` intra-op threads (1 gives predictable latency on a device). */
function sessionOptions(threads = 1) {
  return { executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: 'all' };
}

class Bundle {
  /**
   * Read, verify and open a bundle directory or .zip; throws BundleError on any mismatch.
   * Options: threads (intra-op threads, default 1); precision: 'auto' (the manifest's precision.default;
   * for bundles without one, the int8 backbone graphs.backbone_int8 when present; what the Python runtime does),
   * 'fp32' or 'int8'.
   */
  static async load(bundlePath, { threads = 1, precision = 'auto' } = {}) {
    const { manifest, files } = readBundle(bundlePath);
    const g = manifest.graphs;
    if (manifest.regression) throw new BundleError(`${bundlePath} is a regression bundle; load it with regressor.js (RegressionBundle)`);
    if (manifest.vector_input) throw new BundleError(`${bundlePath} takes vectors [N, D]; this Node example reads image classifier bundles only`);
    if (!['auto', 'fp32', 'int8'].includes(precision)) throw new Error(`precision must be 'auto', 'fp32' or 'int8', got ${JSON.stringify(precision)}`);
    const hasInt8 = typeof g.backbone_int8 === 'string' && files.has(g.backbone_int8);
    if (precision === 'int8' && !hasInt8) throw new BundleError(`${bundlePath} has no int8 backbone; use precision 'fp32'`);
    // auto: the manifest's precision.default (export sets it from accuracy and measured speed); a
    // manifest without one (bundles exported before the speed gate) means int8 whenever present.
    const declared = (manifest.precision && typeof manifest.precision === 'object' && manifest.precision.default) || 'int8';
    const useInt8 = precision === 'int8' || (precision === 'auto' && hasInt8 && declared === 'int8');
    const opts = sessionOptions(threads);
    // sessions are built from the verified bytes: nothing is re-read from disk between check and use
    const [backbone, adapt, classify] = await Promise.all([useInt8 ? g.backbone_int8 : g.backbone, g.adapt, g.classify].map(
      (f) => ort.InferenceSession.create(new Uint8Array(files.get(f)), opts)));
    const bundle = new Bundle(manifest, String(bundlePath), backbone, adapt, classify);
    bundle.precision = useInt8 ? 'int8' : 'fp32';
    // recurrent bundles (format 3): update.onnx, the per-class memory update (recurrent.js)
    bundle.memoryUpdate = manifest.recurrent ? await require('./recurrent').openMemoryUpdate(bundle, files.get(manifest.recurrent.graph), opts) : null;
    // bundles with a refine section (format 3): refine.onnx, unlabelled samples refine the prototypes (refine.js)
    bundle.refiner = manifest.refine ? await require('./refine').openRefiner(bundle, files.get(manifest.refine.graph), opts) : null;
    return bundle;
  }

  constructor(manifest, source, backbone, adapt, classify) {
    this.manifest = manifest;
    this.source = source;
    this.method = manifest.method;
    if (!Array.isArray(manifest.head.outputs) || !manifest.head.outputs.every((n) => typeof n === 'string')) {
      throw new BundleError(`${source}: manifest head.outputs must be a list of graph output names`);
    }
    if (!Array.isArray(manifest.input.shape) || !Array.isArray(manifest.preprocess.size) || manifest.preprocess.size.length !== 2) {
      throw new BundleError(`${source}: manifest input.shape and preprocess.size must be lists ([N, C, H, W] and [H, W])`);
    }
    this.paramNames = [...manifest.head.outputs];
    this.embeddingDim = Number(manifest.embedding.dim);
    this.preprocessSpec = manifest.preprocess;
    this.identity = manifest.integrity.manifest_sha256;
    this.sessions = { backbone, adapt, classify };
    const expect = [
      [backbone.inputNames, ['images']], [backbone.outputNames, ['embeddings']],
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
      for (const shape of [manifest.input.shape.slice(1), [spec.channels ?? 1, ...spec.size]]) {
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

  /** Raw images -> preprocessed batch (see preprocess()). */
  preprocess(images, { ink = 'auto', what = 'images' } = {}) {
    return preprocess(images, this.preprocessSpec, { ink, what });
  }

  /** Preprocessed batch [N, C, H, W] -> embeddings Float32Array [N * D] (row-major), in chunks of 256 images. */
  async embed(batch) {
    const { n, height: H, width: W } = batch;
    const C = batch.channels ?? 1;
    const D = this.embeddingDim;
    const out = new Float32Array(n * D);
    for (let s = 0; s < n; s += EMBED_CHUNK) {
      const m = Math.min(EMBED_CHUNK, n - s);
      const images = new ort.Tensor('float32', batch.data.subarray(s * C * H * W, (s + m) * C * H * W), [m, C, H, W]);
      const { embeddings } = await this.sessions.backbone.run({ images });
      if (embeddings.dims[1] !== D) throw new BundleError(`${this.source}: backbone gives ${embeddings.dims[1]}-d embeddings, the manifest says ${D}`);
      out.set(embeddings.data, s * D);
    }
    return out;
  }

  /** Support embeddings [S * D] + one-hot labels [S * C] -> head parameters { name: ort.Tensor }. */
  async adapt(support, S, onehot, C) {
    const D = this.embeddingDim;
    const res = await this.sessions.adapt.run({
      support_embeddings: new ort.Tensor('float32', support, [S, D]),
      support_labels_onehot: new ort.Tensor('float32', onehot, [S, C]),
    });
    return Object.fromEntries(this.paramNames.map((name) => [name, res[name]]));
  }

  /** Embeddings [N * D] + head parameters -> logits { data: Float32Array [N * C], n, c }. */
  async classify(embeddings, n, params) {
    const res = await this.sessions.classify.run({
      embeddings: new ort.Tensor('float32', embeddings, [n, this.embeddingDim]), ...params,
    });
    return { data: res.logits.data, n: res.logits.dims[0], c: res.logits.dims[1] };
  }

  async release() {
    await Promise.all(Object.values(this.sessions).map((s) => s.release()));
  }
}

// ---------------------------------------------------------------------------------------------
// FewShotClassifier: learn a user's classes from a few samples (mirrors edgemeta.runtime).
// ---------------------------------------------------------------------------------------------

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
   * Load and verify a bundle, then wrap it. Options: ink ('auto' per image, the default | 'high' | 'low'),
   * threads (intra-op, default 1),
   * precision ('auto' | 'fp32' | 'int8', see Bundle.load),
   * unknownLabel (what predict(..., {rejectUnknown: true}) answers, default 'unknown'), unknownThreshold
   * (a max-logit threshold overriding the manifest's open_set calibration).
   */
  static async load(bundlePath, { threads = 1, precision = 'auto', ...options } = {}) {
    const bundle = await Bundle.load(bundlePath, { threads, precision });
    if (bundle.refiner) return new (semiSupervisedClassifier())(bundle, options);
    return bundle.memoryUpdate ? new (onlineClassifier())(bundle, options) : new FewShotClassifier(bundle, options);
  }

  constructor(bundle, { ink = 'auto', unknownLabel = 'unknown', unknownThreshold = null } = {}) {
    if (!INKS.includes(ink)) throw new InputError(`ink must be 'auto', 'high' or 'low', got ${JSON.stringify(ink)}`);
    this.bundle = bundle;
    this.ink = ink;
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
    if (!Array.isArray(images) || images.length === 0) {
      throw new InputError('the support set is empty; expected at least one image per class');
    }
    const x = this.bundle.preprocess(images, { ink: this.ink, what: 'support images' });
    if (!Array.isArray(labels) || labels.length !== images.length) {
      throw new InputError(`got ${images.length} images but ${Array.isArray(labels) ? labels.length : 'no'} labels; expected one label per image`);
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
    require('./refine').refuseUnlabeled(this.bundle, options); // { unlabeled }: bundles with a refine graph (refine.js)
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
    require('./refine').refuseUnlabeled(this.bundle, options);
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
    return this.partialFit(images, Array.isArray(images) ? images.map(() => label) : []);
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
    return { logits: await this.bundle.classify(emb, images.length, head.params), head };
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
  SemiSupervisedClassifier ??= require('./refine').makeSemiSupervisedClassifier(FewShotClassifier);
  return SemiSupervisedClassifier;
}
/** The classifier of recurrent bundles (recurrent.js: per-class memory, no embeddings); FewShotClassifier.load picks it. */
/** regressor.js (RegressionBundle, FewShotRegressor), loaded on first use. */
function regressor() {
  return require('./regressor');
}

function onlineClassifier() {
  OnlineClassifier ??= require('./recurrent').makeOnlineClassifier(FewShotClassifier, uniqueSorted, labelKind);
  return OnlineClassifier;
}

module.exports = {
  onlineClassifier, semiSupervisedClassifier, regressor,
  FORMAT_NAME, FORMAT_VERSIONS, BundleError, InputError, Bundle, FewShotClassifier,
  readBundle, readBundleFiles, verify, MAX_BUNDLE_BYTES, MAX_ZIP_ENTRIES, parseManifest, manifestDigest, canonicalManifest, parsePyJson, pyFloatRepr,
  pyJsonString, compareCodePoints, preprocess, preprocessColour, centreCrop, boxBins, nearestIndices, uniqueSorted, sessionOptions, MIN_SIDE, MAX_ASPECT,
  unitGrey, meanFloat64, INKS,
};
