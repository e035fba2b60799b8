/** Byte helpers shared by the runtime, platform-neutral: Uint8Array only (no Buffer), WebCrypto's sha256. */

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));

/** Lowercase hex of `bytes` (Uint8Array). */
export const toHex = (bytes) => {
  let out = '';
  for (let i = 0; i < bytes.length; i++) out += HEX[bytes[i]];
  return out;
};

/** `hex` (an even number of hex digits) -> Uint8Array, or null when it is not hex. */
export function fromHex(hex) {
  if (typeof hex !== 'string' || hex.length % 2 || !/^[0-9a-fA-F]*$/.test(hex)) return null;
  return Uint8Array.from({ length: hex.length / 2 }, (_, i) => parseInt(hex.slice(2 * i, 2 * i + 2), 16));
}

/** WebCrypto (globalThis.crypto.subtle: Node >= 20, browsers in secure contexts). */
export function subtle() {
  const s = globalThis.crypto && globalThis.crypto.subtle;
  if (!s) throw new Error('WebCrypto (crypto.subtle) is not available here; Node >= 20 or a browser page served over https / localhost is needed');
  return s;
}

/** sha256 of `bytes` (Uint8Array) as lowercase hex. */
export async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await subtle().digest('SHA-256', bytes)));
}

const encoder = new TextEncoder();
/** UTF-8 bytes of a string. */
export const utf8 = (text) => encoder.encode(text);

/** The concatenation of Uint8Arrays. */
export function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** A Uint8Array view of bytes given as Uint8Array, ArrayBuffer or any ArrayBufferView (a Node Buffer too). */
export function asBytes(data, what = 'bytes') {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError(`${what} must be a Uint8Array or ArrayBuffer`);
}
