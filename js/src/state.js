/**
 * The private state file (docs/state-format.md), platform-neutral: the bytes the Python runtime's
 * FewShotClassifier.save writes and FewShotClassifier.load reads (edgemeta/runtime/state.py), written
 * and read here with the same checks. Nothing but embeddings, head parameters, labels and (recurrent
 * bundles) class memory is stored: never a sample.
 *
 *   b"EDGEMETA-STATE\n" + header JSON (one line, <= 4096 bytes) + b"\n" + payload
 *   header  {"encryption": "none" | "aes-256-gcm", "format": "edgemeta-state", "payload_bytes": n,
 *            "payload_sha256": hex, "version": 2}      (Python: json.dumps(header, sort_keys=True))
 *   payload the version-2 body: uint32 LE index length + index JSON (json.dumps(index, sort_keys=True,
 *           ensure_ascii=False)) + the arrays' raw little-endian bytes, in index order; encrypted:
 *           nonce (12 bytes) + AES-256-GCM(body) + tag (16 bytes), associated data
 *           {"format": "edgemeta-state", "version": 2, "encryption": "aes-256-gcm"}.
 *
 * Keys: 32 bytes (Uint8Array) or a WebCrypto AES-GCM CryptoKey. deriveStateKey(passphrase, salt)
 * gives the key Python's hashlib.pbkdf2_hmac('sha256', passphrase.encode(), salt, 600000, 32) gives.
 * Every refusal is a StateError naming the check. Version-1 bodies (.npz) are read by the Python
 * runtime only (load and save there once to convert).
 */

import { StateError } from './errors.js';
import { asBytes, concat, sha256Hex, subtle, utf8 } from './bytes.js';
import { parsePyJson, pyJsonDumps, StrictJsonError, treeValue } from './canonical_json.js';

const MAGIC = utf8('EDGEMETA-STATE\n');
const STATE_FORMAT = 'edgemeta-state';
const STATE_VERSION = 2;
const MAX_HEADER_BYTES = 4096;
const MAX_INDEX_BYTES = 16 << 20;
const MAX_JSON_DEPTH = 8;
const MAX_INT_DIGITS = 20;
const MAX_ARRAYS = 64;
const MAX_PAYLOAD_BYTES = 256 << 20;
const MAX_NDIM = 4;
const NONCE_BYTES = 12;
const TAG_BYTES = 16;
const INKS = ['high', 'low', 'auto'];
const HEADER_KEYS = ['encryption', 'format', 'payload_bytes', 'payload_sha256', 'version'];
const DTYPES = { float32: [Float32Array, 4], int64: [BigInt64Array, 8], float64: [Float64Array, 8] };
const PBKDF2_ITERATIONS = 600000;
const AAD = utf8(`{"format": "${STATE_FORMAT}", "version": ${STATE_VERSION}, "encryption": "aes-256-gcm"}`);

const isPlainObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
const sameList = (a, b) => a.length === b.length && a.every((v, i) => v === b[i]);

// ------------------------------------------------------------------------------------------- keys

/** An AES-256-GCM CryptoKey from `key` (32 bytes, or already a CryptoKey); StateError otherwise. */
async function aesKey(key) {
  if (typeof CryptoKey !== 'undefined' && key instanceof CryptoKey) {
    if (key.algorithm?.name !== 'AES-GCM' || key.algorithm.length !== 256) {
      throw new StateError('the state key must be an AES-GCM 256-bit CryptoKey or 32 bytes (AES-256)');
    }
    return key;
  }
  let bytes;
  try { bytes = asBytes(key); } catch { bytes = null; }
  if (!bytes || bytes.length !== 32) {
    throw new StateError('the state key must be 32 bytes (AES-256), a Uint8Array; e.g. deriveStateKey(passphrase, salt) or ' +
      'crypto.getRandomValues(new Uint8Array(32)) kept in the platform keystore');
  }
  return subtle().importKey('raw', bytes, { name: 'AES-GCM' }, false, ['encrypt', 'decrypt']);
}

/**
 * A 32-byte state key from a passphrase: PBKDF2-HMAC-SHA256 over the UTF-8 passphrase with `salt`
 * (Uint8Array, at least 16 bytes; store it beside the state, it is not secret) and `iterations`.
 * Python gets the same key with hashlib.pbkdf2_hmac('sha256', passphrase.encode(), salt, iterations, 32).
 */
async function deriveStateKey(passphrase, salt, iterations = PBKDF2_ITERATIONS) {
  if (typeof passphrase !== 'string' || passphrase.length === 0) throw new StateError('the passphrase must be a non-empty string');
  let saltBytes;
  try { saltBytes = asBytes(salt); } catch { saltBytes = null; }
  if (!saltBytes || saltBytes.length < 16) throw new StateError('the salt must be at least 16 bytes (a Uint8Array), e.g. crypto.getRandomValues(new Uint8Array(16))');
  if (!Number.isInteger(iterations) || iterations < 1) throw new StateError(`iterations must be a positive integer, got ${iterations}`);
  const base = await subtle().importKey('raw', utf8(passphrase), 'PBKDF2', false, ['deriveBits']);
  const bits = await subtle().deriveBits({ name: 'PBKDF2', hash: 'SHA-256', salt: saltBytes, iterations }, base, 256);
  return new Uint8Array(bits);
}

// ---------------------------------------------------------------------------------------- writing

/**
 * A version-2 body of named arrays and a meta object. `arrays`: [name, dtype ('float32' | 'float64' |
 * 'int64'), shape, data (a typed array of that dtype, or numbers)] in file order.
 */
function packBody(arrays, meta) {
  const index = { arrays: arrays.map(([name, dtype, shape]) => ({ name, dtype, shape: [...shape] })), meta };
  const blob = utf8(pyJsonDumps(index, { ensureAscii: false }));
  const length = new Uint8Array(4);
  new DataView(length.buffer).setUint32(0, blob.length, true);
  const parts = [length, blob];
  for (const [name, dtype, shape, data] of arrays) {
    const [Type] = DTYPES[dtype];
    const count = shape.reduce((p, v) => p * v, 1);
    const typed = data instanceof Type ? data : Type.from(data, dtype === 'int64' ? (v) => BigInt(v) : (v) => v);
    if (typed.length !== count) throw new StateError(`array ${name} holds ${typed.length} values; its shape ${JSON.stringify(shape)} needs ${count}`);
    parts.push(littleEndianBytes(typed));
  }
  return concat(parts);
}

/** The little-endian bytes of a typed array (a copy). */
function littleEndianBytes(typed) {
  const out = new Uint8Array(typed.byteLength);
  const view = new DataView(out.buffer);
  const step = typed.BYTES_PER_ELEMENT;
  for (let i = 0; i < typed.length; i++) {
    if (typed instanceof Float32Array) view.setFloat32(i * step, typed[i], true);
    else if (typed instanceof Float64Array) view.setFloat64(i * step, typed[i], true);
    else view.setBigInt64(i * step, typed[i], true);
  }
  return out;
}

/** A version-2 state file (magic, header, payload) around `body`, encrypted with `key` if given. */
async function sealBody(body, key = null) {
  let payload = body;
  const encryption = key === null || key === undefined ? 'none' : 'aes-256-gcm';
  if (encryption !== 'none') {
    const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const sealed = await subtle().encrypt({ name: 'AES-GCM', iv: nonce, additionalData: AAD, tagLength: 128 }, await aesKey(key), body);
    payload = concat([nonce, new Uint8Array(sealed)]);
  }
  if (payload.length > MAX_PAYLOAD_BYTES) {
    throw new StateError(`the state is ${payload.length} bytes, over the ${MAX_PAYLOAD_BYTES}-byte limit a state file may hold; ` +
      'forget classes or keep fewer shots per class');
  }
  const header = {
    format: STATE_FORMAT, version: STATE_VERSION, encryption, payload_bytes: payload.length, payload_sha256: await sha256Hex(payload),
  };
  return concat([MAGIC, utf8(pyJsonDumps(header)), utf8('\n'), payload]);
}

/**
 * A classifier's state as file bytes (the Python runtime's _body_v2 order): embeddings float32 [M, D],
 * sample_class int64 [M], head.<name> float32 (sorted by name), unlabeled float32 [U, D] when U > 0,
 * memory float32 [C, H] + memory_shots int64 [C] for recurrent bundles; meta bundle_id, labels,
 * method, ink. `state`: { bundleId, labels, dim, embeddings, sampleClass, head: {name: {data, shape}},
 * method, ink, unlabeled?, memory?: {data, hidden}, memoryShots? }.
 */
async function encodeState(state, key = null) {
  const M = state.sampleClass.length;
  const arrays = [['embeddings', 'float32', [M, state.dim], state.embeddings], ['sample_class', 'int64', [M], state.sampleClass]];
  for (const name of Object.keys(state.head).sort()) arrays.push([`head.${name}`, 'float32', state.head[name].shape, state.head[name].data]);
  if (state.unlabeled && state.unlabeled.length) arrays.push(['unlabeled', 'float32', [state.unlabeled.length / state.dim, state.dim], state.unlabeled]);
  if (state.memory) {
    const C = state.labels.length;
    arrays.push(['memory', 'float32', [C, state.memory.hidden], state.memory.data], ['memory_shots', 'int64', [C], state.memoryShots]);
  }
  const meta = { method: state.method, ink: state.ink, bundle_id: state.bundleId, labels: [...state.labels] };
  return sealBody(packBody(arrays, meta), key);
}

// ---------------------------------------------------------------------------------------- reading

/** Strict, bounded JSON (as the Python reader's loads_strict: no duplicate keys, NaN, 21+ digit integers, depth > 8). */
function loadsStrict(bytes, what) {
  if (bytes.length > MAX_INDEX_BYTES) throw new StateError(`${what} is larger than ${MAX_INDEX_BYTES} bytes; expected a small JSON document`);
  let text;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(bytes);
  } catch (e) {
    throw new StateError(`${what} is not valid JSON (not UTF-8); the file is damaged`);
  }
  let tree;
  try {
    tree = parsePyJson(text, { strict: true, maxDepth: MAX_JSON_DEPTH, maxNumberChars: MAX_INT_DIGITS });
  } catch (e) {
    if (e instanceof StrictJsonError) throw new StateError(`${what} ${e.message}`);
    throw new StateError(`${what} is not valid JSON (${e.message}); the file is damaged`);
  }
  return { tree, value: treeValue(tree) };
}

/** `obj` is a JSON object with exactly the `required` keys and some of `optional`. */
function keys(obj, required, optional, what) {
  if (!isPlainObject(obj)) throw new StateError(`${what} is ${Array.isArray(obj) ? 'a list' : typeof obj}; expected a JSON object`);
  const have = Object.keys(obj);
  const missing = required.filter((k) => !have.includes(k));
  const extra = have.filter((k) => !required.includes(k) && !optional.includes(k));
  if (missing.length || extra.length) {
    throw new StateError(`${what} has keys ${JSON.stringify(have.sort())}; expected ${JSON.stringify([...required].sort())}` +
      (optional.length ? ` and optionally ${JSON.stringify([...optional].sort())}` : ''));
  }
  return obj;
}

/** Where a JSON tree node is an integer literal (1, not 1.0 or true). */
const isIntNode = (node) => node && node.t === 'int';

/** The checked header of state file bytes and the payload's offset (Python: parse_header). */
function parseHeader(data, source) {
  if (data.length < MAGIC.length || !MAGIC.every((b, i) => data[i] === b)) {
    throw new StateError(`${source} is not an edgemeta state file (bad magic)`);
  }
  const limit = Math.min(data.length, MAGIC.length + MAX_HEADER_BYTES + 1);
  let end = -1;
  for (let i = MAGIC.length; i < limit; i++) if (data[i] === 0x0a) { end = i; break; }
  if (end < 0) {
    if (data.length <= MAGIC.length + MAX_HEADER_BYTES) throw new StateError(`${source} is truncated (no header)`);
    throw new StateError(`${source}: header line is longer than ${MAX_HEADER_BYTES} bytes`);
  }
  const { tree, value: header } = loadsStrict(data.subarray(MAGIC.length, end), `${source}: header`);
  keys(header, HEADER_KEYS, [], `${source}: header`);
  const ver = tree.v.get('version');
  if (header.format !== STATE_FORMAT || !isIntNode(ver) || ![1, 2].includes(header.version)) {
    throw new StateError(`${source}: state format ${JSON.stringify(header.format)} version ${JSON.stringify(header.version)} is not supported ` +
      `(this edgemeta reads ${STATE_FORMAT} v1, v2)`);
  }
  if (!['none', 'aes-256-gcm'].includes(header.encryption)) {
    throw new StateError(`${source}: unknown encryption ${JSON.stringify(header.encryption)}; expected 'none' or 'aes-256-gcm'`);
  }
  const n = header.payload_bytes;
  if (!isIntNode(tree.v.get('payload_bytes')) || n < 0) throw new StateError(`${source}: header payload_bytes is ${JSON.stringify(n)}; expected a byte count`);
  if (n > MAX_PAYLOAD_BYTES) throw new StateError(`${source}: header payload_bytes is ${n}; a state holds at most ${MAX_PAYLOAD_BYTES} bytes`);
  if (typeof header.payload_sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(header.payload_sha256)) {
    throw new StateError(`${source}: header payload_sha256 is not 64 lowercase hex digits`);
  }
  if (data.length - (end + 1) !== n) {
    throw new StateError(`${source} is truncated or padded: payload is ${data.length - (end + 1)} bytes, header says ${n}`);
  }
  if (header.version !== STATE_VERSION) {
    throw new StateError(`${source}: state version ${header.version} (a .npz body) is read by the Python runtime only; load and ` +
      'save it there once to write version 2');
  }
  return { header, start: end + 1 };
}

/** Checksum, then decrypt: the plain body (Python: _open_payload). */
async function openPayload(header, payload, key, source) {
  if (await sha256Hex(payload) !== header.payload_sha256) throw new StateError(`${source}: checksum mismatch, the file was altered or damaged`);
  const hasKey = key !== null && key !== undefined;
  if (header.encryption === 'none') {
    if (hasKey) throw new StateError(`${source} is not encrypted but a key was given; refusing to guess`);
    return payload;
  }
  if (!hasKey) throw new StateError(`${source} is encrypted; pass the key it was saved with`);
  const aes = await aesKey(key);
  if (payload.length < NONCE_BYTES + TAG_BYTES) {
    throw new StateError(`${source}: encrypted payload of ${payload.length} bytes is shorter than nonce + tag`);
  }
  try {
    const plain = await subtle().decrypt({ name: 'AES-GCM', iv: payload.subarray(0, NONCE_BYTES), additionalData: AAD, tagLength: 128 },
      aes, payload.subarray(NONCE_BYTES));
    return new Uint8Array(plain);
  } catch {
    throw new StateError(`${source}: wrong key (or altered ciphertext); cannot decrypt`);
  }
}

/** A typed array of `count` values of `dtype` read little-endian from `bytes` at `offset` (a copy). */
function readArray(bytes, offset, dtype, count) {
  const [Type, size] = DTYPES[dtype];
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, count * size);
  const out = new Type(count);
  for (let i = 0; i < count; i++) {
    if (dtype === 'float32') out[i] = view.getFloat32(i * 4, true);
    else if (dtype === 'float64') out[i] = view.getFloat64(i * 8, true);
    else out[i] = view.getBigInt64(i * 8, true);
  }
  return out;
}

/**
 * Named arrays ({ name: { dtype, shape, data } }, in file order) and the meta JSON of a version-2 body,
 * sizes checked against the body before any allocation (Python: _arrays_v2). Also returns the meta's
 * parse tree (to tell integers from floats).
 */
function unpackBody(body, source) {
  if (body.length < 4) throw new StateError(`${source}: body of ${body.length} bytes has no index length`);
  const nIndex = new DataView(body.buffer, body.byteOffset, 4).getUint32(0, true);
  if (nIndex > Math.min(MAX_INDEX_BYTES, body.length - 4)) {
    throw new StateError(`${source}: index length ${nIndex} exceeds the body or the ${MAX_INDEX_BYTES}-byte bound`);
  }
  const { tree, value: index } = loadsStrict(body.subarray(4, 4 + nIndex), `${source}: index`);
  keys(index, ['arrays', 'meta'], [], `${source}: index`);
  const specs = index.arrays;
  if (!Array.isArray(specs) || specs.length > MAX_ARRAYS) throw new StateError(`${source}: index arrays must be a list of at most ${MAX_ARRAYS} entries`);
  let offset = 4 + nIndex;
  const arrays = new Map();
  specs.forEach((spec, k) => {
    keys(spec, ['name', 'dtype', 'shape'], [], `${source}: index array entry`);
    const { name, dtype, shape } = spec;
    if (typeof name !== 'string' || arrays.has(name)) throw new StateError(`${source}: array name ${JSON.stringify(name)} is not a string or is repeated`);
    if (!Object.hasOwn(DTYPES, dtype)) {
      throw new StateError(`${source}: array ${JSON.stringify(name)} has dtype ${JSON.stringify(dtype)}; expected one of ${JSON.stringify(Object.keys(DTYPES).sort())}`);
    }
    const dims = tree.v.get('arrays').v[k].v.get('shape');
    if (!Array.isArray(shape) || shape.length > MAX_NDIM || !dims.v.every((d) => isIntNode(d) && Number(d.v) >= 0 && Number(d.v) < 2 ** 31)) {
      throw new StateError(`${source}: array ${JSON.stringify(name)} has shape ${JSON.stringify(shape)}; expected at most ${MAX_NDIM} non-negative dimensions`);
    }
    const count = shape.reduce((p, v) => p * v, 1);
    const size = count * DTYPES[dtype][1];
    if (size > body.length - offset) {
      throw new StateError(`${source}: array ${JSON.stringify(name)} of shape ${JSON.stringify(shape)} needs ${size} bytes; the body has ${body.length - offset} left`);
    }
    arrays.set(name, { dtype, shape, data: readArray(body, offset, dtype, count) });
    offset += size;
  });
  if (offset !== body.length) throw new StateError(`${source}: ${body.length - offset} bytes follow the last array; expected none`);
  return { arrays, meta: index.meta, metaTree: tree.v.get('meta') };
}

/** The plain body's arrays and meta of state file bytes: header, size, checksum and decryption checked. */
async function readBody(bytes, { key = null, source = 'state' } = {}) {
  let data;
  try { data = asBytes(bytes); } catch { throw new StateError(`${source}: a state must be bytes (a Uint8Array), got ${typeof bytes}`); }
  const { header, start } = parseHeader(data, source);
  return unpackBody(await openPayload(header, data.subarray(start), key, source), source);
}

const allFinite = (a) => a.every(Number.isFinite);

/** labels: all strings, or all integers JavaScript holds exactly; each once. */
function checkLabels(labels, labelsTree, source) {
  if (!Array.isArray(labels)) throw new StateError(`${source}: labels must be a list`);
  const strings = labels.every((v) => typeof v === 'string');
  const ints = labelsTree.v.every(isIntNode);
  if (!strings && !ints) throw new StateError(`${source}: labels must be all strings or all 64-bit integers`);
  if (!strings && !labels.every(Number.isSafeInteger)) {
    throw new StateError(`${source}: an integer label is beyond 2^53, which JavaScript cannot hold exactly; use string labels`);
  }
  if (new Set(labels).size !== labels.length) throw new StateError(`${source}: labels repeat a class; expected each label once`);
  return labels;
}

/**
 * A classifier state from file bytes (Python: decode_state), every check of the Python reader:
 * { bundleId, labels, dim, embeddings: Float32Array [M * D], sampleClass: Int32Array-like [M] (numbers),
 *   head: {name: {data, shape}}, meta: {method?, ink?}, memory: {data, hidden} | null, memoryShots: number[] | null,
 *   unlabeled: Float32Array [U * D] | null }.
 */
async function decodeState(bytes, { key = null, source = 'state' } = {}) {
  const { arrays, meta, metaTree } = await readBody(bytes, { key, source });
  keys(meta, ['bundle_id', 'labels'], ['method', 'ink'], `${source}: meta`);
  if (typeof meta.bundle_id !== 'string' || !/^[0-9a-f]{64}$/.test(meta.bundle_id)) {
    throw new StateError(`${source}: bundle_id is not a bundle's 64-hex-digit manifest sha256`);
  }
  const labels = checkLabels(meta.labels, metaTree.v.get('labels'), source);
  if (Object.hasOwn(meta, 'ink') && !INKS.includes(meta.ink)) {
    throw new StateError(`${source}: ink is ${JSON.stringify(meta.ink)}; expected one of ${JSON.stringify(INKS)}`);
  }
  if (Object.hasOwn(meta, 'method') && !(typeof meta.method === 'string' && meta.method.length > 0 && meta.method.length <= 64)) {
    throw new StateError(`${source}: method must be a short string`);
  }
  const take = (name) => { const a = arrays.get(name); arrays.delete(name); return a; };
  const unlabeled = take('unlabeled');
  const emb = take('embeddings');
  const cls = take('sample_class');
  if (!emb || emb.dtype !== 'float32' || emb.shape.length !== 2) throw new StateError(`${source}: embeddings must be a float32 [M, D] array`);
  if (!allFinite(emb.data)) throw new StateError(`${source}: embeddings hold NaN or infinity; expected finite numbers`);
  const [M, D] = emb.shape;
  if (!cls || cls.dtype !== 'int64' || !sameList(cls.shape, [M])) {
    throw new StateError(`${source}: sample_class must be int64 [M], one class index per embedding`);
  }
  const sampleClass = Array.from(cls.data, Number);
  if (cls.data.some((v) => v < 0n || v >= BigInt(labels.length))) {
    throw new StateError(`${source}: sample_class holds an index outside the ${labels.length} labels`);
  }
  const { memory, memoryShots } = checkMemory(take('memory'), take('memory_shots'), labels.length, M, source);
  const used = new Set(sampleClass).size;
  if (!memory && used !== labels.length) {
    throw new StateError(`${source}: ${labels.length - used} labels have no embedding; expected every class to hold at least one`);
  }
  const head = {};
  for (const [name, value] of arrays) {
    if (!name.startsWith('head.') || value.dtype !== 'float32' || !allFinite(value.data)) {
      throw new StateError(`${source}: unexpected array ${JSON.stringify(name)}; expected finite float32 head.<name> parameters`);
    }
    head[name.slice(5)] = { data: value.data, shape: value.shape };
  }
  if (unlabeled && (unlabeled.dtype !== 'float32' || unlabeled.shape.length !== 2 || unlabeled.shape[1] !== D)) {
    throw new StateError(`${source}: unlabeled must be a float32 [U, ${D}] array (the embeddings' width), got ${unlabeled.dtype} ` +
      `${JSON.stringify(unlabeled.shape)}`);
  }
  if (unlabeled && !allFinite(unlabeled.data)) throw new StateError(`${source}: unlabeled holds NaN or infinity; expected finite numbers`);
  const kept = Object.fromEntries(['method', 'ink'].filter((k) => Object.hasOwn(meta, k)).map((k) => [k, meta[k]]));
  return {
    bundleId: meta.bundle_id, labels, dim: D, embeddings: emb.data, sampleClass, head, meta: kept, memory, memoryShots,
    unlabeled: unlabeled ? unlabeled.data : null,
  };
}

/** A recurrent state's memory [C, H] and memory_shots [C] (both or neither), as the Python reader checks them. */
function checkMemory(memory, shots, nLabels, nEmbeddings, source) {
  if (!memory && !shots) return { memory: null, memoryShots: null };
  if (!memory || memory.dtype !== 'float32' || memory.shape.length !== 2 || memory.shape[0] !== nLabels) {
    throw new StateError(`${source}: memory must be a float32 [C, H] array with one row per label (${nLabels})`);
  }
  if (!allFinite(memory.data)) throw new StateError(`${source}: memory holds NaN or infinity; expected finite numbers`);
  if (!shots || shots.dtype !== 'int64' || !sameList(shots.shape, [nLabels]) || shots.data.some((v) => v < 1n)) {
    throw new StateError(`${source}: memory_shots must be int64 [C] with at least one sample per class`);
  }
  if (nEmbeddings) throw new StateError(`${source}: holds both memory and ${nEmbeddings} embeddings; a memory state holds none`);
  return { memory: { data: memory.data, hidden: memory.shape[1] }, memoryShots: Array.from(shots.data, Number) };
}

export {
  MAGIC, STATE_FORMAT, STATE_VERSION, MAX_PAYLOAD_BYTES, PBKDF2_ITERATIONS, deriveStateKey, encodeState, decodeState, readBody,
  packBody, sealBody,
};
