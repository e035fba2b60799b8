'use strict';
/** The errors the Node runtime throws (the Python runtime's BundleError / InputError / StateError). */

/** A bundle is missing, malformed, of another format version, or altered. */
class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

/** Images or labels are not what the bundle expects; the message says what was. */
class InputError extends Error {
  constructor(message) { super(message); this.name = 'InputError'; }
}

/** A private state file is missing, damaged, altered, encrypted with another key or of another bundle. */
class StateError extends Error {
  constructor(message) { super(message); this.name = 'StateError'; }
}

module.exports = { BundleError, InputError, StateError };
