// MNIST-style preprocessing, a line-by-line port of mnist_pipeline/data/preprocess.py (steps 2-8 of its
// docstring). Shared by the Node.js example and the web page; no dependencies, no DOM.
//
// Arrays are row-major Float32Array with explicit width/height. Python computes in float32 where
// numpy does, so this port rounds to float32 (Math.fround) at the same places: the 28x28 result
// matches Python's to float32 precision (the tests compare them).

export const MIN_CONTRAST = 0.1;
export const INK_THRESHOLD = 0.2;
export const NOISE_MADS = 6.0;
export const MAX_THRESHOLD = 0.5;
export const BOX = 20;
export const SIZE = 28;
export const CENTRE = 14.0;
const f32 = Math.fround;
const LUMA = [f32(0.299), f32(0.587), f32(0.114)];

/** An input that cannot be used (undecodable, too large, blank). */
export class ImageError extends Error {
  name = 'ImageError';
}

/** round(x) of the Python module: floor(x + 0.5). */
export const roundHalfUp = (x) => Math.floor(x + 0.5);

/**
 * Step 2 for 8-bit RGBA pixels (a canvas's ImageData, or a decoded PNG/JPEG): greyscale in [0, 1],
 * 0 black. With `hasAlpha`, composited over white, or over black when nothing shows on white
 * (light ink on a transparent sheet).
 */
export function greyFromRGBA(rgba, width, height, hasAlpha = true) {
  if (!hasAlpha) return composite(rgba, width, height, null);
  const onWhite = composite(rgba, width, height, 255);
  let [lo, hi] = [Infinity, -Infinity];
  for (const g of onWhite.data) [lo, hi] = [Math.min(lo, g), Math.max(hi, g)];
  return hi - lo >= MIN_CONTRAST ? onWhite : composite(rgba, width, height, 0);
}

/** Luma of each pixel, over a `paper` of 255 (white) or 0 (black) by its alpha; null: opaque. */
function composite(rgba, width, height, paper) {
  const grey = new Float32Array(width * height);
  for (let i = 0; i < grey.length; i++) {
    const p = 4 * i;
    let g = f32(LUMA[0] * rgba[p]);
    g = f32(g + f32(LUMA[1] * rgba[p + 1]));
    g = f32(g + f32(LUMA[2] * rgba[p + 2]));
    if (paper !== null) {
      const a = f32(rgba[p + 3] / 255);
      g = f32(f32(g * a) + f32(paper * f32(1 - a)));
    }
    grey[i] = Math.min(Math.max(f32(g / 255), 0), 1);
  }
  return { data: grey, width, height };
}

/** Step 2 for one-channel images: `scale` 255 (8-bit L) or 65535 (16-bit I;16). */
export function greyFromLuminance(values, width, height, scale = 255) {
  const grey = new Float32Array(width * height);
  for (let i = 0; i < grey.length; i++) grey[i] = Math.min(f32(values[i] / scale), 1);
  return { data: grey, width, height };
}

function median(values) {
  const v = Float32Array.from(values).sort();
  const mid = v.length >> 1;
  return v.length % 2 ? v[mid] : f32(v[mid - 1] + v[mid]) / 2;
}

function border({ data, width: w, height: h }) {
  if (h < 3 || w < 3) return data;
  const out = [];
  for (let c = 0; c < w; c++) out.push(data[c], data[(h - 1) * w + c]);
  for (let r = 1; r < h - 1; r++) out.push(data[r * w], data[r * w + w - 1]);
  return out;
}

/**
 * Step 3: whether the ink is darker than the background: a light background says so, unless
 * nothing lies far enough below it to be ink while something lies above it.
 */
function darkInk(data, background) {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of data) {
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  const light = background > 0.5;
  const [reach, other] = light ? [background - lo, hi - background] : [hi - background, background - lo];
  const flipped = reach < MIN_CONTRAST && MIN_CONTRAST <= other;
  return light !== flipped;
}

/** Steps 3-4: greyscale -> ink in [0, 1] (0 background), faint values zeroed. */
export function inkMap(grey) {
  const b = median(border(grey));
  const dark = darkInk(grey.data, b);
  const bg = dark ? 1 - b : b;
  const ink = dark ? grey.data.map((g) => f32(1 - g)) : Float32Array.from(grey.data);
  const peak = ink.reduce((m, v) => Math.max(m, v), -Infinity);
  if (peak - bg < MIN_CONTRAST) {
    const contrast = Math.max(peak - bg, 0).toFixed(3);
    throw new ImageError(`blank image: no ink found (contrast ${contrast} < ${MIN_CONTRAST})`);
  }
  const bg32 = f32(bg);
  const range32 = f32(peak - bg);
  const scaled = ink.map((v) => f32(f32(v - bg32) / range32));
  const { width, height } = grey;
  const noise = median(border({ data: scaled, width, height }).map(Math.abs));
  // Computed in float64, compared in float32 (as numpy compares a float32 array).
  const threshold = f32(Math.min(Math.max(INK_THRESHOLD, NOISE_MADS * noise), MAX_THRESHOLD));
  for (let i = 0; i < ink.length; i++) {
    const v = Math.min(Math.max(scaled[i], 0), 1);
    ink[i] = v < threshold ? 0 : v;
  }
  return { data: ink, width, height };
}

/** Step 5, first part: a copy with every isolated ink pixel (no 8-neighbour inked) zeroed. */
export function despeckle({ data, width, height }) {
  const out = Float32Array.from(data);
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      if (data[r * width + c] === 0) continue;
      let inked = false;
      for (let rr = Math.max(r - 1, 0); rr <= Math.min(r + 1, height - 1) && !inked; rr++) {
        for (let cc = Math.max(c - 1, 0); cc <= Math.min(c + 1, width - 1); cc++) {
          if ((rr !== r || cc !== c) && data[rr * width + cc] !== 0) { inked = true; break; }
        }
      }
      if (!inked) out[r * width + c] = 0;
    }
  }
  return { data: out, width, height };
}

/**
 * Step 5, second part: the ink of the main 8-connected component (the largest sum of ink, the
 * first in row-major order on a tie) and of every component whose bounding box overlaps its
 * box; every other component's ink zeroed.
 */
export function keepDigit({ data, width, height }) {
  const labels = new Int32Array(data.length); // 0: no ink; components numbered in row-major order
  const boxes = []; // [top, bottom, left, right] per component
  const stack = [];
  for (let start = 0; start < data.length; start++) {
    if (data[start] === 0 || labels[start] !== 0) continue;
    const box = [height, -1, width, -1];
    boxes.push(box);
    labels[start] = boxes.length;
    stack.push(start);
    while (stack.length) {
      const i = stack.pop();
      const r = Math.floor(i / width), c = i % width;
      box[0] = Math.min(box[0], r); box[1] = Math.max(box[1], r);
      box[2] = Math.min(box[2], c); box[3] = Math.max(box[3], c);
      for (let rr = Math.max(r - 1, 0); rr <= Math.min(r + 1, height - 1); rr++) {
        for (let cc = Math.max(c - 1, 0); cc <= Math.min(c + 1, width - 1); cc++) {
          const j = rr * width + cc;
          if (data[j] !== 0 && labels[j] === 0) { labels[j] = boxes.length; stack.push(j); }
        }
      }
    }
  }
  if (boxes.length <= 1) return { data, width, height };
  const mass = new Float64Array(boxes.length);
  for (let i = 0; i < data.length; i++) if (labels[i]) mass[labels[i] - 1] += data[i];
  let main = 0;
  for (let k = 1; k < mass.length; k++) if (mass[k] > mass[main]) main = k;
  const [top, bottom, left, right] = boxes[main];
  const kept = boxes.map(([t, b, l, r]) => t <= bottom && b >= top && l <= right && r >= left);
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) if (labels[i] && kept[labels[i] - 1]) out[i] = data[i];
  return { data: out, width, height };
}

/** Step 5, last part: the bounding box of the nonzero pixels. */
export function cropToInk({ data, width, height }) {
  let top = height, bottom = -1, left = width, right = -1;
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      if (data[r * width + c] !== 0) {
        top = Math.min(top, r); bottom = Math.max(bottom, r);
        left = Math.min(left, c); right = Math.max(right, c);
      }
    }
  }
  if (bottom < 0) throw new ImageError('blank image: no ink found');
  const w = right - left + 1, h = bottom - top + 1;
  const out = new Float32Array(w * h);
  for (let r = 0; r < h; r++) out.set(data.subarray((top + r) * width + left, (top + r) * width + right + 1), r * w);
  return { data: out, width: w, height: h };
}

// Pillow's resampling coefficients (libImaging/Resample.c, precompute_coeffs) for the BILINEAR
// (triangle) filter: support widened by the reduction factor, weights normalised per output.
function coefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = filterscale; // BILINEAR support 1.0 * filterscale
  const ss = 1 / filterscale;
  const out = [];
  for (let xx = 0; xx < outSize; xx++) {
    const centre = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(centre - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(centre + support + 0.5), inSize) - xmin;
    const k = [];
    let ww = 0;
    for (let x = 0; x < xmax; x++) {
      const w = Math.max(0, 1 - Math.abs((x + xmin - centre + 0.5) * ss));
      k.push(w);
      ww += w;
    }
    out.push({ xmin, k: ww !== 0 ? k.map((w) => w / ww) : k });
  }
  return out;
}

function resizeRows(img, outW) {
  const { data, width, height } = img;
  const co = coefficients(width, outW);
  const out = new Float32Array(outW * height);
  for (let y = 0; y < height; y++) {
    for (let xx = 0; xx < outW; xx++) {
      const { xmin, k } = co[xx];
      let s = 0; // float64 sum of float32 pixels, stored as float32, as in Pillow
      for (let x = 0; x < k.length; x++) s += data[y * width + xmin + x] * k[x];
      out[y * outW + xx] = s;
    }
  }
  return { data: out, width: outW, height };
}

function resizeColumns(img, outH) {
  const { data, width, height } = img;
  const co = coefficients(height, outH);
  const out = new Float32Array(width * outH);
  for (let yy = 0; yy < outH; yy++) {
    const { xmin: ymin, k } = co[yy];
    for (let x = 0; x < width; x++) {
      let s = 0;
      for (let y = 0; y < k.length; y++) s += data[(ymin + y) * width + x] * k[y];
      out[yy * width + x] = s;
    }
  }
  return { data: out, width, height: outH };
}

/**
 * Pillow's Image.resize(size, BILINEAR) of a mode "F" image. Pillow 13 (ImagingResampleInner)
 * runs the vertical pass first when the height shrinks by more than twice the width's shrink,
 * else the horizontal one; each pass is skipped when its size does not change.
 */
export function resizeBilinear(img, outW, outH) {
  const dh = img.height - outH, dw = img.width - outW;
  const horizontalFirst = !(dh > 0 && dh > 2 * dw);
  const rows = (im) => (outW !== im.width ? resizeRows(im, outW) : im);
  const cols = (im) => (outH !== im.height ? resizeColumns(im, outH) : im);
  return horizontalFirst ? cols(rows(img)) : rows(cols(img));
}

/** Step 6: scale so the longer side is `box`, keeping the aspect ratio. */
export function fitBox(crop, box = BOX) {
  const s = box / Math.max(crop.width, crop.height);
  const w = Math.max(1, roundHalfUp(crop.width * s));
  const h = Math.max(1, roundHalfUp(crop.height * s));
  return resizeBilinear(crop, w, h);
}

/** Step 7: paste into a size x size field with the centre of mass at (centre, centre). */
export function centreByMass({ data, width, height }, size = SIZE, centre = CENTRE) {
  let total = 0, sumR = 0, sumC = 0;
  for (let r = 0; r < height; r++) {
    for (let c = 0; c < width; c++) {
      const v = data[r * width + c];
      total += v; sumR += v * r; sumC += v * c;
    }
  }
  const top = roundHalfUp(centre - sumR / total);
  const left = roundHalfUp(centre - sumC / total);
  const out = new Float32Array(size * size);
  for (let r = Math.max(top, 0); r < Math.min(top + height, size); r++) {
    for (let c = Math.max(left, 0); c < Math.min(left + width, size); c++) {
      out[r * size + c] = data[(r - top) * width + (c - left)];
    }
  }
  return out;
}

/** Steps 3-8: greyscale {data, width, height} (0 black, 1 white) -> Float32Array(784), 28x28. */
export function toMnist(grey) {
  if (!grey.width || !grey.height) throw new ImageError('expected a non-empty greyscale image');
  return centreByMass(fitBox(cropToInk(keepDigit(despeckle(inkMap(grey))))));
}
