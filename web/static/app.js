// The drawing page: strokes on a 280x280 canvas -> MNIST preprocessing -> the TF.js model,
// live while drawing. The model is the newest exported version, found through /api/latest.
// Served by `digitserve serve --web`, /api/latest also names the server's V2 infer URL for the
// same model and version: each prediction then asks the server too and compares the answers.
//
// window.digitserve is the page's small public surface, used by the browser tests:
//   ready          Promise: settles once the model is loaded or has failed to load
//   whenIdle()     Promise: resolves when no prediction is pending or running
//   prepare()      the 784 floats the model would see for the canvas right now
//   classify(px)   Promise<Float32Array>: probabilities for N images (Float32Array N*784)
//   model          what /api/latest said (name, version, test_accuracy, model_url), or null
//   answers()      the last prediction: {browser, server} probabilities (server: null without one)

import { SIDE, toMnist } from './preprocess.js';

const BRUSH_WIDTH = 22; // px on the 280 canvas: ~2 px strokes after the fit into 20x20, as in MNIST
const PREDICT_INTERVAL_MS = 100; // at most ten predictions a second while drawing
const DIGITS = 10;
const AGREEMENT = 1e-4; // most |difference| of a probability for the server and TF.js to agree

const pad = document.getElementById('pad');
const pen = pad.getContext('2d', { willReadFrequently: true });
const seen = document.getElementById('seen');
const seenPen = seen.getContext('2d');
const labelOut = document.getElementById('label');
const confidenceOut = document.getElementById('confidence');
const statusOut = document.getElementById('model-status');
const messageBox = document.getElementById('message');
const serverBox = document.getElementById('server');
const serverLabelOut = document.getElementById('server-label');
const serverConfidenceOut = document.getElementById('server-confidence');
const serverCheckOut = document.getElementById('server-check');

const strokes = []; // each stroke: [{x, y}, ...] in canvas pixels
let active = null; // {pointerId, points} while a pointer is down
let model = null;
let info = null;
let answers = { browser: null, server: null };

// ---- drawing ---------------------------------------------------------------------------

function blank() {
  pen.fillStyle = '#000';
  pen.fillRect(0, 0, pad.width, pad.height);
  pen.strokeStyle = '#fff';
  pen.fillStyle = '#fff';
  pen.lineWidth = BRUSH_WIDTH;
  pen.lineCap = 'round';
  pen.lineJoin = 'round';
}

function dot(p) {
  pen.beginPath();
  pen.arc(p.x, p.y, BRUSH_WIDTH / 2, 0, 2 * Math.PI);
  pen.fill();
}

function segment(from, to) {
  pen.beginPath();
  pen.moveTo(from.x, from.y);
  pen.lineTo(to.x, to.y);
  pen.stroke();
}

function drawStroke(points) {
  if (points.length === 1) return dot(points[0]);
  pen.beginPath();
  pen.moveTo(points[0].x, points[0].y);
  for (const p of points.slice(1)) pen.lineTo(p.x, p.y);
  pen.stroke();
}

function redraw() {
  blank();
  strokes.forEach(drawStroke);
}

function canvasPoint(event) {
  // the canvas keeps 280x280 pixels however large CSS shows it (phones, zoom)
  const rect = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * pad.width) / rect.width,
    y: ((event.clientY - rect.top) * pad.height) / rect.height,
  };
}

pad.addEventListener('pointerdown', (event) => {
  if (event.pointerType === 'mouse' && event.button !== 0) return;
  if (active) return; // one stroke at a time: a second finger does not draw
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  const first = canvasPoint(event);
  active = { pointerId: event.pointerId, points: [first] };
  strokes.push(active.points);
  dot(first);
  schedulePrediction();
});

pad.addEventListener('pointermove', (event) => {
  if (!active || event.pointerId !== active.pointerId) return;
  event.preventDefault();
  const moves = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const move of moves.length ? moves : [event]) {
    const point = canvasPoint(move);
    segment(active.points[active.points.length - 1], point);
    active.points.push(point);
  }
  schedulePrediction();
});

function endStroke(event) {
  if (!active || event.pointerId !== active.pointerId) return;
  active = null;
  schedulePrediction(true);
}
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

function undo() {
  if (active) return;
  strokes.pop();
  redraw();
  schedulePrediction(true);
}

function clear() {
  active = null;
  strokes.length = 0;
  redraw();
  schedulePrediction(true);
}

document.getElementById('undo').addEventListener('click', undo);
document.getElementById('clear').addEventListener('click', clear);
document.addEventListener('keydown', (event) => {
  if ((event.ctrlKey || event.metaKey) && event.key.toLowerCase() === 'z') {
    event.preventDefault();
    undo();
  } else if (event.key === 'Escape') {
    clear();
  }
});

// ---- prediction, throttled ----------------------------------------------------------------

let timer = null;
let running = false;
let dirty = false;
let lastRun = -Infinity;
let idleWaiters = [];

function schedulePrediction(now = false) {
  dirty = true;
  if (running) return; // the running prediction reschedules when it ends
  if (timer !== null) {
    if (!now) return;
    clearTimeout(timer);
  }
  const wait = now ? 0 : Math.max(0, lastRun + PREDICT_INTERVAL_MS - performance.now());
  timer = setTimeout(runPrediction, wait);
}

async function runPrediction() {
  timer = null;
  if (!dirty) return settle();
  dirty = false;
  running = true;
  try {
    await predictCanvas();
  } catch (error) {
    showMessage(`Prediction failed: ${error.message}`);
  } finally {
    running = false;
    lastRun = performance.now();
  }
  if (dirty) schedulePrediction();
  else settle();
}

function settle() {
  const waiters = idleWaiters;
  idleWaiters = [];
  waiters.forEach((resolve) => resolve());
}

function whenIdle() {
  if (!running && !dirty && timer === null) return Promise.resolve();
  return new Promise((resolve) => idleWaiters.push(resolve));
}

function prepare() {
  const image = pen.getImageData(0, 0, pad.width, pad.height);
  return toMnist(image.data, pad.width, pad.height, 4).pixels;
}

async function predictCanvas() {
  const pixels = prepare();
  showSeen(pixels);
  if (strokes.length === 0 || !pixels.some((v) => v > 0)) {
    answers = { browser: null, server: null };
    showServer(null, null);
    return showProbabilities(null);
  }
  if (!model) return;
  const [probabilities, server] = await Promise.all([classify(pixels), askServer(pixels)]);
  answers = { browser: probabilities, server: server && server.probabilities ? server.probabilities : null };
  showProbabilities(probabilities);
  showServer(server, probabilities);
}

// The same 784 floats through the server's KServe V2 REST API: {probabilities} or {error}.
async function askServer(pixels) {
  if (!info || !info.infer_url) return null;
  const request = {
    inputs: [{ name: 'pixels', datatype: 'FP32', shape: [1, SIDE * SIDE], data: Array.from(pixels) }],
  };
  try {
    const response = await fetch(info.infer_url, {
      method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(request),
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok) return { error: answer && answer.error ? answer.error : `it answered ${response.status}` };
    const output = answer && Array.isArray(answer.outputs)
      ? answer.outputs.find((o) => o.name === 'probabilities') : null;
    if (!output || !Array.isArray(output.data) || output.data.length !== DIGITS) {
      return { error: `its answer holds no ${DIGITS} probabilities` };
    }
    return { probabilities: Float32Array.from(output.data) };
  } catch (error) {
    return { error: error.message };
  }
}

async function classify(pixels) {
  if (!model) throw new Error('no model is loaded');
  const count = pixels.length / (SIDE * SIDE);
  const output = tf.tidy(() => model.predict(tf.tensor2d(pixels, [count, SIDE * SIDE])));
  try {
    return await output.data();
  } finally {
    output.dispose();
  }
}

// ---- showing results ----------------------------------------------------------------------

const bars = [];
function buildBars() {
  const list = document.getElementById('bars');
  for (let digit = 0; digit < DIGITS; digit++) {
    const item = document.createElement('li');
    item.className = 'bar-row';
    const name = document.createElement('span');
    name.className = 'bar-digit';
    name.textContent = String(digit);
    const track = document.createElement('span');
    track.className = 'bar-track';
    const fill = document.createElement('span');
    fill.className = 'bar-fill';
    track.append(fill);
    const value = document.createElement('span');
    value.className = 'bar-value';
    item.append(name, track, value);
    list.append(item);
    bars.push({ item, fill, value });
  }
}

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 0 : 1)}%`;
}

function bestOf(probabilities) {
  if (!probabilities) return -1;
  let best = 0;
  for (let d = 1; d < DIGITS; d++) if (probabilities[d] > probabilities[best]) best = d;
  return best;
}

function showProbabilities(probabilities) {
  const best = bestOf(probabilities);
  bars.forEach((bar, digit) => {
    const p = probabilities ? probabilities[digit] : 0;
    bar.fill.style.width = `${(100 * p).toFixed(2)}%`;
    bar.value.textContent = probabilities ? percent(p) : '';
    bar.item.classList.toggle('best', digit === best);
    bar.item.setAttribute('aria-label', `${digit}: ${probabilities ? percent(p) : 'no prediction'}`);
  });
  labelOut.textContent = best >= 0 ? String(best) : '–';
  confidenceOut.textContent = best >= 0 ? `${percent(probabilities[best])} sure` : '';
  document.body.dataset.prediction = best >= 0 ? String(best) : '';
}

// The server's answer beside the browser's, and whether they agree (only under `serve --web`).
function showServer(server, browser) {
  if (!info || !info.infer_url) return;
  let label = '–';
  let confidence = '';
  let check = '';
  let agreement = '';
  if (server && server.error) {
    check = `The server did not answer: ${server.error}`;
    agreement = 'error';
  } else if (server) {
    const best = bestOf(server.probabilities);
    const browserBest = bestOf(browser);
    let worst = 0;
    for (let d = 0; d < DIGITS; d++) worst = Math.max(worst, Math.abs(server.probabilities[d] - browser[d]));
    label = String(best);
    confidence = `${percent(server.probabilities[best])} sure`;
    const agrees = best === browserBest && worst <= AGREEMENT;
    if (best !== browserBest) {
      check = `Disagrees with TF.js: the server reads ${best}, the browser ${browserBest}.`;
    } else if (!agrees) {
      check = `Disagrees with TF.js: a probability differs by ${worst.toExponential(1)} (more than 1e-4).`;
    } else {
      check = `Agrees with TF.js: same digit, probabilities within ${worst.toExponential(1)}.`;
    }
    agreement = agrees ? 'agree' : 'disagree';
  }
  serverLabelOut.textContent = label;
  serverConfidenceOut.textContent = confidence;
  serverCheckOut.textContent = check;
  serverBox.dataset.agreement = agreement;
  document.body.dataset.server = agreement;
}

function showServerPanel(latest) {
  serverBox.hidden = false;
  const about = document.getElementById('about');
  const tfjs = about.querySelector('a');
  const command = document.createElement('code');
  command.textContent = 'digitserve serve --web';
  about.replaceChildren('The large answer comes from ', tfjs, ' in this browser; for the server\'s answer '
    + `each drawing's 784 numbers also go to this server (${latest.infer_url}). Served by `, command, '.');
}

function showSeen(pixels) {
  const image = seenPen.createImageData(SIDE, SIDE);
  pixels.forEach((v, i) => {
    const level = Math.round(v * 255);
    image.data.set([level, level, level, 255], i * 4);
  });
  seenPen.putImageData(image, 0, 0);
}

function showMessage(text) {
  messageBox.textContent = text;
  messageBox.hidden = false;
}

// ---- loading the model --------------------------------------------------------------------

async function loadModel() {
  if (typeof tf === 'undefined') {
    throw new Error('TensorFlow.js did not load from /vendor/tfjs/tf.min.js. Run `npm ci` in the '
      + 'project root (or pass --node-modules) and restart `digitserve web`.');
  }
  const response = await fetch('/api/latest', { cache: 'no-cache' });
  const latest = await response.json().catch(() => null);
  if (!response.ok || !latest || !latest.model_url) {
    const why = latest && latest.error ? latest.error : `/api/latest answered ${response.status}`;
    throw new Error(`No model to load: ${why}`);
  }
  statusOut.textContent = `Loading ${latest.name} version ${latest.version}…`;
  let loaded;
  try {
    loaded = await tf.loadGraphModel(latest.model_url);
  } catch (error) {
    throw new Error(`The TF.js model of ${latest.name} version ${latest.version} could not be `
      + `loaded (${error.message}). Export it again: digitserve export --version ${latest.version}`);
  }
  const check = tf.tidy(() => loaded.predict(tf.zeros([1, SIDE * SIDE])));
  const shape = check.shape.join('x');
  check.dispose();
  if (shape !== `1x${DIGITS}`) {
    throw new Error(`The TF.js model of ${latest.name} version ${latest.version} returns shape `
      + `${shape}, not 1x${DIGITS}: it is not a digit classifier for 784 pixels.`);
  }
  model = loaded;
  info = latest;
  window.digitserve.model = latest;
  if (latest.infer_url) showServerPanel(latest);
  const accuracy = typeof latest.test_accuracy === 'number'
    ? ` · test accuracy ${(100 * latest.test_accuracy).toFixed(2)}%` : '';
  statusOut.textContent = `Model ${latest.name} version ${latest.version}${accuracy}`
    + ` · TF.js ${tf.version.tfjs} (${tf.getBackend()})`;
}

buildBars();
blank();
showSeen(new Float32Array(SIDE * SIDE));
showProbabilities(null);

const ready = loadModel().then(
  () => {
    document.body.dataset.state = 'ready';
    if (strokes.length) schedulePrediction(true);
  },
  (error) => {
    document.body.dataset.state = 'error';
    statusOut.textContent = 'No model loaded: you can still draw and see the 28×28 image.';
    showMessage(error.message);
  },
);

window.digitserve = {
  ready, whenIdle, prepare, classify, model: info,
  answers: () => ({
    browser: answers.browser ? Array.from(answers.browser) : null,
    server: answers.server ? Array.from(answers.server) : null,
  }),
};
