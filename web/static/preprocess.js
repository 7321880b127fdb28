// MNIST-style preparation of a drawn digit: the JavaScript twin of src/digitserve/preprocess.py.
//
// Crop to the ink, fit in 20x20 keeping the aspect ratio (area averaging), centre by centre of
// mass in the 28x28 field, brightest pixel 1.0. Every step works on 8-bit levels in integers
// (exact in doubles below 2**53); the only rounding is the final division and the float32
// store, so the result equals Python's to the bit. The shared test vectors prove it
// (tests/data/preprocess_vectors.json).

export const SIDE = 28;
export const BOX = 20;
export const INK_THRESHOLD = 32;

/**
 * The 784 model inputs for an image of 8-bit ink levels (ink high).
 *
 * @param {ArrayLike<number>} data levels 0..255; with stride 4 and an RGBA ImageData buffer
 *     the red channel is read (the page draws white on opaque black, so R = G = B)
 * @param {number} width
 * @param {number} height
 * @param {number} [stride=1] array elements per pixel
 * @returns {{pixels: Float32Array, box: null | {top: number, left: number, rows: number, cols: number}}}
 */
export function toMnist(data, width, height, stride = 1) {
  const pixels = new Float32Array(SIDE * SIDE);
  let top = height;
  let bottom = -1;
  let left = width;
  let right = -1;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      if (data[(y * width + x) * stride] >= INK_THRESHOLD) {
        if (y < top) top = y;
        if (y > bottom) bottom = y;
        if (x < left) left = x;
        if (x > right) right = x;
      }
    }
  }
  if (bottom < 0) return { pixels, box: null };

  const h = bottom - top + 1;
  const w = right - left + 1;
  const [fitH, fitW] = fittedSize(h, w);
  const rowsW = areaWeights(h, fitH);
  const colsW = areaWeights(w, fitW);

  // Columns first: partial[y][j] = sum_x colsW[j][x] * level(y, x), then rows.
  const partial = new Float64Array(h * fitW);
  for (let y = 0; y < h; y++) {
    const base = ((top + y) * width + left) * stride;
    for (let j = 0; j < fitW; j++) {
      const weights = colsW[j];
      let sum = 0;
      for (let x = weights.first; x < weights.first + weights.values.length; x++) {
        const level = data[base + x * stride];
        if (level >= INK_THRESHOLD) sum += weights.values[x - weights.first] * level;
      }
      partial[y * fitW + j] = sum;
    }
  }
  const sums = new Float64Array(fitH * fitW);
  let largest = 0;
  for (let i = 0; i < fitH; i++) {
    const weights = rowsW[i];
    for (let j = 0; j < fitW; j++) {
      let sum = 0;
      for (let y = weights.first; y < weights.first + weights.values.length; y++) {
        sum += weights.values[y - weights.first] * partial[y * fitW + j];
      }
      sums[i * fitW + j] = sum;
      if (sum > largest) largest = sum;
    }
  }

  const rowMass = new Array(fitH).fill(0);
  const colMass = new Array(fitW).fill(0);
  for (let i = 0; i < fitH; i++) {
    for (let j = 0; j < fitW; j++) {
      rowMass[i] += sums[i * fitW + j];
      colMass[j] += sums[i * fitW + j];
    }
  }
  const top28 = centreOffset(rowMass, fitH);
  const left28 = centreOffset(colMass, fitW);
  for (let i = 0; i < fitH; i++) {
    for (let j = 0; j < fitW; j++) {
      pixels[(top28 + i) * SIDE + left28 + j] = sums[i * fitW + j] / largest;
    }
  }
  return { pixels, box: { top: top28, left: left28, rows: fitH, cols: fitW } };
}

/** [rows, cols] of the ink box scaled so its longer side is 20, each side at least 1. */
export function fittedSize(height, width) {
  const longer = Math.max(height, width);
  const side = (n) => Math.max(1, Math.floor((2 * BOX * n + longer) / (2 * longer)));
  return [side(height), side(width)];
}

/**
 * Area-averaging weights: for each of `target` output pixels, the integer overlap (in
 * 1/target of a source pixel) with each source pixel it touches, as {first, values}.
 */
export function areaWeights(source, target) {
  const rows = [];
  for (let i = 0; i < target; i++) {
    const start = i * source;
    const end = (i + 1) * source;
    const first = Math.floor(start / target);
    const values = [];
    for (let j = first; j * target < end && j < source; j++) {
      const overlap = Math.min(end, (j + 1) * target) - Math.max(start, j * target);
      values.push(Math.max(overlap, 0));
    }
    rows.push({ first, values });
  }
  return rows;
}

/** Start of a box in the 28-pixel field that puts its centre of mass in the middle. */
export function centreOffset(masses, length) {
  let total = 0;
  let moment = 0;
  masses.forEach((mass, index) => {
    total += mass;
    moment += index * mass;
  });
  // floor(14 - moment / total), the centre of mass rounded half up onto pixel 13.5
  const start = Math.floor(((SIDE / 2) * total - moment) / total);
  return Math.min(Math.max(start, 0), SIDE - length);
}
