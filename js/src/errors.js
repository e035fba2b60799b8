/** The errors the JavaScript runtime throws (the Python runtime's BundleError / InputError / StateError). */

/** A bundle is missing, malformed, of another format version, or altered. */
export class BundleError extends Error {
  constructor(message) { super(message); this.name = 'BundleError'; }
}

/** Images or labels are not what the bundle expects; the message says what was. */
export class InputError extends Error {
  constructor(message) { super(message); this.name = 'InputError'; }
}

/** A private state file is missing, damaged, altered, encrypted with another key or of another bundle. */
export class StateError extends Error {
  constructor(message) { super(message); this.name = 'StateError'; }
}
