// The page: checks WebGPU, fetches the model files listed in model-manifest.json (written by
// scripts/build-web.sh), loads them into the wasm Generator, and generates on demand with
// per-step progress. The PNG it shows and downloads carries the CLI's A1111 `parameters` text.
//
// States in #status[data-state] (scripts/browser_test.py waits on them): loading → ready →
// running → done, or error (with the reason) at any point.
//
// The wasm is imported only once WebGPU is known to work, so a browser without it still gets the
// reason rather than a blank page.

const $ = (id) => document.getElementById(id);
const progress = $('progress');
let generator = null;
let pngUrl = null;

function status(state, text) {
  $('status').dataset.state = state;
  $('status').textContent = text;
}

function megabytes(bytes) {
  return (bytes / 1e6).toFixed(1) + ' MB';
}

// A clear reason when the browser cannot run WebGPU compute, or null.
async function webGpuProblem() {
  if (!('gpu' in navigator)) {
    return 'This browser has no WebGPU (navigator.gpu is missing). Use a recent Chrome, Edge or '
      + 'Safari, or Firefox with WebGPU enabled; Chromium on Linux needs --enable-unsafe-webgpu. '
      + 'WebGPU also needs a secure context: https, or http://127.0.0.1 / localhost.';
  }
  const adapter = await navigator.gpu.requestAdapter();
  if (!adapter) {
    return 'WebGPU is available but found no GPU adapter (navigator.gpu.requestAdapter() returned '
      + 'null): the GPU may be blocklisted or WebGPU disabled in this browser\'s settings.';
  }
  return null;
}

// Every file of the manifest as {path → bytes}, with download progress.
async function fetchModel() {
  const response = await fetch('model-manifest.json');
  if (!response.ok) throw new Error(`model-manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const total = manifest.files.reduce((sum, f) => sum + f.size, 0);
  const files = new Map();
  let done = 0;
  progress.max = total;
  for (const file of manifest.files) {
    const url = manifest.base + file.path;
    status('loading', `Downloading ${manifest.name}: ${megabytes(done)} of ${megabytes(total)} (${file.path})`);
    const r = await fetch(url);
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    files.set(file.path, new Uint8Array(await r.arrayBuffer()));
    done += file.size;
    progress.value = done;
  }
  return { name: manifest.name, files, total };
}

async function start() {
  const problem = await webGpuProblem();
  if (problem) {
    status('error', problem);
    return;
  }
  const wasm = await import('./pkg/stipple_web.js');
  await wasm.default();
  const model = await fetchModel();
  status('loading', `Loading ${model.name} onto the GPU…`);
  const t0 = performance.now();
  generator = await wasm.Generator.load(model.files, model.name);
  const seconds = (performance.now() - t0) / 1000;
  $('status').dataset.loadSeconds = seconds.toFixed(2);
  status('ready', `Ready: ${model.name} (${megabytes(model.total)}) on ${generator.adapter}, loaded in ${seconds.toFixed(1)} s.`);
  $('generate').disabled = false;
}

async function generate() {
  const steps = Number($('steps').value);
  const cfg = Number($('cfg').value);
  const seed = Number($('seed').value);
  $('generate').disabled = true;
  progress.max = steps;
  progress.value = 0;
  $('status').dataset.previews = '0';
  status('running', 'Encoding the prompt…');
  const t0 = performance.now();
  try {
    const png = await generator.generate(
      $('prompt').value, $('negative').value, steps, cfg, seed, $('scheduler').value, 0, 0,
      (step, total, preview) => {
        progress.max = total;
        progress.value = step;
        if (preview) showPreview(preview);
        status('running', step < total ? `Step ${step} of ${total}` : `Step ${total} of ${total}; decoding…`);
        return true;
      });
    const seconds = (performance.now() - t0) / 1000;
    showImage(png, seed);
    $('status').dataset.seconds = seconds.toFixed(2);
    status('done', `Done in ${seconds.toFixed(1)} s.`);
  } catch (e) {
    status('error', `Generation failed: ${e.message ?? e}`);
  } finally {
    $('generate').disabled = false;
  }
}

// Draws a live preview ({width, height, rgb}: the predicted image so far) over the last image.
function showPreview({ width, height, rgb }) {
  const canvas = $('preview');
  canvas.width = width;
  canvas.height = height;
  const rgba = new Uint8ClampedArray(width * height * 4);
  for (let i = 0; i < width * height; i++) {
    rgba.set(rgb.subarray(3 * i, 3 * i + 3), 4 * i);
    rgba[4 * i + 3] = 255;
  }
  canvas.getContext('2d').putImageData(new ImageData(rgba, width, height), 0, 0);
  canvas.hidden = false;
  $('image').hidden = true;
  const s = $('status');
  s.dataset.previews = String(Number(s.dataset.previews ?? 0) + 1);
}

// Shows the PNG and arms the download button; prints its `parameters` text chunk.
function showImage(png, seed) {
  if (pngUrl) URL.revokeObjectURL(pngUrl);
  pngUrl = URL.createObjectURL(new Blob([png], { type: 'image/png' }));
  $('image').src = pngUrl;
  $('image').hidden = false;
  $('preview').hidden = true;
  $('params').textContent = pngText(png, 'parameters') ?? '';
  $('download').disabled = false;
  $('download').onclick = () => {
    const a = document.createElement('a');
    a.href = pngUrl;
    a.download = `stipple-${seed}.png`;
    a.click();
  };
}

// The text of a PNG tEXt/iTXt chunk (uncompressed) with this keyword, or null.
function pngText(png, keyword) {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  const latin1 = new TextDecoder('latin1');
  for (let at = 8; at + 8 <= png.length;) {
    const length = view.getUint32(at);
    const type = latin1.decode(png.subarray(at + 4, at + 8));
    const data = png.subarray(at + 8, at + 8 + length);
    const nul = data.indexOf(0);
    if ((type === 'tEXt' || type === 'iTXt') && latin1.decode(data.subarray(0, nul)) === keyword) {
      if (type === 'tEXt') return latin1.decode(data.subarray(nul + 1));
      // iTXt: compression flag, method, language\0, translated keyword\0, UTF-8 text.
      let rest = data.subarray(nul + 3);
      rest = rest.subarray(rest.indexOf(0) + 1);
      rest = rest.subarray(rest.indexOf(0) + 1);
      return new TextDecoder().decode(rest);
    }
    at += 12 + length;
  }
  return null;
}

$('generate').onclick = generate;
$('random-seed').onclick = () => {
  $('seed').value = Math.floor(Math.random() * 2 ** 32);
};
$('scheduler').onchange = () => {
  // The CLI's default: 4 steps for LCM, 20 otherwise (unless the user chose a count).
  if (!$('steps').dataset.touched) $('steps').value = $('scheduler').value === 'lcm' ? 4 : 20;
};
$('steps').oninput = () => { $('steps').dataset.touched = '1'; };

start().catch((e) => status('error', `Loading failed: ${e.message ?? e}`));
