/**
 * The classifier's private state in the JavaScript runtime (src/state.js): saveState / loadState round
 * trips give the same answers, the file is the Python runtime's format (docs/state-format.md), and
 * damaged, altered, wrongly keyed or foreign state bytes are refused with a StateError naming the check.
 * Cross-language checks (JS -> Python, Python -> JS, PBKDF2 against hashlib) are in tests/test_js_state.py.
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { sourceFromPath as at } from '../src/node.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(__dirname, '..', '..');
const PROTO = path.join(REPO, 'models', 'omniglot-conv4-proto');
const COLOUR = path.join(__dirname, 'colour-bundle');
const RECURRENT = path.join(__dirname, 'recurrent-bundle');
const REFINE = path.join(REPO, 'models', 'omniglot-conv4-proto-refine');
const KEY = Uint8Array.from({ length: 32 }, (_, i) => i * 7 + 1);

/** Image k: 28x28 float32 strokes on a deterministic pattern (what is drawn does not matter here). */
function image(k, size = 28) {
  const data = new Float32Array(size * size);
  for (let r = 0; r < size; r++) for (let c = 0; c < size; c++) data[r * size + c] = (r * (k % 5 + 2) + c * (k % 3 + 1) + k) % 9 < 2 ? 1 : 0;
  return { data, height: size, width: size };
}
const support = Array.from({ length: 9 }, (_, k) => image(k));
const labels = ['b', 'b', 'b', 'a', 'a', 'a', 'ü', 'ü', 'ü'];
const query = Array.from({ length: 12 }, (_, k) => image(40 + k));

const decoder = new TextDecoder();
/** The header JSON text of state bytes. */
const headerOf = (bytes) => decoder.decode(bytes.subarray(15, bytes.indexOf(0x0a, 15)));

async function fitted(bundlePath = PROTO, options = {}) {
  const clf = await em.FewShotClassifier.load(ort, at(bundlePath), options);
  await clf.fit(support, labels);
  return clf;
}

test('saveState -> loadState gives the same classes, logits and predictions (plain and AES-256-GCM)', async () => {
  const clf = await fitted();
  const want = await clf.decisionFunction(query);
  for (const key of [null, KEY]) {
    const bytes = await clf.saveState({ key });
    assert.ok(bytes instanceof Uint8Array);
    assert.equal(decoder.decode(bytes.subarray(0, 15)), 'EDGEMETA-STATE\n');
    const header = JSON.parse(headerOf(bytes));
    assert.equal(header.encryption, key ? 'aes-256-gcm' : 'none');
    // Python's json.dumps(header, sort_keys=True): ", " and ": " separators, keys sorted
    assert.match(headerOf(bytes), /^\{"encryption": "[a-z0-9-]+", "format": "edgemeta-state", "payload_bytes": \d+, "payload_sha256": "[0-9a-f]{64}", "version": 2\}$/);
    const back = await em.FewShotClassifier.load(ort, at(PROTO), { state: bytes, key });
    assert.deepEqual(back.classes, ['a', 'b', 'ü']);
    assert.deepEqual([...back.classCounts()], [['a', 3], ['b', 3], ['ü', 3]]);
    assert.deepEqual((await back.decisionFunction(query)).data, want.data);
    assert.deepEqual(await back.predict(query), await clf.predict(query));
  }
});

test('a plain state holds the support embeddings and head, not the images; the same content gives the same bytes', async () => {
  const clf = await fitted();
  const bytes = await clf.saveState();
  const { arrays, meta } = await em.readBody(bytes);
  assert.deepEqual([...arrays.keys()], ['embeddings', 'sample_class', 'head.prototypes']);
  assert.deepEqual(arrays.get('embeddings').shape, [9, 64]);
  assert.deepEqual(Array.from(arrays.get('sample_class').data, Number), [1, 1, 1, 0, 0, 0, 2, 2, 2]);
  assert.deepEqual(arrays.get('head.prototypes').shape, [3, 64]);
  assert.deepEqual(meta, { bundle_id: clf.bundle.identity, ink: 'auto', labels: ['a', 'b', 'ü'], method: 'proto' });
  const again = await (await fitted()).saveState();
  assert.deepEqual(again, bytes, 'saving the same content twice gives identical bytes');
  const encrypted = [await clf.saveState({ key: KEY }), await clf.saveState({ key: KEY })];
  assert.notDeepEqual(encrypted[0], encrypted[1], 'a fresh nonce each time');
});

test('integer labels, forget, and a state with one class left (no head) round trip', async () => {
  const clf = await em.FewShotClassifier.load(ort, at(PROTO), { ink: 'high' });
  await clf.fit(support, [10, 10, 10, 2, 2, 2, 7, 7, 7]);
  await clf.forget(7);
  const two = await em.FewShotClassifier.load(ort, at(PROTO), { state: await clf.saveState() });
  assert.deepEqual(two.classes, [2, 10]);
  assert.equal(two.ink, 'high', "the state's ink applies when none is given");
  await clf.forget(2);
  const bytes = await clf.saveState();
  const one = await em.FewShotClassifier.load(ort, at(PROTO), { state: bytes, ink: 'low' });
  assert.equal(one.classes, null);
  assert.deepEqual([...one.classCounts()], [[10, 3]]);
  assert.equal(one.ink, 'low', 'an ink given to load wins over the state');
});

test('colour, refine (with its unlabelled pool) and recurrent bundles round trip', async () => {
  const colour = await em.FewShotClassifier.load(ort, at(COLOUR));
  const photo = (k) => ({ data: Uint8Array.from({ length: 40 * 30 * 3 }, (_, i) => (i * (k + 3)) % 251), height: 40, width: 30, channels: 3 });
  await colour.fit([0, 1, 2, 3].map(photo), ['x', 'x', 'y', 'y']);
  const c2 = await em.FewShotClassifier.load(ort, at(COLOUR), { state: await colour.saveState({ key: KEY }), key: KEY });
  assert.deepEqual((await c2.decisionFunction([photo(9)])).data, (await colour.decisionFunction([photo(9)])).data);

  const refine = await em.FewShotClassifier.load(ort, at(REFINE), { precision: 'fp32' });
  await refine.fit(support, labels, { unlabeled: query.slice(0, 5) });
  const r2 = await em.FewShotClassifier.load(ort, at(REFINE), { precision: 'fp32', state: await refine.saveState() });
  assert.equal(r2.poolSize, 5);
  assert.deepEqual((await r2.decisionFunction(query)).data, (await refine.decisionFunction(query)).data);

  const online = await em.FewShotClassifier.load(ort, at(RECURRENT));
  await online.partialFit(support.slice(0, 6), labels.slice(0, 6));
  await online.partialFit(support.slice(6), labels.slice(6));
  const bytes = await online.saveState();
  const { arrays } = await em.readBody(bytes);
  assert.deepEqual(arrays.get('embeddings').shape, [0, online.bundle.embeddingDim], 'a recurrent state holds no embeddings');
  assert.deepEqual(Array.from(arrays.get('memory_shots').data, Number), [3, 3, 3]);
  const o2 = await em.FewShotClassifier.load(ort, at(RECURRENT), { state: bytes });
  assert.deepEqual([...o2.classCounts()], [...online.classCounts()]);
  const [a, b] = [(await o2.decisionFunction(query)).data, (await online.decisionFunction(query)).data];
  assert.ok(a.every((v, i) => Math.abs(v - b[i]) <= 1e-5), 'the head read out of the memory again equals the one held');
  await assert.rejects(em.FewShotClassifier.load(ort, at(PROTO), { state: bytes }),
    (e) => e instanceof em.StateError && /saved for another bundle/.test(e.message));
});

/** State bytes with `edit(bytes)` applied (a copy). */
const edited = (bytes, edit) => { const copy = Uint8Array.from(bytes); edit(copy); return copy; };
/** `bytes` with its header replaced by `header` (payload kept). */
function withHeader(bytes, header) {
  const end = bytes.indexOf(0x0a, 15);
  const head = new TextEncoder().encode(header);
  const out = new Uint8Array(15 + head.length + bytes.length - end);
  out.set(bytes.subarray(0, 15));
  out.set(head, 15);
  out.set(bytes.subarray(end), 15 + head.length);
  return out;
}

test('hostile state bytes are refused with a StateError naming the check', async () => {
  const clf = await fitted();
  const plain = await clf.saveState();
  const sealed = await clf.saveState({ key: KEY });
  const header = headerOf(plain);
  const cases = [
    ['empty', new Uint8Array(0), null, /bad magic/],
    ['other magic', edited(plain, (b) => { b[0] = 0x65; }), null, /bad magic/],
    ['truncated', plain.subarray(0, plain.length - 7), null, /truncated or padded: payload is \d+ bytes, header says/],
    ['truncated in the header', plain.subarray(0, 40), null, /truncated \(no header\)/],
    ['padded', Uint8Array.from([...plain, 0]), null, /truncated or padded/],
    ['a flipped payload byte', edited(plain, (b) => { b[b.length - 100] ^= 1; }), null, /checksum mismatch/],
    ['an oversized header line', withHeader(plain, `${header.slice(0, -1)}, "pad": "${'x'.repeat(5000)}"}`), null, /header line is longer than 4096 bytes/],
    ['a header with a duplicate key', withHeader(plain, header.replace('"version": 2', '"version": 2, "version": 2')), null, /not strict JSON: duplicate key "version"/],
    ['a header that is not JSON', withHeader(plain, header.slice(0, 30)), null, /header is not valid JSON/],
    ['another header key', withHeader(plain, header.replace('"version": 2', '"version": 2, "extra": 1')), null, /header has keys/],
    ['version 3', withHeader(plain, header.replace('"version": 2', '"version": 3')), null, /version 3 is not supported/],
    ['version 2.0', withHeader(plain, header.replace('"version": 2', '"version": 2.0')), null, /is not supported/],
    ['version 1 (a .npz body)', withHeader(plain, header.replace('"version": 2', '"version": 1')), null, /read by the Python runtime only; load and save it there once/],
    ['a payload over 256 MiB', withHeader(plain, header.replace(/"payload_bytes": \d+/, '"payload_bytes": 300000000')), null, /at most 268435456 bytes/],
    ['a key for a plain file', plain, KEY, /not encrypted but a key was given/],
    ['no key for an encrypted file', sealed, null, /encrypted; pass the key/],
    ['a wrong key', sealed, new Uint8Array(32), /wrong key/],
    ['a key of 16 bytes', sealed, new Uint8Array(16), /must be 32 bytes/],
    ['an altered ciphertext, checksum recomputed', null, KEY, /wrong key \(or altered ciphertext\)/],
  ];
  // the altered ciphertext: a flipped byte with payload_sha256 recomputed, so only AES-GCM's tag catches it
  const start = sealed.indexOf(0x0a, 15) + 1;
  const altered = edited(sealed, (b) => { b[b.length - 40] ^= 1; });
  const sha = await em.sha256Hex(altered.subarray(start));
  cases[cases.length - 1][1] = withHeader(altered, headerOf(sealed).replace(/"payload_sha256": "[0-9a-f]+"/, `"payload_sha256": "${sha}"`));
  for (const [what, bytes, key, message] of cases) {
    await assert.rejects(clf.loadState(bytes, { key }), (e) => e instanceof em.StateError && message.test(e.message)
      ? true : assert.fail(`${what}: ${e.stack}`));
  }
  assert.deepEqual(clf.classes, ['a', 'b', 'ü'], 'a refused state leaves the classifier as it was');
  await assert.rejects(clf.loadState('not bytes'), (e) => e instanceof em.StateError);
});

test('a state of another bundle, width, method or label set is refused', async () => {
  const clf = await fitted();
  const bytes = await clf.saveState();
  const colour = await em.FewShotClassifier.load(ort, at(COLOUR));
  await assert.rejects(colour.loadState(bytes), (e) => e instanceof em.StateError && /saved for another bundle \(4fd0eb121161…\)/.test(e.message));
  /** The plain state with its body rebuilt from `arrays` and `meta` (sealed again: only the content checks can catch it). */
  const rebuilt = async (change) => {
    const { arrays, meta } = await em.readBody(bytes);
    const list = [...arrays].map(([name, a]) => [name, a.dtype, a.shape, a.data]);
    const [l2, m2] = change(list, { ...meta });
    const { packBody, sealBody } = await import('../src/state.js');
    return sealBody(packBody(l2, m2));
  };
  const refusals = [
    [(l, m) => [l, { ...m, labels: ['a', 'a', 'b'] }], /labels repeat a class/],
    [(l, m) => [l, { ...m, labels: ['a', 'b', 3] }], /all strings or all 64-bit integers/],
    [(l, m) => [l, { ...m, labels: ['a', 'b', 'c', 'd'] }], /1 labels have no embedding/],
    [(l, m) => [l, { ...m, ink: 'sideways' }], /ink is "sideways"/],
    [(l, m) => [l, { ...m, method: 'ridge' }], /adapted with method "ridge"/],
    [(l, m) => [l, { ...m, extra: 1 }], /meta has keys/],
    [(l, m) => [l.map((a) => (a[0] === 'sample_class' ? [a[0], a[1], a[2], a[3].map((v) => (v === 2n ? 5n : v))] : a)), m], /outside the 3 labels/],
    [(l, m) => [l.map((a) => (a[0] === 'embeddings' ? [a[0], a[1], a[2], a[3].map((v, i) => (i === 3 ? NaN : v))] : a)), m], /NaN or infinity/],
    [(l, m) => [l.map((a) => (a[0] === 'embeddings' ? [a[0], a[1], [18, 32], a[3]] : a)), m], /sample_class must be int64 \[M\]/],
    [(l, m) => [[...l, ['notes', 'float32', [1], [0]]], m], /unexpected array "notes"/],
    [(l, m) => [[...l, ['unlabeled', 'float32', [1, 64], new Float32Array(64)]], m], /has no refine graph to use them/],
  ];
  for (const [change, message] of refusals) {
    await assert.rejects(clf.loadState(await rebuilt(change)), (e) => e instanceof em.StateError && message.test(e.message)
      ? true : assert.fail(`${message}: ${e.stack}`));
  }
});

test('deriveStateKey: PBKDF2-HMAC-SHA256, 32 bytes, deterministic; bad passphrases and salts refused', async () => {
  const salt = new TextEncoder().encode('0123456789abcdef');
  const a = await em.deriveStateKey('correct horse', salt, 1000);
  assert.equal(a.length, 32);
  assert.deepEqual(await em.deriveStateKey('correct horse', salt, 1000), a);
  assert.notDeepEqual(await em.deriveStateKey('correct horsf', salt, 1000), a);
  assert.equal(em.PBKDF2_ITERATIONS, 600000);
  await assert.rejects(em.deriveStateKey('', salt), em.StateError);
  await assert.rejects(em.deriveStateKey('pw', new Uint8Array(8)), /at least 16 bytes/);
  const clf = await fitted();
  const key = await em.deriveStateKey('correct horse', salt, 1000);
  const back = await em.FewShotClassifier.load(ort, at(PROTO), { state: await clf.saveState({ key }), key });
  assert.deepEqual(back.classes, clf.classes);
  const cryptoKey = await globalThis.crypto.subtle.importKey('raw', key, 'AES-GCM', false, ['encrypt', 'decrypt']);
  assert.deepEqual((await em.FewShotClassifier.load(ort, at(PROTO), { state: await clf.saveState({ key: cryptoKey }), key })).classes, clf.classes);
});

test('damaged state bytes (truncated, bytes flipped anywhere) load or throw StateError, never anything else', async (t) => {
  const clf = await fitted();
  const plain = await clf.saveState();
  let seed = 4242;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return Math.floor(seed / 65536) % n; }; // high bits
  const outcomes = { loaded: 0, refused: 0 };
  const target = await em.FewShotClassifier.load(ort, at(PROTO));
  for (let k = 0; k < 200; k++) {
    let bytes = Uint8Array.from(plain);
    if (k % 10 === 0) bytes = bytes.subarray(0, rand(bytes.length));
    else for (let j = 0; j <= k % 3; j++) bytes[rand(k % 2 ? 300 : bytes.length)] = rand(256); // header region half the time
    try {
      await target.loadState(bytes);
      outcomes.loaded += 1;
    } catch (e) {
      assert.ok(e instanceof em.StateError, `mutant ${k}: ${e.stack}`);
      outcomes.refused += 1;
    }
  }
  assert.ok(outcomes.refused > 190, JSON.stringify(outcomes));
  // the body damaged, then sealed again with a correct checksum: only the index and array checks can catch it
  const { sealBody } = await import('../src/state.js');
  const body = plain.subarray(plain.indexOf(0x0a, 15) + 1);
  const resealed = { loaded: 0, refused: 0 };
  for (let k = 0; k < 200; k++) {
    let mutant = Uint8Array.from(body);
    if (k % 10 === 0) mutant = mutant.subarray(0, rand(mutant.length));
    else for (let j = 0; j <= k % 3; j++) mutant[rand(k % 2 ? 400 : mutant.length)] = rand(256); // the index half the time
    try {
      await target.loadState(await sealBody(mutant));
      resealed.loaded += 1;
    } catch (e) {
      assert.ok(e instanceof em.StateError, `resealed mutant ${k}: ${e.stack}`);
      resealed.refused += 1;
    }
  }
  t.diagnostic(`200 damaged files: ${JSON.stringify(outcomes)}; 200 damaged bodies sealed again: ${JSON.stringify(resealed)}`);
  assert.ok(resealed.refused > 50 && resealed.loaded > 10, JSON.stringify(resealed));
});
