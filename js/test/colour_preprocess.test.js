/**
 * Colour preprocessing (format version 2, preprocess.channels 3) against hand-computed values of the
 * rules in docs/inputs.md: RGBA over white in integers, float quantised by floor(x * 255 + 0.5),
 * centre crop, box_int resize with exact integer sums, v / 255 as float32, [N, 3, H, W] planar.
 * Bit-identity with the Python runtime on real photos is checked by parity.test.js (case colour-*).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import * as em from '../src/index.js';

const spec = (H, W) => ({ channels: 3, channel_order: 'RGB', size: [H, W], fit: 'centre_crop', resize: 'box_int',
  value_range: [0.0, 1.0], normalization: 'in_graph' });
/** Preprocess one image and give its output levels (v * 255, which is exact for v = k / 255 in float32). */
const levels = (img, H, W) => Array.from(em.preprocess([img], spec(H, W)).data, (v) => Math.round(v * 255));

test('centre crop to the target aspect, in integers', () => {
  assert.deepEqual(em.centreCrop(10, 20, 2, 3), { y0: 0, x0: 2, ch: 10, cw: 15 }); // too wide: 20 * 2 > 10 * 3
  assert.deepEqual(em.centreCrop(20, 10, 2, 3), { y0: 7, x0: 0, ch: 6, cw: 10 }); // too tall: ch = 10 * 2 // 3 = 6
  assert.deepEqual(em.centreCrop(84, 84, 84, 84), { y0: 0, x0: 0, ch: 84, cw: 84 });
  assert.deepEqual(em.centreCrop(375, 500, 84, 84), { y0: 0, x0: 62, ch: 375, cw: 375 });
});

test('box_int bins: integer bins when downscaling, Pillow nearest pixels when upscaling', () => {
  const down = em.boxBins(7, 3); // [0, 2), [2, 4), [4, 7)
  assert.deepEqual([Array.from(down.lo), Array.from(down.hi)], [[0, 2, 4], [2, 4, 7]]);
  const up = em.boxBins(2, 5); // nearest: step 0.4 -> positions 0.2, 0.6, 1.0, 1.4, 1.8
  assert.deepEqual([Array.from(up.lo), Array.from(up.hi)], [[0, 0, 1, 1, 1], [1, 1, 2, 2, 2]]);
});

test('box_int of an RGB image: (S + C // 2) // C per channel, planar RGB output', () => {
  const data = new Uint8Array(4 * 6 * 3).map((_, k) => k); // pixel (r, x) channel c = (r * 6 + x) * 3 + c
  // 4x6 -> 2x3: same aspect, bins rows [0,2) [2,4), columns [0,2) [2,4) [4,6); e.g. R of (0, 0):
  // pixels 0, 3, 18, 21 sum to 42 over 4 pixels -> (42 + 2) // 4 = 11
  assert.deepEqual(levels({ data, height: 4, width: 6, channels: 3 }, 2, 3),
    [11, 17, 23, 47, 53, 59, 12, 18, 24, 48, 54, 60, 13, 19, 25, 49, 55, 61]);
  // rounding half up in integers: bin sum 1 + 2 = 3 over 2 pixels -> (3 + 1) // 2 = 2
  const two = new Uint8Array([1, 1, 1, 2, 2, 2].concat(new Array(3 * 14).fill(0)));
  assert.equal(levels({ data: two, height: 4, width: 4, channels: 3 }, 4, 2)[0], 2);
});

test('output values are float32(v) / float32(255) exactly', () => {
  const data = new Uint8Array(16 * 3).map((_, k) => (k * 37) % 256);
  const out = em.preprocess([{ data, height: 4, width: 4, channels: 3 }], spec(4, 4)).data;
  for (let c = 0; c < 3; c++) {
    for (let p = 0; p < 16; p++) assert.ok(Object.is(out[c * 16 + p], Math.fround(Math.fround(data[p * 3 + c]) / Math.fround(255))));
  }
});

test('RGBA is composited over white in integers; grey and bool are replicated', () => {
  const rgba = new Uint8Array(16 * 4);
  for (let p = 0; p < 16; p++) rgba.set([100, 0, 255, 128], p * 4);
  // (100 * 128 + 255 * 127 + 127) // 255 = 177; (0 + 32512) // 255 = 127; (32640 + 32512) // 255 = 255
  assert.deepEqual(new Set(levels({ data: rgba, height: 4, width: 4 }, 2, 2)), new Set([177, 127, 255]));
  assert.deepEqual(levels({ data: rgba, height: 4, width: 4 }, 2, 2), [177, 177, 177, 177, 127, 127, 127, 127, 255, 255, 255, 255]);
  const clamped = new Uint8ClampedArray(rgba); // browsers' ImageData.data
  assert.deepEqual(levels({ data: clamped, width: 4, height: 4, channels: 4 }, 2, 2), levels({ data: rgba, height: 4, width: 4 }, 2, 2));
  const grey = new Uint8Array(16).fill(77);
  assert.deepEqual(levels({ data: grey, height: 4, width: 4 }, 2, 2), new Array(12).fill(77));
  const mask = Array.from({ length: 16 }, (_, k) => k % 2 === 0);
  assert.deepEqual(levels({ data: mask, height: 4, width: 4 }, 4, 4).slice(0, 4), [255, 0, 255, 0]);
});

test('floats are composited in float64 and quantised by floor(x * 255 + 0.5)', () => {
  const f = new Float32Array(16 * 3);
  for (let p = 0; p < 16; p++) f.set([0.5, 0.498, 1], p * 3); // 128 (127.5 + 0.5), 127 (126.99 + 0.5), 255
  assert.deepEqual(levels({ data: f, height: 4, width: 4, channels: 3 }, 1, 1), [128, 127, 255]);
  const a = new Float64Array(16 * 4);
  for (let p = 0; p < 16; p++) a.set([0.2, 0, 1, 0.5], p * 4); // 0.2*0.5 + 0.5 = 0.6 -> 153; 0.5 -> 128; 1 -> 255
  assert.deepEqual(levels({ data: a, height: 4, width: 4 }, 1, 1), [153, 128, 255]);
  const greyF = new Float32Array(16).fill(0.25); // floor(63.75 + 0.5) = 64
  assert.deepEqual(levels({ data: greyF, height: 4, width: 4 }, 1, 1), [64, 64, 64]);
  assert.throws(() => em.preprocess([{ data: new Float32Array(48).fill(1.5), height: 4, width: 4, channels: 3 }], spec(2, 2)),
    (e) => e instanceof em.InputError && /values in \[0, 1\.5\]/.test(e.message));
  assert.throws(() => em.preprocess([{ data: new Float32Array(48).fill(NaN), height: 4, width: 4, channels: 3 }], spec(2, 2)),
    (e) => e instanceof em.InputError && /NaN or inf/.test(e.message));
});

test('upscaling copies Pillow-nearest source pixels; wide and tall images are centre-cropped', () => {
  const data = new Uint8Array(4 * 4 * 3).map((_, k) => Math.floor(k / 3)); // every channel = pixel index
  const up = levels({ data, height: 4, width: 4, channels: 3 }, 8, 8).slice(0, 64);
  const idx = em.nearestIndices(4, 8);
  for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) assert.equal(up[i * 8 + j], idx[i] * 4 + idx[j]);
  // 4 x 100 (no aspect limit for colour): the centre 4 x 4 columns 48..51 -> 2x2 bins
  const wide = new Uint8Array(4 * 100 * 3).map((_, k) => Math.floor(k / 3) % 100);
  assert.deepEqual(levels({ data: wide, height: 4, width: 100, channels: 3 }, 2, 2).slice(0, 4), [49, 51, 49, 51]); // (48+49)*2+2 // 4 = 49
  const tall = new Uint8Array(100 * 4 * 3).map((_, k) => Math.floor(Math.floor(k / 3) / 4)); // value = row
  assert.deepEqual(levels({ data: tall, height: 100, width: 4, channels: 3 }, 2, 2).slice(0, 4), [49, 49, 51, 51]);
});

test('sizes: at least 4x4, at most 50 megapixels (checked before reading any pixel)', () => {
  assert.throws(() => em.preprocess([{ data: new Uint8Array(27), height: 3, width: 3, channels: 3 }], spec(2, 2)),
    (e) => e instanceof em.InputError && /at least 4x4/.test(e.message));
  assert.throws(() => em.preprocess([{ data: new Uint8Array(0), height: 10000, width: 5001, channels: 4 }], spec(84, 84)),
    (e) => e instanceof em.InputError && /\(50 megapixels\); expected at most 50 megapixels/.test(e.message));
  assert.throws(() => em.preprocess([{ data: new Uint8Array(47), height: 4, width: 4, channels: 3 }], spec(2, 2)),
    (e) => e instanceof em.InputError && /expected height \* width \* channels = 48/.test(e.message));
  assert.throws(() => em.preprocess([{ data: new Uint8Array(32), height: 4, width: 4, channels: 2 }], spec(2, 2)),
    (e) => e instanceof em.InputError && /expected 1 \(grey\), 3 \(RGB\) or 4 \(RGBA\)/.test(e.message));
});

test('a large photo: exact sums over big bins, memory of one row', () => {
  const [h, w] = [3000, 4000]; // 12 megapixels RGBA: bins of 35 x 35 .. 36 x 36 pixels
  const data = new Uint8ClampedArray(h * w * 4);
  for (let k = 0; k < data.length; k += 4) data.set([255, 254, 1, 255], k);
  const out = levels({ data, height: h, width: w }, 84, 84);
  assert.deepEqual([...new Set(out.slice(0, 7056))], [255]);
  assert.deepEqual([...new Set(out.slice(7056, 14112))], [254]);
  assert.deepEqual([...new Set(out.slice(14112))], [1]);
});
