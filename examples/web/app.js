// The page: pick a shipped bundle, draw glyphs (or grab webcam frames), teach named classes from a
// few samples, see live predictions, forget a class, keep the private state encrypted in IndexedDB.
// Everything runs in this tab: onnxruntime-web (wasm) from this origin, the bundle from this origin.
//
// window.__edgemeta exposes what the page did, for its tests and tools/web_bench.py: `ready`,
// `error`, `timings` (ms since navigation), `last` (the last prediction with the exact pixels it was
// computed from), `idle()` (resolves when no work is queued) and `clf` (the classifier).

import { DrawingPad } from './pad.js';
import { startCamera, stopCamera, grabFrame } from './camera.js';
import { putState, getState, deleteState, recordProblem } from './state_store.js';

const params = new URLSearchParams(location.search);
const THREADS = Math.min(16, Math.max(1, Number.parseInt(params.get('threads') || '1', 10) || 1));
const ORT_DIST = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;

// Both fetched at once, while the bundle list loads; a failed import is shown with its fix by main().
const ortModule = import(`${ORT_DIST}ort.wasm.min.mjs`).catch(() => {
  throw new Error('onnxruntime-web is missing: run (cd examples/web && npm ci --ignore-scripts)');
});
const runtimeModule = import('../../js/src/index.js').catch((err) => {
  throw new Error(`the runtime (js/src) did not load (${err.message}): serve the repository root, e.g. python tools/serve_web.py`);
});
ortModule.catch(() => {});
runtimeModule.catch(() => {});

const $ = (id) => document.getElementById(id);
const ui = {
  bundle: $('bundle'), status: $('status'), pad: $('pad'), clear: $('clear'), modeDraw: $('mode-draw'),
  modeCamera: $('mode-camera'), drawBox: $('draw-box'), cameraBox: $('camera-box'), camera: $('camera'),
  cameraStart: $('camera-start'), label: $('label'), addSample: $('add-sample'), learn: $('learn'),
  discard: $('discard'), pending: $('pending'), classes: $('classes'), prediction: $('prediction'),
  probs: $('probs').tBodies[0], reject: $('reject'), passphrase: $('passphrase'), save: $('save'),
  unlock: $('unlock'), erase: $('erase'), stateMessage: $('state-message'), stateForm: $('state-form'),
};

const page = {
  ready: false, error: null, timings: {}, strokes: 0, last: null, clf: null, bundlePath: null, threads: THREADS,
  idle: async () => {
    for (;;) {
      const seen = queue;
      await seen;
      if (predictTimer !== null) await new Promise((r) => setTimeout(r, PREDICT_DELAY_MS));
      else if (seen === queue) return;
    }
  },
};
window.__edgemeta = page;

let runtime = null;       // the js/src module
let clf = null;           // its FewShotClassifier for the chosen bundle
let mode = 'draw';
let pending = [];         // samples waiting for "Learn class": in memory only, dropped once learned
let queue = Promise.resolve();  // classifier calls run one at a time, in order
let predictTimer = null;
let cameraTimer = null;
const PREDICT_DELAY_MS = 40;
const CAMERA_EVERY_MS = 300;
const scratch = document.createElement('canvas');
const pad = new DrawingPad(ui.pad, () => { page.strokes += 1; schedulePredict(); });

/** Run `fn` after every earlier classifier call; errors are shown, not thrown. */
function serial(fn) {
  const run = queue.then(fn).catch(showError);
  queue = run.then(() => undefined);
  return run;
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle('error', isError);
}

function setStateMessage(text, isError = false) {
  ui.stateMessage.textContent = text;
  ui.stateMessage.classList.toggle('error', isError);
}

function showError(err) {
  const name = err && err.name ? err.name : 'Error';
  setStatus(`${name}: ${err && err.message ? err.message : err}`, true);
  console.error(err);
}

/** The current sample: the pad's pixels (if inked) or a camera frame; null if there is none. */
function currentSample() {
  if (mode === 'draw') return pad.inked ? pad.pixels() : null;
  return grabFrame(ui.camera, scratch);
}

function heldClasses() {
  return clf && clf.classes ? Array.from(clf.classes, String) : [];
}

function schedulePredict() {
  if (predictTimer !== null) clearTimeout(predictTimer);
  predictTimer = setTimeout(() => { predictTimer = null; serial(predictNow); }, PREDICT_DELAY_MS);
}

async function predictNow() {
  const sample = currentSample();
  if (!clf || !sample) { renderPrediction(null); return; }
  if (heldClasses().length < 2) { renderPrediction({ message: 'teach at least two classes' }); return; }
  const rejectUnknown = ui.reject.checked;
  const [label] = await clf.predict([sample], { rejectUnknown });
  const [probs] = await clf.predictProba([sample]);
  const classes = heldClasses();
  page.last = { pixels: sample, label, probs: Array.from(probs), classes, rejectUnknown, strokes: page.strokes };
  if (page.timings.firstPrediction === undefined) page.timings.firstPrediction = performance.now();
  renderPrediction(page.last);
}

function renderPrediction(result) {
  ui.probs.replaceChildren();
  ui.prediction.classList.remove('unknown');
  if (!result) { ui.prediction.textContent = '—'; return; }
  if (result.message) { ui.prediction.textContent = result.message; return; }
  const unknown = !result.classes.includes(String(result.label));
  ui.prediction.textContent = unknown ? 'unknown' : String(result.label);
  ui.prediction.classList.toggle('unknown', unknown);
  const order = result.classes.map((c, j) => [c, result.probs[j]]).sort((a, b) => b[1] - a[1]);
  for (const [c, p] of order) {
    const tr = ui.probs.insertRow();
    tr.insertCell().textContent = c;
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const cell = tr.insertCell();
    cell.className = 'bar-cell';
    cell.append(bar);
    tr.insertCell().textContent = p.toFixed(3);
  }
}

function renderClasses() {
  ui.classes.replaceChildren();
  const counts = clf ? clf.classCounts() : new Map();   // label -> samples held, also before there is a head
  for (const [name, n] of counts) {
    const li = document.createElement('li');
    li.dataset.label = String(name);
    const text = document.createElement('span');
    text.textContent = `${name} (${n} sample${n === 1 ? '' : 's'})`;
    const forget = document.createElement('button');
    forget.type = 'button';
    forget.textContent = 'Forget';
    forget.addEventListener('click', () => serial(async () => {
      await clf.forget(name);
      renderClasses();
      setStatus(`forgot "${name}": its embeddings are gone from memory; save to erase them from storage too`);
      await predictNow();
    }));
    li.append(text, forget);
    ui.classes.append(li);
  }
  if (!counts.size) ui.classes.textContent = 'none yet';
}

function renderPending() {
  ui.pending.replaceChildren();
  for (const s of pending) {
    const c = document.createElement('canvas');
    c.width = s.width;
    c.height = s.height;
    c.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(s.data), s.width, s.height), 0, 0);
    ui.pending.append(c);
  }
  ui.learn.disabled = ui.discard.disabled = pending.length === 0;
}

function setMode(next) {
  mode = next;
  ui.modeDraw.setAttribute('aria-pressed', String(mode === 'draw'));
  ui.modeCamera.setAttribute('aria-pressed', String(mode === 'camera'));
  ui.drawBox.hidden = mode !== 'draw';
  ui.cameraBox.hidden = mode !== 'camera';
  if (mode === 'draw') cameraOff();
  schedulePredict();
}

async function cameraOn() {
  await startCamera(ui.camera);
  if (cameraTimer === null) cameraTimer = setInterval(schedulePredict, CAMERA_EVERY_MS);
  ui.cameraStart.textContent = 'Stop camera';
  setStatus('camera on: frames stay in this tab');
}

function cameraOff() {
  if (cameraTimer !== null) clearInterval(cameraTimer);
  cameraTimer = null;
  stopCamera(ui.camera);
  ui.cameraStart.textContent = 'Start camera';
}

function addSample() {
  const s = currentSample();
  if (!s) { setStatus(mode === 'draw' ? 'draw something first' : 'start the camera first', true); return; }
  pending.push(s);
  renderPending();
  if (mode === 'draw') { pad.clear(); renderPrediction(null); }
  setStatus(`${pending.length} sample(s) ready: name the class and press "Learn class"`);
}

async function learnClass() {
  const label = ui.label.value.trim();
  if (!label) { setStatus('name the class first', true); return; }
  if (label.toLowerCase() === 'unknown') { setStatus('"unknown" is the name of the rejected answer; pick another name', true); return; }
  const samples = pending;
  await clf.partialFit(samples, samples.map(() => label));
  pending = [];
  renderPending();
  renderClasses();
  ui.label.value = '';
  setStatus(`learned "${label}" from ${samples.length} sample(s); the samples themselves are dropped`);
  await predictNow();
}

async function saveEncrypted() {
  const pass = ui.passphrase.value;
  if (!pass) { setStateMessage('type a passphrase first', true); return; }
  if (!clf.classCounts().size) { setStateMessage('nothing to save yet: teach a class first', true); return; }
  setStateMessage('deriving the key…');
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iterations = runtime.PBKDF2_ITERATIONS;
  const key = await runtime.deriveStateKey(pass, salt, iterations);
  const state = await clf.saveState({ key });
  await putState(page.bundlePath, { salt, iterations, state });
  setStateMessage(`saved ${clf.classCounts().size} class(es) encrypted: ${state.length} bytes of embeddings, no samples`);
}

/** `fn` once the bundle is loaded; before that, a message instead. */
function whenReady(fn) {
  return () => (clf ? serial(fn) : setStatus('the bundle is still loading', true));
}

async function unlockSaved() {
  const pass = ui.passphrase.value;
  if (!pass) { setStateMessage('type the passphrase first', true); return; }
  const record = await getState(page.bundlePath);
  if (!record) { setStateMessage('nothing is saved for this bundle', true); return; }
  const problem = recordProblem(record);
  if (problem) { setStateMessage(`${problem}; nothing was loaded (erase it, then save again)`, true); return; }
  setStateMessage('deriving the key…');
  try {
    const key = await runtime.deriveStateKey(pass, record.salt, record.iterations);
    await clf.loadState(record.state, { key });
  } catch (err) {
    if (!(err instanceof runtime.StateError)) throw err;
    setStateMessage('wrong passphrase (or the saved state is damaged): nothing was loaded', true);
    return;
  }
  renderClasses();
  setStateMessage(`unlocked ${clf.classCounts().size} class(es) saved ${record.savedAt}`);
  await predictNow();
}

async function eraseSaved() {
  await deleteState(page.bundlePath);
  setStateMessage('the saved state of this bundle is erased');
}

function wire() {
  ui.clear.addEventListener('click', () => { pad.clear(); renderPrediction(null); });
  ui.modeDraw.addEventListener('click', () => setMode('draw'));
  ui.modeCamera.addEventListener('click', () => setMode('camera'));
  ui.cameraStart.addEventListener('click', () => (ui.camera.srcObject ? cameraOff() : serial(cameraOn)));
  ui.addSample.addEventListener('click', addSample);
  ui.learn.addEventListener('click', whenReady(learnClass));
  ui.discard.addEventListener('click', () => { pending = []; renderPending(); });
  ui.reject.addEventListener('change', schedulePredict);
  ui.save.addEventListener('click', whenReady(saveEncrypted));
  ui.unlock.addEventListener('click', whenReady(unlockSaved));
  ui.erase.addEventListener('click', () => serial(eraseSaved));
  ui.stateForm.addEventListener('submit', (e) => e.preventDefault());
  ui.bundle.addEventListener('change', () => {
    const next = new URLSearchParams(location.search);
    next.set('bundle', ui.bundle.value);
    location.search = next.toString();
  });
}

async function main() {
  wire();
  const list = await (await fetch('bundles.json')).json();
  for (const entry of list) ui.bundle.add(new Option(entry.title, entry.path));
  const chosen = list.find((e) => e.path === params.get('bundle')) || list[0];
  ui.bundle.value = chosen.path;
  page.bundlePath = chosen.path;
  const ort = await ortModule;
  ort.env.wasm.wasmPaths = ORT_DIST;
  ort.env.wasm.numThreads = THREADS;
  ort.env.wasm.proxy = false;
  runtime = await runtimeModule;
  page.timings.runtime = performance.now();
  const source = runtime.urlSource(new URL(`../../${chosen.path}`, location.href), { fetch: (...a) => fetch(...a) });
  clf = await runtime.FewShotClassifier.load(ort, source, { threads: THREADS });
  page.clf = clf;
  page.timings.bundle = performance.now();
  setMode(chosen.input === 'camera' ? 'camera' : 'draw');
  renderClasses();
  renderPending();
  const isolation = THREADS > 1 && !crossOriginIsolated ? ' (not cross-origin isolated: 1 thread)' : '';
  setStatus(`ready: ${chosen.title}, ${THREADS} thread(s)${isolation}`);
  page.ready = true;
}

main().catch((err) => { page.error = `${err && err.name}: ${err && err.message}`; showError(err); });
