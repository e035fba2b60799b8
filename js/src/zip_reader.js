/**
 * A bounded .zip reader for bundles, platform-neutral, with the refusals of the Python loader (contract/bundle.py
 * _read_zip): only the central directory is read up front (at most 256 entries, each name once, no two
 * entries sharing bytes, none running into the directory); an entry is inflated only when asked, only
 * after its declared size fit the caller's limit, and never past that size. No zip64, no encryption,
 * stored or deflated entries only. Every refusal is a BundleError naming what was expected.
 *
 * The zip is read through a `reader` ({ size, read(pos, len) -> Promise<Uint8Array> }): bytesReader(bytes)
 * over a Uint8Array (browser and Node), node.js's fileReader over an open file (only the central
 * directory and the entries asked for are read). Deflated entries are inflated with the platform's
 * DecompressionStream('deflate-raw'), chunk by chunk, stopped as soon as the output passes the
 * entry's declared size, then CRC-32 checked.
 */

import { BundleError } from './errors.js';

const MAX_ZIP_ENTRIES = 256;
const MAX_DIRECTORY_BYTES = 1 << 20; // 256 entries with names and extras of up to 4 KB each
const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const CENTRAL_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const EOCD_BYTES = 22;
const MAX_COMMENT = 0xffff;
const STORED = 0;
const DEFLATED = 8;

/** The most bytes deflate can emit for `n` input bytes (zlib's deflateBound plus slack). */
const deflateBound = (n) => n + Math.floor(n / 4096) + Math.floor(n / 16384) + Math.floor(n / 33554432) + 1024;

let crcTable = null;
/** CRC-32 of `buf` (Uint8Array), as zip stores it. */
function crc32(buf) {
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < buf.length; i++) c = crcTable[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

/** A zip opened on a file descriptor: `entries` ({ name, flags, method, crc, compSize, size, dataStart, isDir }). */
class ZipArchive {
  constructor(reader, source, entries) {
    this.reader = reader;
    this.source = source;
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  refuse(msg) { return new BundleError(`${this.source}: ${msg}`); }

  /**
   * The central directory of the zip `reader` reads ({ size, read(pos, len) }), checked; null when
   * the bytes are not a zip at all (no end-of-central-directory record).
   */
  static async open(reader, source) {
    const { size } = reader;
    const refuse = (msg) => new BundleError(`${source}: ${msg}`);
    const tailLen = Math.min(size, EOCD_BYTES + MAX_COMMENT);
    if (tailLen < EOCD_BYTES) return null;
    const tail = await readAt(reader, size - tailLen, tailLen, source);
    let p = tailLen - EOCD_BYTES;
    while (p >= 0 && u32(tail, p) !== EOCD_SIG) p--; // the last end record, as Python's zipfile finds it
    if (p < 0) return null;
    const eocd = size - tailLen + p;
    if (u16(tail, p + 4) !== 0 || u16(tail, p + 6) !== 0) {
      throw refuse('the zip spans several disks; expected one plain .zip file');
    }
    const count = u16(tail, p + 10);
    const cdSize = u32(tail, p + 12);
    const cdOffset = u32(tail, p + 16);
    const locator = eocd >= 20 ? u32(await readAt(reader, eocd - 20, 4, source), 0) : 0;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff || locator === ZIP64_LOCATOR_SIG) {
      throw refuse('zip64 archives are not supported; expected a plain zip (a bundle is far below 4 GiB)');
    }
    const concat = eocd - cdSize - cdOffset; // bytes prepended to the zip (a self-extractor stub)
    if (concat < 0) throw refuse('the zip is damaged (its central directory runs past its end record)');
    if (cdSize > MAX_DIRECTORY_BYTES) {
      throw refuse(`the zip's central directory is ${cdSize} bytes; a bundle's is at most ${MAX_DIRECTORY_BYTES}`);
    }
    const cd = await readAt(reader, cdOffset + concat, cdSize, source);
    const entries = [];
    for (let q = 0; q < cdSize;) {
      if (q + 46 > cdSize || u32(cd, q) !== CENTRAL_SIG) throw refuse('the zip is damaged (bad central directory)');
      const flags = u16(cd, q + 8);
      const nameLen = u16(cd, q + 28);
      const end = q + 46 + nameLen + u16(cd, q + 30) + u16(cd, q + 32);
      if (end > cdSize) throw refuse('the zip is damaged (bad central directory)');
      let name = decodeName(cd.subarray(q + 46, q + 46 + nameLen), flags & 0x800);
      if (name.includes('\0')) name = name.slice(0, name.indexOf('\0')); // as Python's zipfile reads it
      const entry = {
        name, flags, method: u16(cd, q + 10), crc: u32(cd, q + 16),
        compSize: u32(cd, q + 20), size: u32(cd, q + 24), local: u32(cd, q + 42) + concat,
        isDir: name.endsWith('/'), dataStart: -1,
      };
      if (entry.compSize === 0xffffffff || entry.size === 0xffffffff || entry.local - concat === 0xffffffff) {
        throw refuse(`zip entry "${name}" needs zip64; expected a plain zip`);
      }
      entries.push(entry);
      q = end;
    }
    if (entries.length > MAX_ZIP_ENTRIES) {
      throw refuse(`the zip has ${entries.length} entries; a bundle has at most ${MAX_ZIP_ENTRIES}`);
    }
    const seen = new Set();
    const dup = new Set();
    for (const e of entries) (seen.has(e.name) ? dup : seen).add(e.name);
    if (dup.size) {
      throw refuse(`the zip holds entries named ${JSON.stringify([...dup].sort())} more than once; expected each name once`);
    }
    await checkDisjoint(reader, entries, cdOffset + concat, source);
    return new ZipArchive(reader, source, entries);
  }

  /** The entry named `name` exactly (folder prefix included), or undefined. */
  get(name) { return this.byName.get(name); }

  /**
   * The bytes of `entry`, refused before reading if it is encrypted, compressed otherwise than stored
   * or deflated, or declares more than `limit` bytes; inflated with a bound of its declared size.
   * Returns a Promise of a Uint8Array.
   */
  async read(entry, limit) {
    const what = `zip entry "${entry.name}"`;
    if (entry.flags & 1) throw this.refuse(`${what} is encrypted; expected a plain zip`);
    if (entry.method !== STORED && entry.method !== DEFLATED) {
      throw this.refuse(`${what} uses compression method ${entry.method}; expected stored (0) or deflated (8)`);
    }
    if (entry.size > limit) {
      throw this.refuse(`${what} declares ${entry.size} bytes, more than the ${limit} expected; refused without inflating it`);
    }
    const most = entry.method === STORED ? entry.size : deflateBound(entry.size);
    if (entry.compSize > most) {
      throw this.refuse(`${what} holds ${entry.compSize} compressed bytes for ${entry.size} declared; ` +
        `expected at most ${most}; the zip is damaged`);
    }
    const raw = await readAt(this.reader, entry.dataStart, entry.compSize, this.source);
    let data;
    if (entry.method === STORED) {
      data = raw;
    } else {
      data = await inflateRaw(raw, entry.size);
      if (data === null) throw this.refuse(`${what} inflates to more than the ${entry.size} bytes it declares; the zip is damaged`);
      if (data instanceof Error) throw this.refuse(`${what} does not inflate (${data.message}); the zip is damaged`);
    }
    if (data.length !== entry.size) {
      throw this.refuse(`${what} holds ${data.length} bytes, it declares ${entry.size}; the zip is damaged`);
    }
    if (crc32(data) !== entry.crc) throw this.refuse(`${what} fails its CRC-32 check; the zip is damaged`);
    return data;
  }
}

/**
 * Sets each entry's `dataStart` from its local header; refuses entries whose header + data ranges
 * overlap (one deflate stream shared by many entries: the overlapping-entry zip bomb) or run past
 * the central directory at `directoryStart`.
 */
async function checkDisjoint(reader, entries, directoryStart, source) {
  const spans = [];
  for (const e of entries) {
    const head = e.local + 30 <= directoryStart ? await readAt(reader, e.local, 30, source) : null;
    if (!head || u32(head, 0) !== LOCAL_SIG) {
      throw new BundleError(`${source}: zip entry "${e.name}" has no local header where the directory says; the zip is damaged`);
    }
    e.dataStart = e.local + 30 + u16(head, 26) + u16(head, 28);
    spans.push([e.local, e.dataStart + e.compSize + (e.flags & 8 ? 12 : 0), e.name]);
  }
  spans.sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < spans.length; i++) {
    if (spans[i][0] < spans[i - 1][1]) {
      throw new BundleError(`${source}: zip entries "${spans[i - 1][2]}" and "${spans[i][2]}" overlap; expected each ` +
        'entry stored once (an overlapping-entry zip bomb looks like this)');
    }
  }
  if (spans.some((s) => s[1] > directoryStart)) {
    throw new BundleError(`${source}: a zip entry runs past the zip's central directory; the zip is damaged`);
  }
}

/** Exactly `len` bytes of the reader from `pos`; fewer is a damaged zip. */
async function readAt(reader, pos, len, source) {
  const buf = pos >= 0 && pos + len <= reader.size ? await reader.read(pos, len) : null;
  if (!buf || buf.length !== len) throw new BundleError(`${source}: the zip is damaged (it ends before byte ${pos + len})`);
  return buf;
}

const u16 = (b, at) => b[at] | (b[at + 1] << 8);
const u32 = (b, at) => (b[at] | (b[at + 1] << 8) | (b[at + 2] << 16) | (b[at + 3] << 24)) >>> 0;

/** An entry name: UTF-8 when the zip's flag 0x800 says so, else one character per byte (latin-1). */
function decodeName(bytes, isUtf8) {
  if (isUtf8) return new TextDecoder('utf-8').decode(bytes);
  let out = '';
  for (const b of bytes) out += String.fromCharCode(b);
  return out;
}

const FEED_BYTES = 1 << 16;

/**
 * Raw deflate `raw` inflated with DecompressionStream('deflate-raw'), read chunk by chunk: the
 * Uint8Array when it fits `limit` bytes; null as soon as the output passes `limit` (the stream is
 * cancelled there, so a bomb costs at most about `limit` bytes); the Error when it does not inflate.
 */
async function inflateRaw(raw, limit) {
  const stream = new DecompressionStream('deflate-raw');
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  const feeding = (async () => {
    for (let p = 0; p < raw.length; p += FEED_BYTES) await writer.write(raw.subarray(p, p + FEED_BYTES));
    await writer.close();
  })();
  feeding.catch(() => {}); // a cancelled or failed stream rejects the pending writes; the reader reports it
  const chunks = [];
  let total = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > limit) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } catch (e) {
    return e instanceof Error ? e : new Error(String(e));
  }
  const out = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

/** A reader over bytes in memory (Uint8Array): what zipSource uses. */
function bytesReader(bytes) {
  return { size: bytes.length, read: async (pos, len) => bytes.subarray(pos, pos + len) };
}

export { ZipArchive, MAX_ZIP_ENTRIES, crc32, bytesReader };
