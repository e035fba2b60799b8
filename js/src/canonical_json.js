/**
 * Canonical JSON, byte for byte what Python's
 *   json.dumps(json.loads(text) minus "integrity", sort_keys=True, separators=(",", ":"), ensure_ascii=True)
 * writes. JSON.parse/JSON.stringify cannot do this: they lose the int/float distinction ("1.0" and
 * "1" are different to Python), format floats differently (1e-05 vs 0.00001, 1.0 vs 1), sort keys by
 * UTF-16 unit instead of code point and do not escape non-ASCII. So: a small parser that keeps the
 * number tokens, and a writer that follows CPython's rules. Platform-neutral (no Node module).
 */

const MAX_JSON_DEPTH = 32;
const MAX_NUMBER_CHARS = 40; // digits of an integer / characters of a float literal

/** Python's repr() of a float (shortest round-trip digits; what json.dumps writes for a float). */
function pyFloatRepr(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (x === Infinity) return 'Infinity';
  if (x === -Infinity) return '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const sign = x < 0 ? '-' : '';
  // String(x) has the shortest round-trip digits too (ECMA-262 Number::toString); only the layout differs.
  const [mant, expPart] = String(Math.abs(x)).split('e');
  const [intPart, frac = ''] = mant.split('.');
  let digits = intPart + frac;
  let decpt = intPart.length + (expPart ? parseInt(expPart, 10) : 0); // value = 0.DIGITS * 10^decpt
  const lead = digits.length - digits.replace(/^0+/, '').length;
  digits = digits.slice(lead).replace(/0+$/, '');
  decpt -= lead;
  if (decpt > -4 && decpt <= 16) { // CPython float_repr_style 'short': fixed notation in this range
    if (decpt <= 0) return `${sign}0.${'0'.repeat(-decpt)}${digits}`;
    if (decpt >= digits.length) return `${sign}${digits}${'0'.repeat(decpt - digits.length)}.0`;
    return `${sign}${digits.slice(0, decpt)}.${digits.slice(decpt)}`;
  }
  const e = decpt - 1;
  const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
  return `${sign}${m}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
}

const SHORT_ESCAPES = { 0x22: '\\"', 0x5c: '\\\\', 0x08: '\\b', 0x0c: '\\f', 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t' };

/** A string as json.dumps(ensure_ascii=True) writes it: everything outside ' '..'~' as \uXXXX (lowercase). */
function pyJsonString(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i); // UTF-16 units: astral characters come out as surrogate pairs, like Python
    if (SHORT_ESCAPES[c] !== undefined) out += SHORT_ESCAPES[c];
    else if (c < 0x20 || c > 0x7e) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

/** Compare strings by Unicode code point (Python's str order and numpy.unique's), not UTF-16 unit. */
function compareCodePoints(a, b) {
  const A = Array.from(a, (ch) => ch.codePointAt(0));
  const B = Array.from(b, (ch) => ch.codePointAt(0));
  const n = Math.min(A.length, B.length);
  for (let i = 0; i < n; i++) if (A[i] !== B[i]) return A[i] < B[i] ? -1 : 1;
  return A.length - B.length;
}

/**
 * Parse JSON text the way Python's json.loads does (NaN / Infinity accepted, last duplicate key
 * wins, raw control characters in strings refused) into a tree that remembers int vs float.
 * `strict`: also refuse what the Python reader's loads_strict refuses in a manifest (duplicate keys,
 * NaN / Infinity, number literals over `maxNumberChars` (40) characters, floats that overflow, nesting over
 * `maxDepth` (32) levels), with a StrictJsonError.
 */
function parsePyJson(text, { strict = false, maxDepth = MAX_JSON_DEPTH, maxNumberChars = MAX_NUMBER_CHARS } = {}) {
  let i = 0;
  let depth = 0;
  const fail = (what) => { throw new SyntaxError(`${what} at character ${i}`); };
  const refuse = (what) => { if (strict) throw new StrictJsonError(what); };
  const enter = () => { depth += 1; if (depth > maxDepth) refuse(`nests deeper than ${maxDepth} levels; expected a plain document`); };
  const ws = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const NUMBER = /-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?/y;

  function value() {
    ws();
    const c = text[i];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return { t: 'str', v: string() };
    for (const [lit, node] of [['true', { t: 'lit', v: 'true' }], ['false', { t: 'lit', v: 'false' }],
      ['null', { t: 'lit', v: 'null' }], ['NaN', { t: 'float', v: NaN }],
      ['Infinity', { t: 'float', v: Infinity }], ['-Infinity', { t: 'float', v: -Infinity }]]) {
      if (text.startsWith(lit, i)) {
        if (node.t === 'float') refuse(`is not strict JSON: the constant ${lit} (JSON has no NaN or Infinity; expected a finite number)`);
        i += lit.length;
        return node;
      }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail('expecting value');
    i += m[0].length;
    const isInt = m[1] === undefined && m[2] === undefined;
    const chars = isInt ? m[0].replace('-', '').length : m[0].length;
    if (chars > maxNumberChars) refuse(`is not strict JSON: a number literal of ${chars} characters (expected at most ${maxNumberChars})`);
    if (isInt) return { t: 'int', v: m[0] };
    if (!Number.isFinite(Number(m[0]))) refuse(`is not strict JSON: the number ${m[0]} overflows a float (expected a finite number)`);
    return { t: 'float', v: Number(m[0]) };
  }

  function string() {
    i++; // opening quote
    let out = '';
    for (;;) {
      if (i >= text.length) fail('unterminated string');
      const c = text.charCodeAt(i);
      if (c === 0x22) { i++; return out; }
      if (c < 0x20) fail('invalid control character in string');
      if (c !== 0x5c) { out += text[i++]; continue; }
      const e = text[i + 1];
      const simple = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' }[e];
      if (simple !== undefined) { out += simple; i += 2; continue; }
      if (e !== 'u' || !/^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) fail('invalid escape');
      out += String.fromCharCode(parseInt(text.slice(i + 2, i + 6), 16));
      i += 6;
    }
  }

  function array() {
    i++;
    enter();
    const items = [];
    ws();
    if (text[i] === ']') { i++; depth -= 1; return { t: 'arr', v: items }; }
    for (;;) {
      items.push(value());
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === ']') { i++; depth -= 1; return { t: 'arr', v: items }; }
      fail("expecting ',' delimiter");
    }
  }

  function object() {
    i++;
    enter();
    const entries = new Map();
    ws();
    if (text[i] === '}') { i++; depth -= 1; return { t: 'obj', v: entries }; }
    for (;;) {
      ws();
      if (text[i] !== '"') fail('expecting property name enclosed in double quotes');
      const key = string();
      ws();
      if (text[i] !== ':') fail("expecting ':' delimiter");
      i++;
      if (entries.has(key)) refuse(`is not strict JSON: duplicate key ${JSON.stringify(key)} in one object (expected each key once)`);
      entries.set(key, value()); // a later duplicate replaces the value, as in a Python dict
      ws();
      if (text[i] === ',') { i++; continue; }
      if (text[i] === '}') { i++; depth -= 1; return { t: 'obj', v: entries }; }
      fail("expecting ',' delimiter");
    }
  }

  const tree = value();
  ws();
  if (i !== text.length) fail('extra data');
  return tree;
}

/** What a strict parse refuses (the message follows the file name). */
class StrictJsonError extends Error {}

/** A parse tree as canonical JSON text (sorted keys, no spaces, Python's number and string forms). */
function canonicalTree(node) {
  switch (node.t) {
    case 'obj': {
      const keys = [...node.v.keys()].sort(compareCodePoints);
      return `{${keys.map((k) => `${pyJsonString(k)}:${canonicalTree(node.v.get(k))}`).join(',')}}`;
    }
    case 'arr': return `[${node.v.map(canonicalTree).join(',')}]`;
    case 'str': return pyJsonString(node.v);
    case 'int': return BigInt(node.v).toString(); // Python int: arbitrary precision, "-0" -> "0"
    case 'float': return pyFloatRepr(node.v);
    default: return node.v; // true / false / null
  }
}

/** A parse tree as plain JavaScript values (integers as Numbers, objects with own properties). */
function treeValue(node) {
  switch (node.t) {
    case 'obj': {
      const out = {};
      for (const [k, v] of node.v) Object.defineProperty(out, k, { value: treeValue(v), enumerable: true, writable: true, configurable: true });
      return out;
    }
    case 'arr': return node.v.map(treeValue);
    case 'str': return node.v;
    case 'int': return Number(node.v);
    case 'float': return node.v;
    default: return JSON.parse(node.v);
  }
}

/** A string as json.dumps(ensure_ascii=False) writes it: only '"', '\\' and control characters escaped. */
function pyJsonStringUnicode(s) {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (SHORT_ESCAPES[c] !== undefined) out += SHORT_ESCAPES[c];
    else if (c < 0x20) out += '\\u' + c.toString(16).padStart(4, '0');
    else out += s[i];
  }
  return out + '"';
}

/**
 * Plain values (null, booleans, integers, BigInts, strings, Arrays, objects) as Python's
 * json.dumps(value, sort_keys=True[, ensure_ascii=False]) writes them: ", " and ": " separators,
 * keys in code-point order. What the state file's header and index are (state.js).
 */
function pyJsonDumps(value, { ensureAscii = true } = {}) {
  const str = ensureAscii ? pyJsonString : pyJsonStringUnicode;
  const dump = (v) => {
    if (v === null) return 'null';
    if (typeof v === 'boolean') return v ? 'true' : 'false';
    if (typeof v === 'bigint') return v.toString();
    if (typeof v === 'number') return Number.isInteger(v) ? BigInt(v).toString() : pyFloatRepr(v);
    if (typeof v === 'string') return str(v);
    if (Array.isArray(v)) return `[${v.map(dump).join(', ')}]`;
    const keys = Object.keys(v).sort(compareCodePoints);
    return `{${keys.map((k) => `${str(k)}: ${dump(v[k])}`).join(', ')}}`;
  };
  return dump(value);
}

export {
  pyFloatRepr, pyJsonString, pyJsonDumps, compareCodePoints, parsePyJson, StrictJsonError, canonicalTree, treeValue,
};
