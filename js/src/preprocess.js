/**
 * Preprocessing (contract/preprocess.py), platform-neutral: raw images -> float32 batches, bit for bit
 * what the Python runtime computes.
 *
 * Images are raw pictures, one object each: `{ data, height, width[, channels] }` with `data` in
 * row-major order (`data[r * width + c]`, `height * width` values; for colour, `channels` = 3 (RGB)
 * or 4 (RGBA) interleaved values per pixel, as ImageData, Android bitmaps and camera frames give):
 *   - Uint8Array / Uint8ClampedArray: uint8 0..255 (divided by 255);
 *   - Float32Array / Float64Array / Array of numbers: floats already in [0, 1];
 *   - Array of booleans, or any of the above with `dtype: 'bool'`: true / nonzero = ink = 1.
 * An explicit `dtype` ('bool' | 'uint8' | 'float32' | 'float64') overrides the guess from `data`.
 * Grey bundles: colour becomes grey as Pillow's convert("L") (RGBA composited over white first), then
 * the image is resized to the manifest's `preprocess.size` (only the `nearest` filter is implemented).
 * Ink polarity is found per image by default (`ink: 'auto'`: a mean above 0.5 is dark ink on bright
 * paper, inverted); `{ ink: 'high' }` / `{ ink: 'low' }` force bright / dark strokes.
 * Colour bundles (format version 2, preprocess.channels 3) take the same objects (channels 1, 3 or 4)
 * and give [N, 3, H, W] RGB: RGBA over white in integers, centre crop, box_int resize (see
 * preprocessColour); any aspect ratio; ink has no effect there.
 */

import { InputError } from './errors.js';

const PILLOW_FILTERS = ['nearest', 'box', 'bilinear', 'hamming', 'bicubic', 'lanczos'];
const MIN_SIDE = 4; // smaller images carry no usable strokes
const MAX_ASPECT = 4; // beyond this an "image" is almost always a flattened or mis-shaped array
const MAX_PIXELS = 50000000; // per image; larger ones are refused (downscale first)

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
      throw new InputError(`resize filter "${spec.resize}" is not implemented in the JavaScript runtime (only "nearest" for grey bundles); ` +
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


export {
  INKS, MIN_SIDE, MAX_ASPECT, MAX_PIXELS, preprocess, preprocessColour, centreCrop, boxBins, nearestIndices, unitGrey, meanFloat64,
};
