'use strict';
/** The errors edgemeta.js throws (the same two kinds as the Python runtime's BundleError / InputError). */

/** A bundle is missing, malformed, of another format version, or altered. */
class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

/** Images or labels are not what the bundle expects; the message says what was. */
class InputError extends Error {
  constructor(message) { super(message); this.name = 'InputError'; }
}

module.exports = { BundleError, InputError };
