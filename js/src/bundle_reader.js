/**
 * Reading and verifying a bundle, exactly the checks of contract/bundle.py, platform-neutral: the
 * manifest (strict JSON, format, version 1, 2 or 3, required fields, the v3 section registry of
 * manifest_schema.js, the canonical-JSON integrity digest), then each listed file's size and sha256
 * (WebCrypto) as soon as it is read, so a mismatch stops loading before the next file is read.
 *
 * Bytes come from a *source*: `{ name, readManifest(), readFile(name, bytes) }`, each read a Promise
 * of a Uint8Array (readFile: null when the file is absent, at most `bytes + 1` bytes otherwise), and an
 * optional `close()`. sources.js has zipSource and urlSource; node.js has folderSource. A source with
 * `concurrent: true` (urlSource) has all its listed files requested at once, each still bounded by its
 * listed size and checked in manifest order.
 */

import { BundleError } from './errors.js';
import { sha256Hex } from './bytes.js';
import { canonicalTree, parsePyJson, StrictJsonError, treeValue } from './canonical_json.js';
import { FORMAT_NAME, MAX_BUNDLE_BYTES, validateManifest, formatVersion, graphFiles } from './manifest_schema.js';

const MANIFEST = 'manifest.json';
const MAX_MANIFEST_BYTES = 1 << 20; // the shipped manifests are about 6 KB
const REQUIRED_KEYS = ['format', 'format_version', 'method', 'input', 'preprocess', 'embedding',
  'head', 'graphs', 'files', 'provenance', 'validation', 'integrity'];

/** The canonical form of a manifest's JSON text: its top-level object without "integrity". */
function canonicalManifest(text) {
  const tree = parsePyJson(text);
  if (tree.t !== 'obj') throw new SyntaxError('the manifest is not a JSON object');
  const body = new Map(tree.v);
  body.delete('integrity');
  return canonicalTree({ t: 'obj', v: body });
}

/** sha256 of the canonical manifest body (a Promise of hex): what manifest.integrity.manifest_sha256 must be. */
async function manifestDigest(text) {
  return sha256Hex(new TextEncoder().encode(canonicalManifest(text))); // canonical JSON is ASCII
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * Parse and check manifest.json bytes as the Python reader does (contract/bundle.py parse_manifest):
 * strict JSON, format, version (1, 2 or 3), required fields, file entries, integrity digest, graph names,
 * then every rule of manifest_schema.js. Returns the manifest as plain values; BundleError naming the rule.
 */
async function parseManifest(raw, source = 'bundle') {
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
  if (manifest.integrity.manifest_sha256 !== await manifestDigest(text)) {
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
async function checkFile(name, meta, data, source = 'bundle') {
  if (data.length !== meta.bytes) {
    const got = data.length <= meta.bytes ? `${data.length} bytes` : `more than ${meta.bytes} bytes`;
    throw new BundleError(`${source}: ${name} is ${got}, the manifest says ${meta.bytes} (truncated or replaced)`);
  }
  if (await sha256Hex(data) !== meta.sha256) {
    throw new BundleError(`${source}: sha256 of ${name} does not match the manifest (the file was altered)`);
  }
  return data;
}

/** Every file the manifest lists is in `files` (name -> bytes) with the listed size and sha256. */
async function checkFiles(manifest, files, source = 'bundle') {
  for (const [name, meta] of Object.entries(manifest.files)) {
    if (!files.has(name)) throw new BundleError(`${source}: file "${name}" listed in the manifest is missing`);
    await checkFile(name, meta, files.get(name), source);
  }
}

/**
 * Check a bundle held in memory (`files`: Map name -> bytes): the manifest (parseManifest) and every
 * listed file's size and sha256. Returns the parsed manifest; throws BundleError naming the mismatch.
 */
async function verify(files, source = 'bundle') {
  if (!files.has(MANIFEST)) throw new BundleError(`${source}: no ${MANIFEST}; is this an edgemeta bundle?`);
  const manifest = await parseManifest(files.get(MANIFEST), source);
  await checkFiles(manifest, files, source);
  return manifest;
}

/**
 * Read and verify a bundle from `source` (see the top of this file). Returns { manifest, files: Map
 * name -> Uint8Array } (only the listed files); BundleError naming the first mismatch.
 */
async function readBundle(source) {
  const name = source.name ?? 'bundle';
  const manifest = await parseManifest(await source.readManifest(), name);
  const files = new Map();
  const listed = Object.entries(manifest.files);
  // A source over the network (urlSource: `concurrent`) fetches every listed file at once, each still
  // cut at its listed size; the others read one file at a time, each checked before the next is opened.
  const pending = source.concurrent ? listed.map(([file, meta]) => source.readFile(file, meta.bytes)) : null;
  pending?.forEach((p) => p.catch(() => {}));     // the first failure is reported below; the rest are dropped
  for (const [i, [file, meta]] of listed.entries()) {
    const data = await (pending ? pending[i] : source.readFile(file, meta.bytes));
    if (data === null) throw new BundleError(`${name}: file "${file}" listed in the manifest is missing`);
    files.set(file, await checkFile(file, meta, data, name));
  }
  return { manifest, files };
}

export {
  MANIFEST, MAX_MANIFEST_BYTES, canonicalManifest, manifestDigest, parseManifest, checkFile, checkFiles, verify, readBundle,
};
