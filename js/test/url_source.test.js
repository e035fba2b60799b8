/**
 * urlSource: a bundle folder served over HTTP (what a browser page loads), against a real HTTP server
 * on 127.0.0.1 and the platform's fetch. It loads like the folder; an HTTP error names the file; a body
 * larger than the manifest lists is cut at its limit and refused (an endless body too, without reading it).
 */

import test from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import * as em from '../src/index.js';
import { sourceFromPath as at } from '../src/node.js';

const __dirname = path.dirname(fileURLToPath(import.meta.url));
const BUNDLE = path.resolve(__dirname, '..', '..', 'models', 'omniglot-conv4-proto');
const file = (name) => fs.readFileSync(path.join(BUNDLE, name));
let streamedBytes = 0; // what the endless route managed to send before the client stopped reading
let inFlight = 0, mostInFlight = 0; // requests of the slow route being answered at once

/** Routes: /ok/<f> the bundle; /missing/ no classify.onnx; /grown/ backbone.onnx with 1 MiB more;
 *  /declared/ the same announced by its Content-Length; /endless/ a backbone.onnx that never ends;
 *  /broken/ HTTP 500 for everything; /slow/ each listed file after 100 ms. */
const server = http.createServer((req, res) => {
  const [, route, name] = req.url.split('/');
  const exists = fs.existsSync(path.join(BUNDLE, name)) && name !== '';
  if (route === 'broken') { res.writeHead(500, 'Internal Server Error'); res.end(); return; }
  if (!exists || (route === 'missing' && name === 'classify.onnx')) { res.writeHead(404, 'Not Found'); res.end(); return; }
  if (route === 'grown' && name === 'backbone.onnx') {
    res.writeHead(200); // chunked: no content-length, so only the stream bound can stop it
    res.end(Buffer.concat([file(name), Buffer.alloc(1 << 20, 7)]));
    return;
  }
  if (route === 'declared' && name === 'backbone.onnx') {
    const body = Buffer.concat([file(name), Buffer.alloc(1 << 20, 7)]);
    res.writeHead(200, { 'content-length': body.length });
    res.end(body);
    return;
  }
  if (route === 'endless' && name === 'backbone.onnx') {
    res.writeHead(200);
    const chunk = Buffer.alloc(1 << 16, 1);
    const more = () => {
      while (!res.destroyed && streamedBytes < 2 ** 31) {
        streamedBytes += chunk.length;
        if (!res.write(chunk)) { res.once('drain', more); return; }
      }
    };
    res.on('close', () => res.removeAllListeners('drain'));
    more();
    return;
  }
  if (route === 'slow' && name !== 'manifest.json') { // each listed file answered after 100 ms
    inFlight += 1;
    mostInFlight = Math.max(mostInFlight, inFlight);
    setTimeout(() => {
      inFlight -= 1;
      res.writeHead(200, { 'content-length': file(name).length });
      res.end(file(name));
    }, 100);
    return;
  }
  res.writeHead(200, { 'content-length': file(name).length });
  res.end(file(name));
});

let base;
test.before(async () => {
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${server.address().port}`;
});
test.after(() => { server.closeAllConnections(); server.close(); });

test('a bundle folder served over HTTP loads, verified, like the folder on disk', async () => {
  const clf = await em.FewShotClassifier.load(ort, em.urlSource(`${base}/ok`));
  const local = await em.FewShotClassifier.load(ort, at(BUNDLE));
  assert.equal(clf.bundle.identity, local.bundle.identity);
  assert.equal(clf.bundle.precision, local.bundle.precision);
  const img = (k) => ({ data: Float32Array.from({ length: 784 }, (_, i) => ((i * (k + 2)) % 11 < 2 ? 1 : 0)), height: 28, width: 28 });
  const support = [0, 1, 2, 3].map(img);
  await clf.fit(support, ['x', 'x', 'y', 'y']);
  await local.fit(support, ['x', 'x', 'y', 'y']);
  assert.deepEqual((await clf.decisionFunction([img(7)])).data, (await local.decisionFunction([img(7)])).data);
});

test('the listed files are requested at once, not one round trip each', async () => {
  const listed = Object.keys(JSON.parse(file('manifest.json').toString()).files).length;
  const clf = await em.FewShotClassifier.load(ort, em.urlSource(`${base}/slow/`));
  assert.equal(clf.bundle.identity, (await em.Bundle.load(ort, at(BUNDLE))).identity);
  assert.equal(mostInFlight, listed, `${mostInFlight} of the ${listed} listed files were requested together`);
});

test('HTTP errors are BundleErrors naming the file', async () => {
  await assert.rejects(em.Bundle.load(ort, em.urlSource(`${base}/missing/`)),
    (e) => e instanceof em.BundleError && /fetching classify\.onnx from .*\/missing\/classify\.onnx answered HTTP 404 Not Found/.test(e.message));
  await assert.rejects(em.Bundle.load(ort, em.urlSource(`${base}/broken`)),
    (e) => e instanceof em.BundleError && /fetching manifest\.json .* answered HTTP 500/.test(e.message));
  await assert.rejects(em.Bundle.load(ort, em.urlSource('http://127.0.0.1:1/b/')),
    (e) => e instanceof em.BundleError && /cannot fetch manifest\.json from http:\/\/127\.0\.0\.1:1\/b\/manifest\.json/.test(e.message));
});

test('a body larger than listed is cut at its limit and refused; an endless one is not read to its end', async () => {
  const size = file('backbone.onnx').length;
  await assert.rejects(em.Bundle.load(ort, em.urlSource(`${base}/grown/`)),
    (e) => e instanceof em.BundleError && new RegExp(`backbone\\.onnx is more than ${size} bytes, the manifest says ${size}`).test(e.message));
  await assert.rejects(em.Bundle.load(ort, em.urlSource(`${base}/declared/`)),
    (e) => e instanceof em.BundleError && new RegExp(`backbone\\.onnx is ${size + (1 << 20)} bytes \\(its Content-Length\\), more than the ${size} expected`).test(e.message));
  await assert.rejects(em.Bundle.load(ort, em.urlSource(`${base}/endless/`)),
    (e) => e instanceof em.BundleError && /backbone\.onnx is more than/.test(e.message));
  await new Promise((resolve) => setTimeout(resolve, 200));
  assert.ok(streamedBytes < 64 << 20, `the server sent ${streamedBytes} bytes before the client stopped reading`);
});

test('a source must be a source: a plain string is refused with the helpers to use', async () => {
  await assert.rejects(em.Bundle.load(ort, BUNDLE), (e) => e instanceof TypeError && /sourceFromPath/.test(e.message));
  await assert.rejects(em.Bundle.load({}, at(BUNDLE)), (e) => e instanceof TypeError && /onnxruntime binding/.test(e.message));
});
