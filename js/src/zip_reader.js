'use strict';
/**
 * A bounded .zip reader for bundles, with the refusals of the Python loader (contract/bundle.py
 * _read_zip): only the central directory is read up front (at most 256 entries, each name once, no two
 * entries sharing bytes, none running into the directory); an entry is inflated only when asked, only
 * after its declared size fit the caller's limit, and never past that size. No zip64, no encryption,
 * stored or deflated entries only. Every refusal is a BundleError naming what was expected.
 */

const fs = require('fs');
const zlib = require('zlib');
const { BundleError } = require('./errors');

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
/** CRC-32 of `buf` (zlib.crc32 where this Node has it). */
function crc32(buf) {
  if (typeof zlib.crc32 === 'function') return zlib.crc32(buf) >>> 0;
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
  constructor(fd, source, entries) {
    this.fd = fd;
    this.source = source;
    this.entries = entries;
    this.byName = new Map(entries.map((e) => [e.name, e]));
  }

  refuse(msg) { return new BundleError(`${this.source}: ${msg}`); }

  /**
   * The central directory of the zip open as `fd` (a regular file of `size` bytes), checked; null when
   * the file is not a zip at all (no end-of-central-directory record).
   */
  static open(fd, size, source) {
    const refuse = (msg) => new BundleError(`${source}: ${msg}`);
    const tailLen = Math.min(size, EOCD_BYTES + MAX_COMMENT);
    if (tailLen < EOCD_BYTES) return null;
    const tail = readAt(fd, size - tailLen, tailLen, source);
    let p = tailLen - EOCD_BYTES;
    while (p >= 0 && tail.readUInt32LE(p) !== EOCD_SIG) p--; // the last end record, as Python's zipfile finds it
    if (p < 0) return null;
    const eocd = size - tailLen + p;
    if (tail.readUInt16LE(p + 4) !== 0 || tail.readUInt16LE(p + 6) !== 0) {
      throw refuse('the zip spans several disks; expected one plain .zip file');
    }
    const count = tail.readUInt16LE(p + 10);
    const cdSize = tail.readUInt32LE(p + 12);
    const cdOffset = tail.readUInt32LE(p + 16);
    const locator = eocd >= 20 ? readAt(fd, eocd - 20, 4, source).readUInt32LE(0) : 0;
    if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff || locator === ZIP64_LOCATOR_SIG) {
      throw refuse('zip64 archives are not supported; expected a plain zip (a bundle is far below 4 GiB)');
    }
    const concat = eocd - cdSize - cdOffset; // bytes prepended to the zip (a self-extractor stub)
    if (concat < 0) throw refuse('the zip is damaged (its central directory runs past its end record)');
    if (cdSize > MAX_DIRECTORY_BYTES) {
      throw refuse(`the zip's central directory is ${cdSize} bytes; a bundle's is at most ${MAX_DIRECTORY_BYTES}`);
    }
    const cd = readAt(fd, cdOffset + concat, cdSize, source);
    const entries = [];
    for (let q = 0; q < cdSize;) {
      if (q + 46 > cdSize || cd.readUInt32LE(q) !== CENTRAL_SIG) throw refuse('the zip is damaged (bad central directory)');
      const flags = cd.readUInt16LE(q + 8);
      const nameLen = cd.readUInt16LE(q + 28);
      const end = q + 46 + nameLen + cd.readUInt16LE(q + 30) + cd.readUInt16LE(q + 32);
      if (end > cdSize) throw refuse('the zip is damaged (bad central directory)');
      let name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', q + 46, q + 46 + nameLen);
      if (name.includes('\0')) name = name.slice(0, name.indexOf('\0')); // as Python's zipfile reads it
      const entry = {
        name, flags, method: cd.readUInt16LE(q + 10), crc: cd.readUInt32LE(q + 16),
        compSize: cd.readUInt32LE(q + 20), size: cd.readUInt32LE(q + 24), local: cd.readUInt32LE(q + 42) + concat,
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
    checkDisjoint(fd, entries, cdOffset + concat, source);
    return new ZipArchive(fd, source, entries);
  }

  /** The entry named `name` exactly (folder prefix included), or undefined. */
  get(name) { return this.byName.get(name); }

  /**
   * The bytes of `entry`, refused before reading if it is encrypted, compressed otherwise than stored
   * or deflated, or declares more than `limit` bytes; inflated with a bound of its declared size.
   */
  read(entry, limit) {
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
    const raw = readAt(this.fd, entry.dataStart, entry.compSize, this.source);
    let data;
    if (entry.method === STORED) {
      data = raw;
    } else {
      try {
        data = zlib.inflateRawSync(raw, { maxOutputLength: entry.size + 1 });
      } catch (e) {
        if (e.code === 'ERR_BUFFER_TOO_LARGE') {
          throw this.refuse(`${what} inflates to more than the ${entry.size} bytes it declares; the zip is damaged`);
        }
        throw this.refuse(`${what} does not inflate (${e.message}); the zip is damaged`);
      }
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
function checkDisjoint(fd, entries, directoryStart, source) {
  const spans = [];
  for (const e of entries) {
    const head = e.local + 30 <= directoryStart ? readAt(fd, e.local, 30, source) : null;
    if (!head || head.readUInt32LE(0) !== LOCAL_SIG) {
      throw new BundleError(`${source}: zip entry "${e.name}" has no local header where the directory says; the zip is damaged`);
    }
    e.dataStart = e.local + 30 + head.readUInt16LE(26) + head.readUInt16LE(28);
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

/** Exactly `len` bytes of `fd` from `pos`; a shorter file is a damaged zip. */
function readAt(fd, pos, len, source) {
  const buf = Buffer.alloc(len);
  let got = 0;
  while (got < len) {
    const n = fs.readSync(fd, buf, got, len - got, pos + got);
    if (n === 0) throw new BundleError(`${source}: the zip is damaged (it ends before byte ${pos + len})`);
    got += n;
  }
  return buf;
}

module.exports = { ZipArchive, MAX_ZIP_ENTRIES, crc32 };
