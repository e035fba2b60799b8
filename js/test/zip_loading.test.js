/**
 * Hostile .zip bundles are refused as the Python loader refuses them (contract/bundle.py _read_zip),
 * fast and without inflating what is not listed: each zip is written here, byte by byte, from the
 * committed colour bundle (test/colour-bundle), with one thing wrong. Each is read from a file on disk
 * (node.js's zipFileSource) and, where it loads, from memory too (zipSource: what a browser does).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import childProcess from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fileURLToPath, pathToFileURL } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { readBundleAt, sourceFromPath as at } from '../src/node.js';
import { resealed } from './bundle_copies.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const { crc32 } = em;

const BUNDLE = path.join(__dirname, 'colour-bundle');
const NAMES = ['manifest.json', 'adapt.onnx', 'backbone.onnx', 'classify.onnx'];
const original = Object.fromEntries(NAMES.map((n) => [n, fs.readFileSync(path.join(BUNDLE, n))]));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'edgemeta-zip-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/**
 * A .zip as bytes. entries: { name, data, method = 8, flags = 0, declared (central-directory size),
 * raw (the stored bytes, instead of compressing data), sameLocalAs (index: a central entry pointing at
 * that entry's local header instead of a new one) }.
 */
function zipBytes(entries) {
  const locals = [];
  const central = [];
  const offsets = [];
  const raws = [];
  let offset = 0;
  const u16 = (v) => { const b = Buffer.alloc(2); b.writeUInt16LE(v); return b; };
  const u32 = (v) => { const b = Buffer.alloc(4); b.writeUInt32LE(v >>> 0); return b; };
  for (const e of entries) {
    const method = e.method ?? 8;
    const data = e.data ?? Buffer.alloc(0);
    const raw = e.raw ?? (e.sameLocalAs !== undefined ? raws[e.sameLocalAs] : method === 8 ? zlib.deflateRawSync(data) : data);
    raws.push(raw);
    const name = Buffer.from(e.name, 'utf8');
    const fields = [u16(e.flags ?? 0), u16(method), u16(0), u16(0x21), u32(crc32(data)), u32(raw.length),
      u32(e.declared ?? data.length), u16(name.length), u16(0)];
    let at = offset;
    if (e.sameLocalAs !== undefined) {
      at = offsets[e.sameLocalAs];
    } else {
      const local = Buffer.concat([u32(0x04034b50), u16(20), ...fields, name, raw]);
      locals.push(local);
      offset += local.length;
    }
    offsets.push(at);
    central.push(Buffer.concat([u32(0x02014b50), u16(20), u16(20), ...fields, u16(0), u16(0), u16(0), u32(0), u32(at), name]));
  }
  const cd = Buffer.concat(central);
  const end = Buffer.concat([u32(0x06054b50), u16(0), u16(0), u16(entries.length), u16(entries.length),
    u32(cd.length), u32(offset), u16(0)]);
  return Buffer.concat([...locals, cd, end]);
}

/** The colour bundle's entries (manifest first), with `change(entry)` applied to each. */
function bundleEntries(change = (e) => e, prefix = '') {
  return NAMES.map((n) => change({ name: prefix + n, data: original[n] }));
}

let counter = 0;
/** Write `bytes` as a .zip in the temporary folder; its path. */
function writeZip(bytes) {
  const p = path.join(tmp, `b${counter++}.zip`);
  fs.writeFileSync(p, bytes);
  return p;
}

const load = (entries) => readBundleAt(writeZip(zipBytes(entries)));
const loadInMemory = (entries) => em.readBundle(em.zipSource(new Uint8Array(zipBytes(entries)), { name: 'b.zip' }));

/** Loading `entries` (from a file and from memory) rejects with a BundleError matching `pattern`, within seconds. */
async function refused(entries, pattern) {
  const start = process.hrtime.bigint();
  const check = (e) => (e instanceof em.BundleError && pattern.test(e.message) ? true : assert.fail(e.stack));
  await assert.rejects(load(entries), check);
  await assert.rejects(loadInMemory(entries), check);
  assert.ok(Number(process.hrtime.bigint() - start) / 1e9 < 10, 'refused quickly');
}

/** `n` bytes of zeros as a deflate stream of `n >> 20` one-MiB blocks (written without inflating them). */
function zerosDeflated(n) {
  const block = zlib.deflateRawSync(Buffer.alloc(1 << 20), { finishFlush: zlib.constants.Z_SYNC_FLUSH });
  return Buffer.concat([...Array(n >> 20).fill(block), Buffer.from([0x03, 0x00])]); // then an empty final block
}

test('a zip written here loads like the folder, flat, in one folder, stored or deflated', async () => {
  for (const entries of [bundleEntries(), bundleEntries((e) => e, 'bundle/'), bundleEntries((e) => ({ ...e, method: 0 }))]) {
    for (const { manifest, files } of [await load(entries), await loadInMemory(entries)]) {
      assert.deepEqual([...files.keys()], Object.keys(manifest.files));
      for (const [name, data] of files) assert.ok(Buffer.from(data).equals(original[name]), name);
    }
  }
  const bundle = await em.Bundle.load(ort, at(writeZip(zipBytes(bundleEntries()))));
  assert.equal(bundle.manifest.preprocess.channels, 3);
  const inMemory = await em.Bundle.load(ort, em.zipSource(new Uint8Array(zipBytes(bundleEntries()))));
  assert.equal(inMemory.identity, bundle.identity);
});

test('an unlisted entry is never inflated: a damaged one, one that inflates to 1 GiB, a nested zip', async () => {
  const broken = zlib.deflateRawSync(Buffer.from('notes '.repeat(100)));
  broken[0] |= 0x06; // block type 3: not a valid deflate stream
  const nested = zipBytes(bundleEntries());
  const { files } = await load([...bundleEntries(), { name: 'notes.txt', data: Buffer.from('notes '.repeat(100)), raw: broken },
    { name: 'zeros.bin', data: Buffer.alloc(0), raw: zerosDeflated(1 << 30), declared: 2 ** 30 },
    { name: 'inner.zip', data: nested, method: 0 }]);
  assert.deepEqual([...files.keys()].sort(), ['adapt.onnx', 'backbone.onnx', 'classify.onnx']);
});

test('a zip holding only a bundle .zip, or a bundle in nested folders, is refused', async () => {
  await refused([{ name: 'inner.zip', data: zipBytes(bundleEntries()), method: 0 }], /no manifest\.json; is this an edgemeta bundle\?/);
  await refused(bundleEntries((e) => e, 'a/b/'), /"a\/b\/manifest\.json": expected manifest\.json at the top of the zip or in one folder/);
  await refused([...bundleEntries(), ...bundleEntries((e) => e, 'other/')], /several manifests/);
});

test('an entry declaring more than expected is refused without inflating it', async () => {
  await refused(bundleEntries((e) => (e.name === 'manifest.json' ? { ...e, declared: 3e9 } : e)),
    /zip entry "manifest\.json" declares 3000000000 bytes, more than the 1048576 expected; refused without inflating it/);
  await refused(bundleEntries((e) => (e.name === 'backbone.onnx' ? { ...e, declared: 0xfffffffe } : e)),
    /backbone\.onnx is 4294967294 bytes, the manifest says 117836 \(truncated or replaced\); refused without inflating it/);
});

test('a listed entry whose declared size differs from the manifest is refused before inflating', async () => {
  await refused(bundleEntries((e) => (e.name === 'adapt.onnx' ? { ...e, declared: 866 } : e)),
    /adapt\.onnx is 866 bytes, the manifest says 867 \(truncated or replaced\); refused without inflating it/);
});

test('a listed entry that inflates past its declared size (a zip bomb) stops at that size', async () => {
  await refused(bundleEntries((e) => (e.name === 'backbone.onnx' ? { ...e, raw: zerosDeflated(64 << 20), declared: 117836 } : e)),
    /zip entry "backbone\.onnx" inflates to more than the 117836 bytes it declares/);
});

test('overlapping entries (central-directory entries sharing one local header) are refused', async () => {
  await refused([...bundleEntries(), { name: 'copy.onnx', data: original['backbone.onnx'], sameLocalAs: 2 }],
    /zip entries "backbone\.onnx" and "copy\.onnx" overlap|zip entries "copy\.onnx" and "backbone\.onnx" overlap/);
  const many = Array.from({ length: 200 }, (_, i) => ({ name: `c${i}.onnx`, data: original['backbone.onnx'], sameLocalAs: 2 }));
  await refused([...bundleEntries(), ...many], /overlap; expected each entry stored once/);
});

test('duplicate names and more than 256 entries are refused', async () => {
  await refused([...bundleEntries(), { name: 'backbone.onnx', data: original['backbone.onnx'] }],
    /the zip holds entries named \["backbone\.onnx"\] more than once; expected each name once/);
  const extra = Array.from({ length: 253 }, (_, i) => ({ name: `x${i}.txt`, data: Buffer.from('x') }));
  assert.equal((await load([...bundleEntries(), ...extra.slice(1)])).files.size, 3); // 256 entries: fine
  await refused([...bundleEntries(), ...extra], /the zip has 257 entries; a bundle has at most 256/);
});

test('encrypted and unsupported-compression listed entries are refused naming what is expected', async () => {
  await refused(bundleEntries((e) => (e.name === 'classify.onnx' ? { ...e, flags: 1 } : e)),
    /zip entry "classify\.onnx" is encrypted; expected a plain zip/);
  await refused(bundleEntries((e) => (e.name === 'classify.onnx' ? { ...e, method: 12, raw: original['classify.onnx'] } : e)),
    /zip entry "classify\.onnx" uses compression method 12; expected stored \(0\) or deflated \(8\)/);
});

test('each listed file is checked as soon as it is read, in a zip and in a folder', async () => {
  const flipped = Buffer.from(original['adapt.onnx']);
  flipped[100] ^= 1;
  // adapt.onnx (listed first) is altered; classify.onnx (listed last) could not even be read
  await refused(bundleEntries((e) => (e.name === 'adapt.onnx' ? { ...e, data: flipped } :
    e.name === 'classify.onnx' ? { ...e, method: 12, raw: e.data } : e)), /sha256 of adapt\.onnx does not match the manifest/);
  const folder = fs.mkdtempSync(path.join(tmp, 'folder-'));
  for (const n of NAMES) fs.writeFileSync(path.join(folder, n), original[n]);
  fs.writeFileSync(path.join(folder, 'adapt.onnx'), flipped);
  fs.rmSync(path.join(folder, 'classify.onnx'));
  fs.symlinkSync(path.join(BUNDLE, 'classify.onnx'), path.join(folder, 'classify.onnx'));
  await assert.rejects(readBundleAt(folder), /sha256 of adapt\.onnx does not match the manifest/);
});

test('a manifest listing more than 512 MiB in all is refused before any file is read', async () => {
  const text = original['manifest.json'].toString('utf8').replace('"bytes": 117836', `"bytes": ${600 << 20}`);
  const sealed = Buffer.from(await resealed(text));
  const total = RegExp(`the manifest lists ${(600 << 20) + 867 + 1267} bytes of files; a bundle holds at most 536870912 bytes`);
  await assert.rejects(em.parseManifest(sealed, 'b'), total);
  await refused(bundleEntries((e) => (e.name === 'manifest.json' ? { ...e, data: sealed } : e)), total);
  const folder = fs.mkdtempSync(path.join(tmp, 'folder-'));
  for (const n of NAMES) fs.writeFileSync(path.join(folder, n), n === 'manifest.json' ? sealed : original[n]);
  await assert.rejects(readBundleAt(folder), total);
});

test('damaged zips (truncated, bytes flipped anywhere) load or throw BundleError, never anything else', async () => {
  const good = zipBytes(bundleEntries());
  let seed = 12345;
  const rand = (n) => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed % n; };
  const outcomes = { loaded: 0, refused: 0 };
  for (let k = 0; k < 300; k++) {
    let bytes = Buffer.from(good);
    if (k % 10 === 0) bytes = bytes.subarray(0, rand(bytes.length));
    else for (let j = 0; j <= k % 3; j++) bytes[bytes.length - 1 - rand(k % 2 ? 400 : bytes.length)] = rand(256);
    try {
      await readBundleAt(writeZip(bytes)); outcomes.loaded += 1;
    } catch (e) {
      assert.ok(e instanceof em.BundleError, `mutant ${k}: ${e.stack}`);
      outcomes.refused += 1;
    }
  }
  assert.ok(outcomes.refused > 100, JSON.stringify(outcomes));
});

test('loading next to a 1 GiB zip bomb stays far below its size in memory', (t) => {
  const p = writeZip(zipBytes([...bundleEntries(), { name: 'zeros.bin', raw: zerosDeflated(1 << 30), declared: 2 ** 30 }]));
  const node = pathToFileURL(path.join(__dirname, '..', 'src', 'node.js')).href;
  const script = `const { readBundleAt } = await import(${JSON.stringify(node)});
    const before = process.resourceUsage().maxRSS; await readBundleAt(${JSON.stringify(p)});
    process.stdout.write(String((process.resourceUsage().maxRSS - before) / 1024));`;
  const grownMiB = Number(childProcess.execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' }));
  t.diagnostic(`peak RSS grew by ${grownMiB.toFixed(1)} MiB loading next to a 1 GiB bomb`);
  assert.ok(grownMiB < 300, `peak memory grew by ${grownMiB} MiB`);
});

test('zipSource takes bytes or a reader; anything else is a BundleError', () => {
  for (const bad of ['bundle.zip', null, 42, [1, 2, 3]]) {
    assert.throws(() => em.zipSource(bad), (e) => e instanceof em.BundleError && /must be bytes/.test(e.message));
  }
  assert.equal(typeof em.zipSource(new ArrayBuffer(0)).readManifest, 'function');
});

test('memorySource: a bundle already in memory loads like the folder; without a manifest it is refused', async () => {
  const files = new Map(NAMES.map((n) => [n, new Uint8Array(original[n])]));
  const bundle = await em.Bundle.load(ort, em.memorySource(files, { name: 'mem' }));
  assert.equal(bundle.identity, (await em.Bundle.load(ort, at(BUNDLE))).identity);
  files.delete('manifest.json');
  await assert.rejects(em.readBundle(em.memorySource(files, { name: 'mem' })), /mem: no manifest\.json/);
  const altered = new Map(NAMES.map((n) => [n, new Uint8Array(original[n])]));
  altered.get('classify.onnx')[10] ^= 1;
  await assert.rejects(em.readBundle(em.memorySource(altered)), /sha256 of classify\.onnx does not match/);
});
