#!/usr/bin/env node
/**
 * Personalise the shipped Omniglot bundle from Node.js with the JavaScript runtime (../../js, the
 * package edgemeta-js) over onnxruntime-node: no Python anywhere.
 *
 *   npm ci --ignore-scripts            # once, in examples/node
 *   node example.js [BUNDLE] [OMNIGLOT_DIR]
 *
 * BUNDLE defaults to ../../models/omniglot-conv4-proto; OMNIGLOT_DIR (a folder with evaluation.npz)
 * to $EDGEMETA_OMNIGLOT or ../../../shared/data/omniglot. The raw 105x105 drawings are read straight
 * from the .npz (a zip of .npy arrays) and handed to the classifier as they are: it resizes them to
 * the bundle's 28x28 the way the manifest says.
 */

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { FewShotClassifier, ZipArchive, deriveStateKey } from 'edgemeta-js';
import { fileReader, sourceFromPath } from 'edgemeta-js/node';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const bundlePath = process.argv[2] || path.join(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
const dataDir = process.argv[3] || process.env.EDGEMETA_OMNIGLOT || path.join(__dirname, '..', '..', '..', 'shared', 'data', 'omniglot');

/** The arrays of an uncompressed-or-deflated .npz: { name: { descr, shape, bytes } } (little-endian, C order). */
async function readNpz(file) {
  const out = {};
  const zip = await ZipArchive.open(fileReader(file, file), file); // an .npz is a flat zip: reuse the bundle zip reader
  for (const entry of zip.entries.filter((e) => !e.isDir)) {
    const name = entry.name;
    const bytes = await zip.read(entry, entry.size);
    const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length);
    if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${name} in ${file} is not a .npy array`);
    const major = buf[6];
    const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
    const start = major === 1 ? 10 : 12;
    const header = buf.toString('latin1', start, start + headerLen);
    if (/'fortran_order':\s*True/.test(header)) throw new Error(`${name}: Fortran order is not supported`);
    const descr = /'descr':\s*'([^']+)'/.exec(header)[1];
    const shape = /'shape':\s*\(([^)]*)\)/.exec(header)[1].split(',').filter((s) => s.trim()).map(Number);
    out[name.replace(/\.npy$/, '')] = { descr, shape, bytes: buf.subarray(start + headerLen) };
  }
  return out;
}

function npyStrings({ descr, shape, bytes }) { // '<U30': fixed-width UTF-32LE
  const width = Number(/^<U(\d+)$/.exec(descr)[1]);
  return Array.from({ length: shape[0] }, (_, i) => {
    let s = '';
    for (let k = 0; k < width; k++) {
      const cp = bytes.readUInt32LE((i * width + k) * 4);
      if (cp === 0) break;
      s += String.fromCodePoint(cp);
    }
    return s;
  });
}

async function main() {
  const npzFile = path.join(dataDir, 'evaluation.npz');
  if (!fs.existsSync(npzFile)) {
    console.error(`Omniglot not found at ${npzFile}; pass the folder as the second argument or set EDGEMETA_OMNIGLOT`);
    process.exit(2);
  }

  // 1. Load the bundle: format version, integrity digest and every file's sha256 are checked first.
  const clf = await FewShotClassifier.load(ort, sourceFromPath(bundlePath), { threads: 1 });
  const m = clf.bundle.manifest;
  console.log(`bundle ${bundlePath}: method ${m.method}, ${m.embedding.dim}-d embeddings, input ` +
    `${m.preprocess.size.join('x')} (${m.preprocess.resize}), identity ${clf.bundle.identity.slice(0, 12)}…`);

  // 2. Raw drawings: images [659, 20, 105, 105] uint8 0/1 with 1 = ink. Use characters the bundle never
  //    saw (Vinyals test split: char_id > 1200).
  const npz = await readNpz(npzFile);
  const [, perChar, H, W] = npz.images.shape;
  const charIds = Array.from({ length: npz.char_id.shape[0] }, (_, i) => npz.char_id.bytes.readInt16LE(2 * i));
  const alphabets = npyStrings(npz.alphabet);
  const characters = Array.from({ length: charIds.length }, (_, i) => npz.character.bytes.readInt16LE(2 * i));
  const drawing = (row, k) => ({ // one image object: {data, height, width, dtype}
    data: npz.images.bytes.subarray(((row * perChar) + k) * H * W, ((row * perChar) + k + 1) * H * W),
    height: H, width: W, dtype: 'bool',
  });
  const test = charIds.map((id, row) => ({ id, row })).filter((c) => c.id > 1200);
  const pick = [0, 60, 120, 180, 240, 300, 360].map((i) => test[i].row);
  const name = (row) => `${alphabets[row]}/character${String(characters[row]).padStart(2, '0')}`;
  const shots = (rows, from, to) => rows.flatMap((r) => Array.from({ length: to - from }, (_, k) => drawing(r, from + k)));
  const labels = (rows, n) => rows.flatMap((r) => Array(n).fill(name(r)));

  // 3. 5-way 5-shot: the user registers five characters with five drawings each.
  const five = pick.slice(0, 5);
  await clf.fit(shots(five, 0, 5), labels(five, 5));
  const query = shots(five, 5, 20);
  const truth = labels(five, 15);
  const accuracy = (pred, want) => (100 * pred.filter((p, i) => p === want[i]).length / want.length).toFixed(1);
  console.log(`fit 5 classes x 5 drawings; classes: ${clf.classes.join(', ')}`);
  console.log(`predict 75 new drawings: ${accuracy(await clf.predict(query), truth)} % correct`);
  const proba = (await clf.predictProba(query.slice(0, 1)))[0];
  console.log(`first query: ${clf.classes.map((c, j) => `${c} ${proba[j].toFixed(3)}`).join(', ')}`);

  // 4. Add a sixth class later, without re-embedding the first five (stored embeddings are reused).
  const six = pick[5];
  await clf.addClass(name(six), shots([six], 0, 5));
  const q6 = [...query, ...shots([six], 5, 20)];
  const t6 = [...truth, ...labels([six], 15)];
  console.log(`addClass ${name(six)}: ${clf.classes.length} classes, ${accuracy(await clf.predict(q6), t6)} % correct on 90 drawings`);

  // 5. Forget one: its embeddings are dropped and the head re-adapted; it can no longer be predicted.
  const gone = name(five[0]);
  await clf.forget(gone);
  const after = await clf.predict(q6);
  console.log(`forget ${gone}: ${clf.classes.length} classes left; predicted ${after.filter((p) => p === gone).length} times`);

  // 6. Open set: drawings of a character nobody registered, rejected by the manifest's calibrated threshold.
  if (m.open_set) {
    const stranger = shots([pick[6]], 0, 20);
    const open = await clf.predict(stranger, { rejectUnknown: true });
    const known = await clf.predict(q6.slice(15), { rejectUnknown: true });
    console.log(`open set: ${open.filter((p) => p === 'unknown').length}/20 drawings of an unregistered character answered ` +
      `'unknown'; ${known.filter((p) => p === 'unknown').length}/75 of registered ones`);
  }

  // 7. Keep what was learned: the private state (embeddings, labels, head; no drawing), encrypted under a
  //    passphrase-derived key, in the Python runtime's file format (edgemeta.runtime.FewShotClassifier.load reads it).
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const key = await deriveStateKey('an example passphrase', salt);
  const state = await clf.saveState({ key });
  const restored = await FewShotClassifier.load(ort, sourceFromPath(bundlePath), { threads: 1, state, key });
  const same = (await restored.predict(q6)).every((p, i) => p === after[i]);
  console.log(`saveState: ${state.length} bytes (AES-256-GCM); restored: ${restored.classes.length} classes, ` +
    `${same ? 'the same' : 'different'} predictions on 90 drawings`);
}

main().catch((e) => { console.error(`${e.name}: ${e.message}`); process.exit(1); });
