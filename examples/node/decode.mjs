// Steps 1-2 of the preprocessing contract (mnist_pipeline/data/preprocess.py; the Python code of
// these steps is mnist_pipeline/data/decode.py) for Node.js: an image file -> greyscale in [0, 1].
//
// Decoders are JavaScript or WebAssembly shipped in their npm packages, so results do not depend
// on system libraries: pngjs for PNG and @cwasm/jpeg-turbo (libjpeg-turbo compiled to WebAssembly,
// the library Pillow uses, with the same default accurate integer IDCT and fancy upsampling) for
// JPEG; no other formats. Both give the same pixels as Pillow in the tests (greyscale, colour
// 4:4:4/4:2:2/4:2:0, progressive).
// As in Python: the pixel count is checked from the header before decoding, the EXIF orientation
// (JPEG APP1 or PNG eXIf; without it XMP's tiff:Orientation, as Pillow) is applied, and greyscale
// PNGs ignore tRNS transparency.

import { readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { inflateSync } from 'node:zlib';
import { PNG } from 'pngjs';

import { greyFromLuminance, greyFromRGBA, ImageError } from '../js/preprocess.mjs';

export const MAX_PIXELS = 50_000_000;
export const MAX_FILE_BYTES = 256 * 1024 * 1024; // the whole file is read into memory
// libjpeg-turbo as WebAssembly, one instance per load of its module: a libjpeg error ends in a
// longjmp that this build turns into a throw, leaving that instance's decoder memory behind
// (after a few hundred, every decode fails), so a failed decode loads a fresh one.
const require = createRequire(import.meta.url);
const JPEG_MODULE = require.resolve('@cwasm/jpeg-turbo');
let jpeg = require(JPEG_MODULE);

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** PNG chunks as {type, start, end, data} (start/end cover the whole chunk with its CRC). */
function* pngChunks(buf) {
  for (let pos = 8; pos + 8 <= buf.length; ) {
    const length = buf.readUInt32BE(pos);
    const end = pos + 12 + length;
    if (end > buf.length) throw new ImageError('truncated PNG');
    yield { type: buf.toString('latin1', pos + 4, pos + 8), start: pos, end, data: buf.subarray(pos + 8, pos + 8 + length) };
    pos = end;
  }
}

/** JPEG frame header: {width, height, components}, and the EXIF TIFF block if there is one.
 * Segments are read up to the scan, as Pillow does: an Exif segment may follow the frame
 * header, and several are one block, each one's data after the first's (Pillow's join). */
function jpegInfo(buf) {
  let exif = null;
  let xmp = null;
  let frame = null;
  for (let pos = 2; pos + 4 <= buf.length; ) {
    if (buf[pos] !== 0xff) throw new ImageError('corrupt JPEG marker');
    const marker = buf[pos + 1];
    if (marker === 0xff) { pos += 1; continue; }
    if (marker === 0xda || marker === 0xd9) break; // start of scan (or end of image)
    const length = buf.readUInt16BE(pos + 2);
    const body = buf.subarray(pos + 4, pos + 2 + length);
    if (marker === 0xe1 && body.toString('latin1', 0, 6) === 'Exif\0\0') {
      exif = exif === null ? body.subarray(6) : Buffer.concat([exif, body.subarray(6)]);
    }
    if (marker === 0xe1 && body.toString('latin1', 0, XMP_JPEG.length) === XMP_JPEG) {
      xmp = body.subarray(XMP_JPEG.length); // the last one, as Pillow keeps
    }
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame && frame === null) frame = { height: body.readUInt16BE(1), width: body.readUInt16BE(3), components: body[5] };
    pos += 2 + length;
  }
  if (frame === null) throw new ImageError('JPEG without a frame header');
  return { ...frame, exif, xmp };
}

const XMP_JPEG = 'http://ns.adobe.com/xap/1.0/\0';

const MAX_TEXT_CHUNK = 1 << 20; // Pillow's PngImagePlugin.MAX_TEXT_CHUNK

/** A compressed text chunk's text; a broken stream gives null (skipped, as Pillow does), one
 * over MAX_TEXT_CHUNK refuses the file, as Pillow does (a small file must not take gigabytes). */
function inflatedText(data) {
  try {
    return inflateSync(data, { maxOutputLength: MAX_TEXT_CHUNK });
  } catch (error) {
    if (error.code !== 'ERR_BUFFER_TOO_LARGE') return null;
    throw new ImageError('cannot read or decode image (a compressed text chunk over 1 MB, as Pillow refuses)');
  }
}

/** The XMP packet of a PNG's iTXt chunk `XML:com.adobe.xmp` (zlib-compressed or not; the last
 * one, as Pillow keeps), or null. Every compressed text chunk (zTXt, iTXt) is inflated within
 * Pillow's limit, whatever its key. */
function pngXmp(chunks) {
  let xmp = null;
  for (const { type, data } of chunks) {
    if (type === 'zTXt') {
      const key = data.indexOf(0);
      if (key >= 0 && data[key + 1] === 0) inflatedText(data.subarray(key + 2));
      continue;
    }
    const key = type === 'iTXt' ? data.indexOf(0) : -1;
    if (key < 0) continue;
    const [compressed, method, rest] = [data[key + 1], data[key + 2], data.subarray(key + 3)];
    const lang = rest.indexOf(0);
    const translated = lang < 0 ? -1 : rest.indexOf(0, lang + 1);
    if (translated < 0 || (compressed !== 0 && method !== 0)) continue;
    const text = compressed ? inflatedText(rest.subarray(translated + 1)) : rest.subarray(translated + 1);
    if (text !== null && data.toString('latin1', 0, key) === 'XML:com.adobe.xmp') xmp = text;
  }
  return xmp;
}

/** The orientation: EXIF's tag, else XMP's `tiff:Orientation` (as Pillow's getexif), else 1. */
function orientation(exif, xmp) {
  const fromXmp = xmp && /tiff:Orientation(="|>)([0-9])/.exec(xmp.toString('latin1'));
  return exifOrientation(exif) ?? (fromXmp ? Number(fromXmp[2]) : 1);
}

/** Orientation tag (0x0112) of a TIFF/EXIF block, null when absent or unreadable. */
function exifOrientation(tiff) {
  // some writers start a PNG's eXIf chunk with JPEG's APP1 prefix; Pillow reads past it
  if (tiff && tiff.toString('latin1', 0, 6) === 'Exif\0\0') tiff = tiff.subarray(6);
  if (!tiff || tiff.length < 8) return null;
  const le = tiff.toString('latin1', 0, 2) === 'II';
  const u16 = (o) => (le ? tiff.readUInt16LE(o) : tiff.readUInt16BE(o));
  const u32 = (o) => (le ? tiff.readUInt32LE(o) : tiff.readUInt32BE(o));
  try {
    const ifd = u32(4);
    for (let i = 0, n = u16(ifd); i < n; i++) {
      const entry = ifd + 2 + 12 * i;
      if (u16(entry) === 0x0112) return u16(entry + 8);
    }
  } catch {
    return null; // a truncated EXIF block is ignored, as Pillow does
  }
  return null;
}

/** Pillow's ImageOps.exif_transpose on a greyscale image (orientations 2-8). */
function transpose(img, orientation) {
  const { data, width: w, height: h } = img;
  const swap = orientation >= 5 && orientation <= 8;
  const ow = swap ? h : w, oh = swap ? w : h;
  const source = {
    2: (r, c) => [r, w - 1 - c], 3: (r, c) => [h - 1 - r, w - 1 - c], 4: (r, c) => [h - 1 - r, c],
    5: (r, c) => [c, r], 6: (r, c) => [h - 1 - c, r], 7: (r, c) => [h - 1 - c, w - 1 - r],
    8: (r, c) => [c, w - 1 - r],
  }[orientation];
  if (!source) return img;
  const out = new Float32Array(ow * oh);
  for (let r = 0; r < oh; r++) {
    for (let c = 0; c < ow; c++) {
      const [sr, sc] = source(r, c);
      out[r * ow + c] = data[sr * w + sc];
    }
  }
  return { data: out, width: ow, height: oh };
}

function checkSize(width, height) {
  if (width * height > MAX_PIXELS) {
    throw new ImageError(`${width}x${height} is ${(width * height).toLocaleString('en')} pixels, more than the limit of ${MAX_PIXELS.toLocaleString('en')} (possible decompression bomb)`);
  }
}

function decodePng(buf) {
  const chunks = [...pngChunks(buf)];
  const ihdr = chunks.find((c) => c.type === 'IHDR');
  if (!ihdr) throw new ImageError('PNG without IHDR');
  const [width, height] = [ihdr.data.readUInt32BE(0), ihdr.data.readUInt32BE(4)];
  const [depth, colorType] = [ihdr.data[8], ihdr.data[9]];
  checkSize(width, height);
  // Pillow reads greyscale PNGs as mode L / I;16 and the Python module ignores their tRNS;
  // pngjs would zero those pixels, so the chunk is dropped before decoding.
  const keep = colorType === 0 ? chunks.filter((c) => c.type !== 'tRNS') : chunks;
  const bytes = Buffer.concat([PNG_SIGNATURE, ...keep.map((c) => buf.subarray(c.start, c.end))]);
  const png = PNG.sync.read(bytes, { skipRescale: true });
  const px = png.data;
  const n = width * height;
  let grey;
  if (colorType === 0) {
    const values = new Float64Array(n);
    const max = 2 ** depth - 1;
    for (let i = 0; i < n; i++) values[i] = depth === 16 ? px[4 * i] : Math.floor((px[4 * i] * 255) / max + 0.5);
    grey = greyFromLuminance(values, width, height, depth === 16 ? 65535 : 255);
  } else {
    // Pillow keeps the high byte of 16-bit colour samples; palettes are already 8-bit.
    let rgba = px;
    if (depth === 16) { // a plain loop: Uint8Array.from with a function builds a JS array first
      rgba = new Uint8Array(px.length);
      for (let i = 0; i < px.length; i++) rgba[i] = px[i] >> 8;
    }
    const hasAlpha = colorType === 4 || colorType === 6 || chunks.some((c) => c.type === 'tRNS');
    grey = greyFromRGBA(rgba, width, height, hasAlpha);
  }
  return transpose(grey, orientation(chunks.find((c) => c.type === 'eXIf')?.data, pngXmp(chunks)));
}

function decodeJpeg(buf) {
  const info = jpegInfo(buf);
  checkSize(info.width, info.height);
  if (info.components === 4) {
    // libjpeg-turbo's WebAssembly build cannot convert CMYK, and a failed decode there leaks its
    // buffers (later decodes then fail): refused before decoding. Python reads them.
    throw new ImageError('a CMYK JPEG: this example reads greyscale and RGB JPEGs (save it as RGB)');
  }
  let image;
  try {
    image = jpeg.decode(buf); // RGBA; greyscale JPEGs come back with R = G = B = L
  } catch (err) {
    delete require.cache[JPEG_MODULE];
    jpeg = require(JPEG_MODULE);
    const why = err.message === 'Not implemented' ? 'a corrupt or unsupported JPEG' : err.message;
    throw new ImageError(`cannot read or decode image (libjpeg-turbo: ${why})`);
  }
  const { width, height, data } = image;
  let grey;
  if (info.components === 1) {
    const luma = new Uint8Array(width * height);
    for (let i = 0; i < luma.length; i++) luma[i] = data[4 * i];
    grey = greyFromLuminance(luma, width, height, 255);
  } else {
    grey = greyFromRGBA(data, width, height, false);
  }
  return transpose(grey, orientation(info.exif, info.xmp));
}

/** Steps 1-2: decode `path` into {data: Float32Array, width, height}; errors name no file. */
export function loadGrey(path) {
  let stat;
  try {
    stat = statSync(path);
  } catch {
    throw new ImageError('no such file');
  }
  if (!stat.isFile()) throw new ImageError('not a file');
  if (stat.size > MAX_FILE_BYTES) {
    throw new ImageError(`${stat.size} bytes, over this example's limit of ${MAX_FILE_BYTES}`);
  }
  let buf;
  try {
    buf = readFileSync(path);
  } catch (err) {
    throw new ImageError(`cannot read the file (${err.code ?? err.message})`);
  }
  try {
    if (buf.subarray(0, 8).equals(PNG_SIGNATURE)) return decodePng(buf);
    if (buf[0] === 0xff && buf[1] === 0xd8) return decodeJpeg(buf);
  } catch (err) {
    if (err instanceof ImageError) throw err;
    throw new ImageError(`cannot read or decode image (${err.message})`);
  }
  throw new ImageError('not a recognised image file (this example reads PNG and JPEG)');
}
