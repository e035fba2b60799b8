/**
 * Node.js only: bundles on disk. The one module of the runtime that imports node:fs / node:path.
 *
 *   import * as ort from 'onnxruntime-node';
 *   import { FewShotClassifier } from 'edgemeta-js';
 *   import { sourceFromPath } from 'edgemeta-js/node';
 *   const clf = await FewShotClassifier.load(ort, sourceFromPath('models/omniglot-conv4-proto'));
 *
 * folderSource(path): a bundle folder; regular files only (a symbolic link or anything else is refused
 * unread), manifest.json first, then only the files it lists, each read to at most its listed size + 1.
 * zipFileSource(path): a bundle .zip on disk, read where needed (central directory, listed entries).
 * sourceFromPath(path): whichever of the two `path` is (checked on first read).
 */

import fs from 'node:fs';
import path from 'node:path';

import { BundleError } from './errors.js';
import { MANIFEST, MAX_MANIFEST_BYTES, readBundle } from './bundle_reader.js';
import { zipSource } from './sources.js';
import { Bundle } from './bundle.js';
import { FewShotClassifier } from './classifier.js';

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
    const now = fs.fstatSync(fd);
    if (!now.isFile()) throw new BundleError(`${source}: ${name} is not a regular file; a bundle's files must be regular files`);
    const buf = new Uint8Array(Math.min(limit + 1, Math.max(now.size, 0) + 1));
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

/** A bundle folder on disk as a source (see the top of this file). */
function folderSource(folder, { name = String(folder) } = {}) {
  return {
    name,
    async readManifest() {
      const raw = readListedFile(folder, MANIFEST, MAX_MANIFEST_BYTES, name);
      if (raw === null) throw new BundleError(`${name}: no ${MANIFEST}; is this an edgemeta bundle?`);
      return raw;
    },
    readFile: async (file, bytes) => readListedFile(folder, file, bytes, name),
  };
}

/**
 * A reader { size, read(pos, len) } over the regular file `file` (opened without blocking for each
 * read, so a FIFO or device is refused, never waited on); a zip .zip file is read only where needed.
 */
function fileReader(file, source) {
  const open = () => {
    let fd;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK || 0));
    } catch (e) {
      throw new BundleError(`cannot read ${source} (${e.code}); expected a bundle directory or .zip`);
    }
    if (!fs.fstatSync(fd).isFile()) {
      fs.closeSync(fd);
      throw new BundleError(`${source} is neither a bundle directory nor a .zip bundle`);
    }
    return fd;
  };
  const fd = open();
  const { size } = fs.fstatSync(fd);
  fs.closeSync(fd);
  return {
    size,
    async read(pos, len) {
      const at = open();
      try {
        const buf = new Uint8Array(len);
        let got = 0;
        while (got < len) {
          const n = fs.readSync(at, buf, got, len - got, pos + got);
          if (n === 0) break;
          got += n;
        }
        return buf.subarray(0, got);
      } finally {
        fs.closeSync(at);
      }
    },
  };
}

/** A bundle .zip on disk as a source: zipSource over the file, read where needed. */
function zipFileSource(file, { name = String(file) } = {}) {
  return zipSource(fileReader(file, name), { name });
}

/**
 * The bundle at `bundlePath` (a folder or a .zip) as a source; what it is is checked on first read
 * (BundleError "bundle not found" when there is nothing there).
 */
function sourceFromPath(bundlePath) {
  const name = String(bundlePath);
  let inner = null;
  const resolve = () => {
    if (inner) return inner;
    let st;
    try { st = fs.statSync(bundlePath); } catch (e) {
      throw new BundleError(`bundle not found: ${name} (expected a bundle directory or .zip)`);
    }
    inner = st.isDirectory() ? folderSource(bundlePath, { name }) : zipFileSource(bundlePath, { name });
    return inner;
  };
  return {
    name,
    readManifest: async () => resolve().readManifest(),
    readFile: async (file, bytes) => resolve().readFile(file, bytes),
  };
}

/** Read and verify the bundle at `bundlePath`: { manifest, files }. */
const readBundleAt = (bundlePath) => readBundle(sourceFromPath(bundlePath));

/** FewShotClassifier.load(ort, sourceFromPath(bundlePath), options): the Node convenience. */
const loadFromPath = (ort, bundlePath, options = {}) => FewShotClassifier.load(ort, sourceFromPath(bundlePath), options);

/** Bundle.load over a path. */
const loadBundleFromPath = (ort, bundlePath, options = {}) => Bundle.load(ort, sourceFromPath(bundlePath), options);

export { folderSource, zipFileSource, sourceFromPath, fileReader, readBundleAt, loadFromPath, loadBundleFromPath };
