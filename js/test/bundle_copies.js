/**
 * Test helpers (no tests here): manifest text resealed after an edit, a listed file's size and sha256
 * rewritten for new bytes, and temporary copies of a bundle folder removed after use.
 */

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as em from '../src/index.js';

/** Manifest text with its integrity digest recomputed (what a careful forger or a buggy exporter writes). */
export const resealed = async (text) =>
  text.replace(/"manifest_sha256":\s*"[0-9a-f]+"/, `"manifest_sha256": "${await em.manifestDigest(text)}"`);

/** What the reader makes of manifest `text` once resealed. */
export const parseResealed = async (text) => em.parseManifest(new TextEncoder().encode(await resealed(text)), 'b');

/** Manifest `text` listing `bytes` (a Uint8Array) as file `name`: its size and sha256 rewritten, not resealed. */
export async function relisted(text, name, bytes) {
  const entry = new RegExp(`("${name.replace(/\./g, '\\.')}": \\{\\s*"bytes": )\\d+(,\\s*"sha256": ")[0-9a-f]+"`);
  return text.replace(entry, `$1${bytes.length}$2${await em.sha256Hex(bytes)}"`);
}

/** `use(dir)` on a temporary copy of the bundle folder `bundle`, removed afterwards; returns what `use` returns. */
export async function withBundleCopy(bundle, use, prefix = 'edgemeta-copy-') {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  try {
    for (const f of fs.readdirSync(bundle)) fs.copyFileSync(path.join(bundle, f), path.join(dir, f));
    return await use(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
