/**
 * edgemeta-js: the edgemeta device runtime for Node.js and the browser, one set of ES modules.
 *
 * Load, verify and personalise an edgemeta bundle with onnxruntime (the binding is passed in: no
 * module here imports onnxruntime-node or onnxruntime-web), and save / restore the private state in
 * the Python runtime's file format. Node-only helpers for files on disk: 'edgemeta-js/node' (node.js).
 *
 *   import * as ort from 'onnxruntime-web';
 *   import { FewShotClassifier, urlSource } from 'edgemeta-js';
 *   const clf = await FewShotClassifier.load(ort, urlSource('models/omniglot-conv4-proto/'));
 */

export { BundleError, InputError, StateError } from './errors.js';
export { FORMAT_NAME, FORMAT_VERSIONS, MAX_BUNDLE_BYTES, V3_SECTIONS, writerVersion } from './manifest_schema.js';
export { pyFloatRepr, pyJsonString, compareCodePoints, parsePyJson } from './canonical_json.js';
export {
  MANIFEST, MAX_MANIFEST_BYTES, canonicalManifest, manifestDigest, parseManifest, checkFile, verify, readBundle,
} from './bundle_reader.js';
export { zipSource, urlSource, memorySource } from './sources.js';
export { ZipArchive, MAX_ZIP_ENTRIES, crc32, bytesReader } from './zip_reader.js';
export {
  INKS, MIN_SIDE, MAX_ASPECT, MAX_PIXELS, preprocess, preprocessColour, centreCrop, boxBins, nearestIndices, unitGrey, meanFloat64,
} from './preprocess.js';
export { Bundle, sessionOptions } from './bundle.js';
export { FewShotClassifier, uniqueSorted } from './classifier.js';
export { bounded } from './refine.js';
export { sha256Hex, toHex, fromHex } from './bytes.js';
export { RegressionBundle, FewShotRegressor } from './regressor.js';
export { checkVectors, FLOAT32_MAX, MAX_ROWS } from './vectors.js';
export { deriveStateKey, encodeState, decodeState, readBody, PBKDF2_ITERATIONS } from './state.js';
