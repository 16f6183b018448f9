#!/usr/bin/env node
// Classify digit images with the ONNX model exported by mnist-pipeline, in Node.js.
// The same preprocessing and output as `mnist-pipeline predict` (see ../README.md).
//
//   node predict.mjs [--model PATH | --server URL] [--top K] [--json] [--dump-input] IMAGE...
//
// --server URL fetches the model an `mnist-pipeline serve` is serving (URL/model.onnx) and
// refuses it unless the SHA-256 of the bytes received equals the X-Model-SHA256 header.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';

import { ImageError, toMnist } from '../js/preprocess.mjs';

/** A module of this example's packages; without them (no `npm ci`) one line saying so, exit 2,
 * not Node's stack trace (a static import fails before any code here runs). */
async function needed(name) {
  try {
    return await import(name);
  } catch (err) {
    if (err.code !== 'ERR_MODULE_NOT_FOUND') throw err;
    console.error(`error: ${err.message.split('\n')[0]}: run npm ci --prefix examples/node first`);
    process.exit(2);
  }
}

const { default: ort } = await needed('onnxruntime-node');
const { loadGrey } = await needed('./decode.mjs'); // it imports pngjs and jpeg-js

const DEFAULT_MODEL = fileURLToPath(new URL('../../models/model.onnx', import.meta.url));
const WEIGHTS = fileURLToPath(new URL('../../models/model.pt', import.meta.url));
const PARITY = fileURLToPath(new URL('../../reports/parity.json', import.meta.url));
const MAX_MODEL_BYTES = 200 * 1024 * 1024; // a served model larger than this is refused
const FETCH_TIMEOUT_MS = 120_000; // the whole download, headers and body
const USAGE = 'usage: node predict.mjs [--model PATH | --server URL] [--top K] [--json] [--dump-input] IMAGE...';

function fail(message, code = 2) {
  console.error(`error: ${message}`);
  process.exit(code);
}

/** The ONNX bytes `server` serves (its /model.onnx), checked against their X-Model-SHA256
 * header; the model's description for the output. Exits 1 with the reason otherwise. */
async function fetchServed(server) {
  let url;
  try {
    url = new URL('model.onnx', server.endsWith('/') ? server : `${server}/`);
  } catch { /* refused below */ }
  if (url?.protocol !== 'http:' && url?.protocol !== 'https:') {
    fail(`--server must be an http(s) URL such as http://127.0.0.1:8000, got ${server}`);
  }
  url = url.href;
  let response;
  try {
    response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS) });
  } catch (err) {
    fail(`cannot reach ${url}: ${err.cause?.message ?? err.message}`, 1);
  }
  if (!response.ok) {
    const text = new TextDecoder().decode(await readBody(response, url, 64 * 1024, true));
    let detail = text.slice(0, 200);
    try { detail = JSON.parse(text).error ?? detail; } catch { /* not JSON: the text itself */ }
    fail(`${url} answered HTTP ${response.status}: ${detail}`, 1);
  }
  const bytes = await readBody(response, url, MAX_MODEL_BYTES);
  const expected = response.headers.get('x-model-sha256');
  if (!expected) fail(`${url} sent no X-Model-SHA256 header: not an mnist-pipeline server?`, 1);
  const actual = sha256(bytes);
  if (actual !== expected.toLowerCase()) {
    fail(`${url}: the bytes received have SHA-256 ${actual}, not ${expected} as X-Model-SHA256 says`, 1);
  }
  return { bytes, name: `${url} (version ${response.headers.get('x-model-version')}, SHA-256 ${actual} verified)` };
}

/** The response's body, at most `limit` bytes: more is refused (exit 1, as is a download that
 * breaks off or outlasts FETCH_TIMEOUT_MS), or with `cut` (an error page) cut off there. */
async function readBody(response, url, limit, cut = false) {
  if (!cut && Number(response.headers.get('content-length')) > limit) {
    fail(`${url} sends ${response.headers.get('content-length')} bytes, more than the ${limit} taken`, 1);
  }
  const chunks = [];
  let size = 0;
  try {
    for await (const chunk of response.body ?? []) {
      size += chunk.length;
      if (size > limit && cut) break;
      if (size > limit) fail(`${url} sent more than the ${limit} bytes taken`, 1);
      chunks.push(chunk);
    }
  } catch (err) {
    fail(`the download of ${url} broke off: ${err.cause?.message ?? err.message}`, 1);
  }
  return new Uint8Array(Buffer.concat(chunks));
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

/** The repository's own export, used only as the pipeline left it: the model its parity check
 * passed (reports/parity.json: `passed`, the same ONNX SHA-256), exported from the weights in
 * models/model.pt now (a later training whose gate refused it leaves an older export behind).
 * Exits 1 naming what does not hold; --model PATH uses any file unchecked. */
function checkedExport(model) {
  let parity;
  try {
    parity = JSON.parse(readFileSync(PARITY, 'utf8'));
  } catch (err) {
    fail(`${model} has no parity record (${PARITY}: ${err.code ?? err.message}): run the pipeline (dvc repro, or mnist-pipeline parity) first, or give --model PATH`, 1);
  }
  if (parity === null || typeof parity !== 'object' || Array.isArray(parity)) {
    fail(`${PARITY} is not a parity record (${JSON.stringify(parity)}): run mnist-pipeline parity again`, 1);
  }
  if (parity.passed !== true) {
    fail(`${model} failed its parity check against PyTorch (${PARITY}); give --model PATH to use it anyway`, 1);
  }
  const actual = sha256(readOrFail(model));
  if (actual !== parity.onnx_sha256) {
    fail(`${model} (SHA-256 ${actual}) is not the model its parity check passed (${parity.onnx_sha256}, ${PARITY}): run mnist-pipeline export and parity again`, 1);
  }
  if (existsSync(WEIGHTS) && sha256(readOrFail(WEIGHTS)) !== parity.state_dict_sha256) {
    fail(`${model} was exported from other weights than ${WEIGHTS} (trained again since, and not exported: did the accuracy gate refuse them? see reports/metrics.json); give --model PATH to use the older export`, 1);
  }
}

/** A file's bytes, or exit 1 naming it and why (a folder, no permission). */
function readOrFail(path) {
  try {
    return readFileSync(path);
  } catch (err) {
    return fail(`cannot read ${path}: ${err.code ?? err.message}`, 1);
  }
}

/** Digits by descending probability; ties keep the lower digit first (numpy's stable argsort). */
function ranked(probs, k) {
  return [...probs].map((p, d) => ({ digit: d, probability: p }))
    .sort((a, b) => b.probability - a.probability || a.digit - b.digit)
    .slice(0, k);
}

async function main() {
  let args;
  try {
    args = parseArgs({
      allowPositionals: true,
      options: {
        model: { type: 'string', short: 'm' },
        server: { type: 'string', short: 's' },
        top: { type: 'string' },
        json: { type: 'boolean', default: false },
        'dump-input': { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    fail(`${err.message}\n${USAGE}`);
  }
  const { values: opt, positionals: files } = args;
  if (opt.help) return console.log(USAGE);
  if (files.length === 0) fail(`no image files given\n${USAGE}`);
  const top = opt.top === undefined ? null : Number(opt.top);
  if (top !== null && !(Number.isInteger(top) && top >= 1 && top <= 10)) fail(`--top must be an integer from 1 to 10, got ${opt.top}`);
  if (opt.model !== undefined && opt.server !== undefined) fail(`give --model or --server, not both\n${USAGE}`);

  // Preprocess every file; a bad file gets an error entry and the others are still classified.
  const inputs = files.map((file) => {
    try {
      return { file, digit: toMnist(loadGrey(file)) };
    } catch (err) {
      if (!(err instanceof ImageError)) throw err;
      return { file, error: `${file}: ${err.message}` };
    }
  });
  if (opt['dump-input']) {
    // Debugging: the 28x28 arrays the model would see, for comparison with Python's.
    console.log(JSON.stringify(inputs.map(({ file, digit, error }) => (error ? { file, error } : { file, input: Array.from(digit) }))));
    if (inputs.some((x) => x.error)) process.exitCode = 1;
    return;
  }

  // Exit codes as `mnist-pipeline predict`: 2 for bad arguments, 1 for a bad model or image.
  let model = opt.model ?? DEFAULT_MODEL;
  let source = model; // a path, or the verified bytes a server sent
  if (opt.server !== undefined) {
    ({ bytes: source, name: model } = await fetchServed(opt.server));
  } else if (!existsSync(model)) {
    fail(`model file not found: ${model}`, 1);
  } else if (opt.model === undefined) {
    checkedExport(model);
  }
  let session;
  try {
    session = await ort.InferenceSession.create(source, { logSeverityLevel: 3 });
  } catch (err) {
    fail(`onnxruntime cannot load ${model}: ${err.message}`, 1);
  }
  if (session.inputNames.join() !== 'image' || !session.outputNames.includes('probabilities')) {
    fail(`${model} is not an mnist-pipeline model: inputs ${session.inputNames}, outputs ${session.outputNames}`, 1);
  }
  const good = inputs.filter((x) => !x.error);
  if (good.length) {
    const batch = new Float32Array(good.length * 784);
    good.forEach((x, i) => batch.set(x.digit, i * 784));
    const feeds = { image: new ort.Tensor('float32', batch, [good.length, 1, 28, 28]) };
    let probabilities;
    try {
      ({ probabilities } = await session.run(feeds, ['probabilities']));
    } catch (err) {
      fail(`${model} cannot classify a [${good.length}, 1, 28, 28] float32 batch: ${err.message}`, 1);
    }
    // one row of 10 per image, as the contract says: anything else would be read wrongly
    if (probabilities.type !== 'float32' || probabilities.dims.join() !== `${good.length},10`) {
      fail(`${model} answered ${probabilities.type} probabilities of shape [${probabilities.dims.join(', ')}], not [${good.length}, 10] float32: not an mnist-pipeline model`, 1);
    }
    good.forEach((x, i) => { x.top = ranked(probabilities.data.subarray(i * 10, i * 10 + 10), top ?? 1); });
  }

  const results = inputs.map(({ file, error, top: best }) => {
    if (error) return { file, error };
    const out = { file, digit: best[0].digit, probability: best[0].probability };
    return top === null ? out : { ...out, top: best };
  });
  if (opt.json) {
    console.log(JSON.stringify(results));
  } else {
    // as `mnist-pipeline predict`: the model and the files that failed on stderr, so that
    // stdout holds the answers alone
    console.error(`model: ${model}`);
    for (const r of results) {
      if (r.error) { console.error(`error: ${r.error}`); continue; }
      let line = `${r.file}: ${r.digit} (p=${r.probability.toFixed(3)})`;
      if (r.top) line += '  top: ' + r.top.map((t) => `${t.digit} (${t.probability.toFixed(3)})`).join(', ');
      console.log(line);
    }
  }
  if (results.some((r) => r.error)) process.exitCode = 1;
}

await main();
