// The private state in IndexedDB: one record per bundle, the runtime's AES-256-GCM state bytes with
// the PBKDF2 salt and iteration count beside them. Never a raw sample: only what saveState writes.

const DB = 'edgemeta-web';
const STORE = 'states';
export const RECORD_FORMAT = 'edgemeta-web-state-1';

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function run(mode, use) {
  const db = await open();
  try {
    return await new Promise((resolve, reject) => {
      const tx = db.transaction(STORE, mode);
      const req = use(tx.objectStore(STORE));
      tx.oncomplete = () => resolve(req.result);
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error);
    });
  } finally {
    db.close();
  }
}

/**
 * Store the encrypted state of `bundle`.
 * @param {string} bundle the bundle path (the record's key)
 * @param {{salt: Uint8Array, iterations: number, state: Uint8Array}} sealed
 */
export function putState(bundle, { salt, iterations, state }) {
  const record = { format: RECORD_FORMAT, bundle, kdf: 'PBKDF2-SHA256', salt, iterations, state, savedAt: new Date().toISOString() };
  return run('readwrite', (s) => s.put(record, bundle));
}

/** Most PBKDF2 iterations a stored record may ask for (a damaged count must not hang the tab). */
export const MAX_ITERATIONS = 10000000;

/** The stored record of `bundle` ({format, bundle, kdf, salt, iterations, state, savedAt}), as stored, or null. */
export async function getState(bundle) {
  const record = await run('readonly', (s) => s.get(bundle));
  return record === undefined ? null : record;
}

/**
 * Why `record` is not one putState wrote (a sentence), or null when it is; what the state bytes
 * hold, loadState checks.
 */
export function recordProblem(record) {
  const ok = record !== null && typeof record === 'object' && record.format === RECORD_FORMAT && record.kdf === 'PBKDF2-SHA256'
    && record.salt instanceof Uint8Array && record.salt.length >= 16 && record.salt.length <= 64
    && Number.isInteger(record.iterations) && record.iterations >= 1 && record.iterations <= MAX_ITERATIONS
    && record.state instanceof Uint8Array;
  return ok ? null : `the saved record is damaged: expected {format: '${RECORD_FORMAT}', kdf: 'PBKDF2-SHA256', ` +
    `salt: 16-64 bytes, iterations: 1..${MAX_ITERATIONS}, state: bytes}`;
}

/** Delete the stored record of `bundle`. */
export function deleteState(bundle) {
  return run('readwrite', (s) => s.delete(bundle));
}
