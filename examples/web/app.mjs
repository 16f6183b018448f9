// Draw a digit; the ONNX model exported by mnist-pipeline classifies it in the browser
// (onnxruntime-web, single-threaded WebAssembly). Preprocessing is the shared port of
// mnist_pipeline/data/preprocess.py, fed with the canvas's RGBA pixels.
//
// The model URL defaults to /models/model.onnx of the served repository; ?model=URL overrides it.
// With ?server=URL (an `mnist-pipeline serve` whose serve.cors_origins lists this page's origin)
// a "wrong? tell us the digit" control posts the drawing and its true label to URL/feedback,
// with the bearer token given in the page's fragment (#token=..., never sent to a server as
// part of a URL); the server holds it for review. The page takes the token out of its address at
// once (so history, bookmarks and a shared link do not carry it) and keeps it in the tab's
// sessionStorage for that server only, so a reload still sends it there. With ?server=URL&model=server the model is the
// one that server serves (URL/model.onnx, production), used only if the SHA-256 of the bytes
// received (Web Crypto) equals its X-Model-SHA256 header. Without ?server the page works fully
// offline.

import * as ort from './node_modules/onnxruntime-web/dist/ort.wasm.min.mjs';
import { greyFromRGBA, ImageError, toMnist } from '../js/preprocess.mjs';

ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', import.meta.url).href;
ort.env.wasm.numThreads = 1; // no SharedArrayBuffer, so no cross-origin isolation needed
const SERVER = new URLSearchParams(location.search).get('server');
const FROM_SERVER = new URLSearchParams(location.search).get('model') === 'server';
/** The server's base URL: ?server= as a link would take it (a relative one from this page),
 * with a trailing slash. A throw here stops the page (index.html says so, highlighted): a
 * host:port without its scheme, or a scheme other than http(s), would otherwise be fetched as
 * a path of this page's own site or not at all, and reported as a missing model. */
function serverBase(server) {
  const refuse = () => {
    throw new Error(`?server= must be an http(s) URL such as http://127.0.0.1:8000, got ${server}`);
  };
  if (/^[^/?#]+:\d+(?:[/?#]|$)/.test(server)) refuse(); // 127.0.0.1:8000, localhost:8000
  const base = new URL(server.endsWith('/') ? server : `${server}/`, location.href);
  if (base.protocol !== 'http:' && base.protocol !== 'https:') refuse();
  return base;
}
const SERVER_BASE = SERVER === null ? null : serverBase(SERVER);
/** URL `path` of the server, below its own path (so a server behind a path prefix works). */
const api = (path) => new URL(path, SERVER_BASE).href;
const OWN_EXPORT = !FROM_SERVER && !new URLSearchParams(location.search).has('model');
const MODEL_URL = FROM_SERVER && SERVER
  ? api('model.onnx')
  : new URLSearchParams(location.search).get('model') ?? '../../models/model.onnx';
const TOKEN = takeToken();
const PEN_WIDTH = 24; // on the 280px pad: about MNIST's stroke width once scaled to 20px

const pad = document.getElementById('pad');
const ctx = pad.getContext('2d', { willReadFrequently: true });
const preview = document.getElementById('preview').getContext('2d');
const result = document.getElementById('result');
const digitEl = document.getElementById('digit');
const topEl = document.getElementById('top');
const statusEl = document.getElementById('status');

let session = null;
let version = 0; // bumped on every change of the drawing
let busy = false;
let loadedStatus = ''; // the status line once the model loaded (shown again after an error)

function clearPad() {
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, pad.width, pad.height);
  changed();
}

// ---- drawing (pointer events: mouse, pen and touch alike) ----
let last = null;
/** The pad's pixel under the pointer: measured from inside the canvas's border (the bounding
 * rectangle includes it), scaled from its CSS size to its own 280x280 pixels. */
function point(event) {
  const rect = pad.getBoundingClientRect();
  const x = event.clientX - rect.left - pad.clientLeft;
  const y = event.clientY - rect.top - pad.clientTop;
  return [x * (pad.width / pad.clientWidth), y * (pad.height / pad.clientHeight)];
}
function strokeTo([x, y]) {
  ctx.fillStyle = ctx.strokeStyle = '#000';
  ctx.lineWidth = PEN_WIDTH;
  ctx.lineCap = ctx.lineJoin = 'round';
  ctx.beginPath();
  if (last) { // a segment from the previous point
    ctx.moveTo(...last);
    ctx.lineTo(x, y);
    ctx.stroke();
  } else { // a dot where the stroke starts (a tap, or a click without moving)
    ctx.arc(x, y, PEN_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
  }
  last = [x, y];
  changed();
}
pad.addEventListener('pointerdown', (e) => { pad.setPointerCapture(e.pointerId); last = null; strokeTo(point(e)); });
pad.addEventListener('pointermove', (e) => { if (last) strokeTo(point(e)); });
for (const type of ['pointerup', 'pointercancel']) pad.addEventListener(type, () => { last = null; });
document.getElementById('clear').addEventListener('click', clearPad);

// ---- classification: always of the latest drawing, never two runs at once ----
function changed() {
  version += 1;
  result.dataset.pending = 'true';
  if (!busy && session) void classifyLatest();
}

async function classifyLatest() {
  busy = true;
  try {
    while (true) {
      const seen = version;
      await classify();
      if (seen === version) break;
    }
    result.dataset.pending = 'false';
    if (document.body.dataset.failed === 'true') { // an earlier drawing failed; this one did not
      statusEl.textContent = loadedStatus;
      statusEl.classList.remove('error');
      delete document.body.dataset.failed;
    }
  } catch (err) {
    show(null, null); // not the previous drawing's answer
    result.dataset.pending = 'false';
    fail(`the model cannot classify the drawing (${err.message})`);
  } finally {
    busy = false;
  }
}

async function classify() {
  const { data, width, height } = ctx.getImageData(0, 0, pad.width, pad.height);
  let input;
  try {
    input = toMnist(greyFromRGBA(data, width, height, true));
  } catch (err) {
    if (!(err instanceof ImageError)) throw err;
    return show(null, null); // nothing drawn yet
  }
  const tensor = new ort.Tensor('float32', input, [1, 1, 28, 28]);
  const { probabilities } = await session.run({ image: tensor }, ['probabilities']);
  show(input, probabilities.data);
}

function show(input, probs) {
  const pixels = preview.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = input ? Math.round(input[i] * 255) : 0;
    pixels.data.set([v, v, v, 255], 4 * i);
  }
  preview.putImageData(pixels, 0, 0);
  topEl.replaceChildren();
  if (!probs) {
    digitEl.textContent = '–';
    return;
  }
  const ranked = [...probs].map((p, d) => [d, p]).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
  digitEl.textContent = String(ranked[0][0]);
  for (const [d, p] of ranked.slice(0, 3)) {
    const li = document.createElement('li');
    li.innerHTML = `<b>${d}</b><div class="bar" style="width:${(100 * p).toFixed(1)}%"></div><span>${(100 * p).toFixed(1)}%</span>`;
    topEl.append(li);
  }
}

// ---- feedback: the drawing and its true digit, to the server's review queue (data/pending) ----
function setUpFeedback() {
  if (!SERVER) return;
  const labels = document.getElementById('labels');
  const status = document.getElementById('feedback-status');
  for (let d = 0; d < 10; d++) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = String(d);
    button.dataset.label = String(d);
    button.addEventListener('click', () => void sendFeedback(d, status));
    labels.append(button);
  }
  document.getElementById('feedback').hidden = false;
}

// A value from the URL's fragment (#token=...), only percent-decoded: URLSearchParams would turn
// the '+' of a base64 token into a space.
function fragmentValue(hash, name) {
  for (const part of hash.slice(1).split('&')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq) === name) {
      try {
        return decodeURIComponent(part.slice(eq + 1));
      } catch {
        return part.slice(eq + 1);
      }
    }
  }
  return null;
}

// The #token=... of the address, removed from it (the rest of the fragment stays) and kept in
// sessionStorage for this tab and this ?server; else the one kept there earlier for the same
// server (never one given for another); else null.
function takeToken() {
  if (!SERVER) return null;
  const KEY = `mnist-pipeline feedback token for ${api('feedback')}`;
  const given = fragmentValue(location.hash, 'token');
  if (given === null) return sessionStorage.getItem(KEY);
  const rest = location.hash.slice(1).split('&').filter((part) => !part.startsWith('token='));
  const address = location.pathname + location.search + (rest.length ? `#${rest.join('&')}` : '');
  history.replaceState(history.state, '', address);
  sessionStorage.setItem(KEY, given);
  return given;
}

async function sendFeedback(label, status) {
  status.textContent = 'sending…';
  const png = await new Promise((resolve) => pad.toBlob(resolve, 'image/png'));
  const form = new FormData();
  form.append('file', png, 'drawing.png');
  form.append('label', String(label));
  try {
    const headers = TOKEN ? { Authorization: `Bearer ${TOKEN}` } : {};
    const response = await fetch(api('feedback'), { method: 'POST', body: form, headers });
    const body = await response.json().catch(() => ({})); // a proxy's error page is no JSON
    status.textContent = response.ok
      ? `thanks: sent for review as a ${body.label}${response.status === 201 ? '' : ' (already sent)'}`
      : `not stored: ${body.error ?? `${response.status} ${response.statusText}`.trim()}`;
  } catch (err) {
    status.textContent = `not stored: ${SERVER} is unreachable or refuses this page's origin ` +
      `(serve.cors_origins) (${err.message})`;
  }
}

// The ONNX model's metadata_props (ModelProto field 14: key 1, value 2), read from the file's
// top-level protobuf fields; onnxruntime-web has no API for them. Other fields are skipped.
function onnxMetadata(bytes) {
  const found = {};
  const text = new TextDecoder();
  const varint = (view, at) => {
    let value = 0; let shift = 1; let pos = at;
    for (;;) {
      if (pos >= view.length) throw new Error('a truncated varint in the model file');
      const byte = view[pos++];
      value += (byte & 0x7f) * shift;
      if (byte < 0x80) return [value, pos];
      shift *= 128;
    }
  };
  const fields = (view, each) => {
    let pos = 0;
    while (pos < view.length) {
      let key; [key, pos] = varint(view, pos);
      const [field, wire] = [Math.floor(key / 8), key % 8];
      if (wire === 0) { [, pos] = varint(view, pos); continue; }
      if (wire === 1 || wire === 5) { pos += wire === 1 ? 8 : 4; continue; }
      if (wire !== 2) return; // groups are not used by ONNX
      let length; [length, pos] = varint(view, pos);
      each(field, view.subarray(pos, pos + length));
      pos += length;
    }
  };
  fields(bytes, (field, body) => {
    if (field !== 14) return;
    const entry = {};
    fields(body, (f, value) => { entry[f] = text.decode(value); });
    if (entry[1] !== undefined) found[entry[1]] = entry[2] ?? '';
  });
  return found;
}

function fail(message) {
  statusEl.textContent = message;
  statusEl.classList.add('error');
  document.body.dataset.failed = 'true';
}

/** The hex SHA-256 of `bytes` (Web Crypto: https pages and localhost only). */
async function sha256(bytes) {
  if (!crypto.subtle) throw new Error('Web Crypto is unavailable: open the page over https or from localhost');
  const digest = new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, '0')).join('');
}

/** The served model's bytes, refused unless they hash to its X-Model-SHA256; a description. */
async function checkServed(response, bytes) {
  const expected = response.headers.get('x-model-sha256');
  if (!expected) {
    throw new Error(`${MODEL_URL} sent no readable X-Model-SHA256 header (is this page's origin in the server's serve.cors_origins?)`);
  }
  const actual = await sha256(bytes);
  if (actual !== expected.toLowerCase()) {
    throw new Error(`${MODEL_URL}: the bytes received have SHA-256 ${actual}, not ${expected} as X-Model-SHA256 says; not loaded`);
  }
  return `served version ${response.headers.get('x-model-version')}, SHA-256 verified`;
}

/** The repository's own export, used only as the pipeline left it: the model its parity check
 * passed (../../reports/parity.json: `passed`, the same SHA-256), exported from the weights in
 * ../../models/model.pt now (a later training whose gate refused it leaves an older export). */
async function checkExport(bytes) {
  const parityUrl = new URL('../../reports/parity.json', location.href).href;
  let parity;
  try {
    const response = await fetch(parityUrl, { cache: 'no-cache' });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    parity = await response.json();
  } catch (err) {
    throw new Error(`${MODEL_URL} has no parity record (${parityUrl}: ${err.message}): run the pipeline first, or pass ?model=URL`);
  }
  if (parity.passed !== true) {
    throw new Error(`${MODEL_URL} failed its parity check against PyTorch (${parityUrl}); pass ?model=URL to load it anyway`);
  }
  const actual = await sha256(bytes);
  if (actual !== parity.onnx_sha256) {
    throw new Error(`${MODEL_URL} (SHA-256 ${actual}) is not the model its parity check passed (${parity.onnx_sha256}): run mnist-pipeline export and parity again`);
  }
  // No models/model.pt (a checkout holding only the export): that part is skipped, as in Node;
  // any other failure to read it refuses the model rather than skipping the check.
  let weights;
  try {
    weights = await fetch('../../models/model.pt', { cache: 'no-cache' });
    if (!weights.ok && weights.status !== 404) throw new Error(`HTTP ${weights.status}`);
  } catch (err) {
    throw new Error(`${MODEL_URL} cannot be checked against ../../models/model.pt (${err.message}); pass ?model=URL to load it unchecked`);
  }
  if (weights.ok && await sha256(new Uint8Array(await weights.arrayBuffer())) !== parity.state_dict_sha256) {
    throw new Error(`${MODEL_URL} was exported from other weights than models/model.pt (trained again since, and not exported: did the accuracy gate refuse them?); pass ?model=URL to load the older export`);
  }
  return 'parity checked';
}

async function main() {
  clearPad();
  setUpFeedback();
  if (new URLSearchParams(location.search).get('model') === 'server' && !SERVER) {
    return fail('?model=server needs ?server=URL (an mnist-pipeline serve)');
  }
  let bytes;
  let response;
  const exportHint = 'run `mnist-pipeline export` first, or pass ?model=URL';
  try {
    response = await fetch(MODEL_URL, { cache: 'no-cache' }); // a new export: never a stale copy
  } catch (err) { // no answer at all: down, or a cross-origin answer the browser withheld
    const hint = FROM_SERVER ? `is the server up, and ${location.origin} in its serve.cors_origins?` : exportHint;
    return fail(`no model at ${MODEL_URL} (${err.message}): ${hint}`);
  }
  if (!response.ok) { // it answered: say what (an mnist-pipeline server says why in JSON)
    let said = '';
    try { said = (await response.json()).error ?? ''; } catch { /* not JSON */ }
    const why = `HTTP ${response.status} ${said || response.statusText}`.trim();
    return fail(`no model at ${MODEL_URL} (${why})${FROM_SERVER ? '' : `: ${exportHint}`}`);
  }
  try {
    bytes = new Uint8Array(await response.arrayBuffer());
  } catch (err) {
    return fail(`the download of ${MODEL_URL} broke off (${err.message})`);
  }
  let served = null;
  try {
    if (FROM_SERVER) served = await checkServed(response, bytes);
    else if (OWN_EXPORT) served = await checkExport(bytes);
  } catch (err) {
    return fail(err.message);
  }
  try {
    session = await ort.InferenceSession.create(bytes, { executionProviders: ['wasm'] });
  } catch (err) {
    return fail(`${MODEL_URL} is not a loadable ONNX model (${err.message})`);
  }
  if (session.inputNames.join() !== 'image' || !session.outputNames.includes('probabilities')) {
    return fail(`${MODEL_URL} is not an mnist-pipeline model (inputs ${session.inputNames}, outputs ${session.outputNames})`);
  }
  let meta = {};
  try {
    meta = onnxMetadata(bytes);
  } catch { /* metadata unreadable: the model runs, described without it */ }
  const accuracy = Number(meta.test_accuracy);
  const about = [
    served,
    meta.model_version ? `version ${meta.model_version}` : null,
    Number.isFinite(accuracy) ? `test accuracy ${(100 * accuracy).toFixed(2)}%` : null,
  ].filter(Boolean).join(', ');
  loadedStatus = `model ${MODEL_URL}${about ? ` (${about})` : ''} loaded: draw a digit (mouse, pen or finger)`;
  statusEl.textContent = loadedStatus;
  document.body.dataset.ready = 'true';
  changed();
}

void main();
