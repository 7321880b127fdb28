// Run a TF.js graph model on float32 pixels in Node.js with @tensorflow/tfjs, as a web page would.
//
//   node tfjs_predict.mjs --project DIR --model DIR/model.json --input pixels.f32 --output probs.f32
//
// --project is the folder whose node_modules holds @tensorflow/tfjs (the project's `npm ci`).
// The input file is N x 784 little-endian float32; the output file gets N x 10 float32.
// The model is loaded by tf.loadGraphModel through the same artifact parser a browser uses
// (weights read from the shards model.json names), on the backend --backend names.
// One JSON line on stdout reports what ran; errors go to stderr with exit code 1.

import { readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { parseArgs } from 'node:util';

const IMAGE_SIZE = 784;
const NUM_CLASSES = 10;

const { values: opts } = parseArgs({
  options: {
    project: { type: 'string', default: process.cwd() },
    model: { type: 'string' },
    input: { type: 'string' },
    output: { type: 'string' },
    batch: { type: 'string', default: '1000' },
    'input-name': { type: 'string', default: 'pixels' },
    'output-name': { type: 'string', default: 'probabilities' },
    backend: { type: 'string', default: 'cpu' },
  },
});

function fail(message) {
  process.stderr.write(`tfjs_predict: ${message}\n`);
  process.exit(1);
}

for (const key of ['model', 'input', 'output']) {
  if (!opts[key]) fail(`--${key} is required`);
}

const require = createRequire(path.join(path.resolve(opts.project), 'package.json'));
let tf;
try {
  tf = require('@tensorflow/tfjs');
} catch (err) {
  fail(`cannot load @tensorflow/tfjs from ${opts.project}/node_modules (${err.message}); run npm ci`);
}

// An IOHandler reading model.json and its shards from disk: Node has no file:// loader without
// tfjs-node, and getModelArtifactsForJSON is what tf.io.http uses after fetching.
function fileHandler(modelPath) {
  const folder = path.dirname(modelPath);
  return {
    async load() {
      const modelJSON = JSON.parse(await readFile(modelPath, 'utf8'));
      return tf.io.getModelArtifactsForJSON(modelJSON, async (manifest) => {
        const specs = [];
        const buffers = [];
        for (const group of manifest) {
          specs.push(...group.weights);
          for (const shard of group.paths) {
            const bytes = await readFile(path.join(folder, shard));
            buffers.push(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
          }
        }
        return [specs, buffers];
      });
    },
  };
}

// 'cpu' is TF.js's pure-JavaScript reference backend; 'wasm' (@tensorflow/tfjs-backend-wasm,
// XNNPACK kernels) is the one browsers without WebGL use, and is far faster on convolutions.
async function useBackend(name) {
  if (name === 'wasm') {
    const wasm = require('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm')) + path.sep);
  }
  if (!(await tf.setBackend(name))) fail(`TF.js backend ${name} could not start`);
  await tf.ready();
}

async function main() {
  await useBackend(opts.backend);
  const started = performance.now();
  const model = await tf.loadGraphModel(fileHandler(path.resolve(opts.model)));
  const raw = await readFile(opts.input);
  if (raw.byteLength % (4 * IMAGE_SIZE) !== 0) fail(`${opts.input} is not N x ${IMAGE_SIZE} float32`);
  const pixels = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength));
  const count = pixels.length / IMAGE_SIZE;
  const batch = Math.max(1, parseInt(opts.batch, 10));
  const probabilities = new Float32Array(count * NUM_CLASSES);
  for (let start = 0; start < count; start += batch) {
    const size = Math.min(batch, count - start);
    const output = tf.tidy(() => {
      const x = tf.tensor2d(pixels.subarray(start * IMAGE_SIZE, (start + size) * IMAGE_SIZE),
                            [size, IMAGE_SIZE], 'float32');
      return model.execute({ [opts['input-name']]: x }, opts['output-name']);
    });
    if (output.shape.length !== 2 || output.shape[0] !== size || output.shape[1] !== NUM_CLASSES) {
      fail(`the model returned shape [${output.shape}] for ${size} images, expected [${size}, ${NUM_CLASSES}]`);
    }
    probabilities.set(output.dataSync(), start * NUM_CLASSES);
    output.dispose();
  }
  await writeFile(opts.output, new Uint8Array(probabilities.buffer));
  process.stdout.write(JSON.stringify({
    tfjs: tf.version.tfjs,
    backend: tf.getBackend(),
    inputs: model.inputs.map(({ name, shape, dtype }) => ({ name, shape, dtype })),
    outputs: model.outputs.map(({ name, shape, dtype }) => ({ name, shape, dtype })),
    images: count,
    seconds: (performance.now() - started) / 1000,
  }) + '\n');
}

main().catch((err) => fail(err.stack || String(err)));
