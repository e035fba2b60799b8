/**
 * Where a bundle's bytes come from, platform-neutral (see bundle_reader.js for the source contract):
 *
 *   zipSource(bytes)              a bundle .zip held in memory (a Uint8Array, e.g. a downloaded or picked file)
 *   urlSource(baseUrl, {fetch})   a bundle folder served over HTTP(S): manifest.json, then each listed file
 *
 * node.js adds folderSource(path) and zipFileSource(path) for files on disk.
 */

import { BundleError } from './errors.js';
import { asBytes } from './bytes.js';
import { MANIFEST, MAX_MANIFEST_BYTES } from './bundle_reader.js';
import { plainFileName } from './manifest_schema.js';
import { ZipArchive, bytesReader } from './zip_reader.js';

/** The folder prefix of manifest.json in a zip: "" (flat) or "<folder>/" (one level, as `zip -r b.zip b/`). */
function zipRoot(zip, source) {
  const found = zip.entries.filter((e) => !e.isDir && e.name.split('/').pop() === MANIFEST).map((e) => e.name);
  if (!found.length) throw new BundleError(`${source}: no ${MANIFEST}; is this an edgemeta bundle?`);
  if (found.length > 1) {
    throw new BundleError(`${source}: the zip holds several manifests ${JSON.stringify(found.slice(0, 4))}; expected one bundle per zip`);
  }
  const root = found[0].slice(0, -MANIFEST.length);
  if (root && !plainFileName(root.slice(0, -1))) {
    throw new BundleError(`${source}: "${found[0]}": expected ${MANIFEST} at the top of the zip or in one folder ` +
      '(nested folders are not supported)');
  }
  return root;
}

/** `op()`, any error but a BundleError reported as a damaged zip (contract/bundle.py does the same). */
async function asZipError(source, op) {
  try {
    return await op();
  } catch (e) {
    if (e instanceof BundleError) throw e;
    throw new BundleError(`${source}: the zip is damaged (${e.message})`);
  }
}

/**
 * A bundle .zip as a source (contract/bundle.py _read_zip): only the central directory is read up
 * front; each listed entry's declared size is compared with the manifest before it is inflated, and it
 * is inflated only up to that size; unlisted entries are never inflated. `data`: a Uint8Array /
 * ArrayBuffer of the whole zip, or a reader { size, read(pos, len) -> Promise<Uint8Array> }.
 */
function zipSource(data, { name = 'bundle.zip' } = {}) {
  let reader = typeof data?.read === 'function' && Number.isInteger(data.size) ? data : null;
  if (!reader) {
    try {
      reader = bytesReader(asBytes(data, 'a zip bundle'));
    } catch {
      throw new BundleError(`${name}: a zip bundle must be bytes (a Uint8Array or ArrayBuffer) or a reader { size, read(pos, len) }, ` +
        `got ${data === null ? 'null' : typeof data}`);
    }
  }
  let opened = null;
  const open = () => {
    opened ??= asZipError(name, async () => {
      const zip = await ZipArchive.open(reader, name);
      if (!zip) throw new BundleError(`${name} is neither a bundle directory nor a .zip bundle`);
      return { zip, root: zipRoot(zip, name) };
    });
    return opened;
  };
  return {
    name,
    async readManifest() {
      const { zip, root } = await open();
      return asZipError(name, () => zip.read(zip.get(root + MANIFEST), MAX_MANIFEST_BYTES));
    },
    async readFile(file, bytes) {
      const { zip, root } = await open();
      const entry = zip.get(root + file);
      if (!entry || entry.isDir) return null;
      if (entry.size !== bytes) {
        throw new BundleError(`${name}: ${file} is ${entry.size} bytes, the manifest says ${bytes} ` +
          '(truncated or replaced); refused without inflating it');
      }
      return asZipError(name, () => zip.read(entry, bytes));
    },
  };
}

/**
 * At most `limit + 1` bytes of a fetch Response body, read as a stream and cancelled as soon as it
 * passes `limit` (one byte more shows a file larger than expected; the size check then refuses it).
 */
async function boundedBody(response, limit) {
  if (!response.body || typeof response.body.getReader !== 'function') {
    const all = new Uint8Array(await response.arrayBuffer());
    return all.subarray(0, limit + 1);
  }
  const reader = response.body.getReader();
  const chunks = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    total += value.length;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      break;
    }
  }
  const out = new Uint8Array(Math.min(total, limit + 1));
  let at = 0;
  for (const c of chunks) {
    const n = Math.min(c.length, out.length - at);
    out.set(c.subarray(0, n), at);
    at += n;
  }
  return out;
}

/**
 * A bundle folder served over HTTP(S) as a source: `baseUrl` is the folder (manifest.json and the
 * listed files are fetched relative to it, e.g. 'models/omniglot-conv4-proto/'); `fetch` defaults to
 * globalThis.fetch. Each body is streamed and cut after its limit (the manifest's listed size, 1 MiB
 * for manifest.json); an HTTP error or a failed request is a BundleError naming the file.
 */
function urlSource(baseUrl, { fetch = globalThis.fetch, name = String(baseUrl) } = {}) {
  if (typeof fetch !== 'function') throw new TypeError('urlSource needs a fetch function (globalThis.fetch or { fetch })');
  const text = String(baseUrl);
  const folder = text.endsWith('/') ? text : `${text}/`;
  const here = globalThis.location?.href;
  const base = here ? new URL(folder, here) : new URL(folder);
  const get = async (file, limit) => {
    const url = new URL(file, base).href;
    let response;
    try {
      response = await fetch(url);
    } catch (e) {
      throw new BundleError(`${name}: cannot fetch ${file} from ${url} (${e.message}); expected the bundle's file`);
    }
    if (!response.ok) {
      throw new BundleError(`${name}: fetching ${file} from ${url} answered HTTP ${response.status}` +
        `${response.statusText ? ` ${response.statusText}` : ''}; expected the bundle's file`);
    }
    const declared = Number(response.headers?.get?.('content-length') ?? NaN);
    if (Number.isFinite(declared) && declared > limit) {
      await response.body?.cancel?.().catch(() => {});
      throw new BundleError(`${name}: ${file} is ${declared} bytes (its Content-Length), more than the ${limit} expected; ` +
        'refused without downloading it');
    }
    return boundedBody(response, limit);
  };
  return {
    name,
    concurrent: true,     // readBundle fetches the listed files at once (one round trip, not one per file)
    readManifest: () => get(MANIFEST, MAX_MANIFEST_BYTES),
    readFile: (file, bytes) => get(file, bytes),
  };
}

/** A bundle already in memory (Map or object name -> bytes, manifest.json included) as a source. */
function memorySource(files, { name = 'bundle' } = {}) {
  const map = files instanceof Map ? files : new Map(Object.entries(files));
  const read = (file, limit) => (map.has(file) ? asBytes(map.get(file), file).subarray(0, limit + 1) : null);
  return {
    name,
    async readManifest() {
      const raw = read(MANIFEST, MAX_MANIFEST_BYTES);
      if (raw === null) throw new BundleError(`${name}: no ${MANIFEST}; is this an edgemeta bundle?`);
      return raw;
    },
    readFile: async (file, bytes) => read(file, bytes),
  };
}

export { zipSource, urlSource, memorySource, zipRoot };
