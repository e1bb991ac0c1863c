// The web demo: runs the models listed in models/models.json in LiteRT.js (WASM, XNNPACK
// on the CPU) on the bundled MNIST digits, and shows per-model file size, load time and
// per-inference latency (a table and two bar charts). Results are also put on
// `window.demoResults` for tests/demo_web_test.py and bench/web_bench.py.
//
// URL parameters: ?repeats=N inferences per digit for the latency (default 20).
import {loadAndCompile, loadLiteRt, Tensor} from '@litertjs/core';

const params = new URLSearchParams(location.search);
const REPEATS = Math.max(1, Number(params.get('repeats') || 20));
const COLORS = {dense: '#5b8def', sparse: '#f0a030', shrunk_cnn: '#3aa76d'};

function setStatus(text, error = false) {
  const el = document.getElementById('status');
  el.textContent = text;
  el.className = error ? 'error' : '';
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

// Runs one float32 input through the model; returns the first output as a plain array.
async function infer(model, pixels, shape) {
  const input = new Tensor(pixels, shape);
  const outputs = await model.run(input);
  input.delete();
  const values = Array.from(outputs[0].toTypedArray());
  for (const t of outputs) t.delete();
  return values;
}

const argmax = (v) => v.indexOf(Math.max(...v));

// Times `pass` (one pass over `perPass` inferences) `repeats` times; returns the mean
// time per inference (ms) of the faster half of the passes.
async function fastHalfMs(repeats, perPass, pass) {
  const times = [];
  for (let r = 0; r < repeats; r++) {
    const t = performance.now();
    await pass();
    times.push((performance.now() - t) / perPass);
  }
  times.sort((a, b) => a - b);
  const half = times.slice(0, Math.max(1, times.length >> 1));
  return half.reduce((a, b) => a + b, 0) / half.length;
}

async function runModel(spec, images) {
  const t0 = performance.now();
  const bytes = await fetchBytes(spec.file);
  const model = await loadAndCompile(bytes, {accelerator: 'wasm'});
  const loadMs = performance.now() - t0;
  try {
    const detail = model.getInputDetails()[0];
    if (detail.dtype !== 'float32') {
      throw new Error(`${spec.file}: input dtype ${detail.dtype}, expected float32`);
    }
    const outputs = [];
    for (const img of images) outputs.push(await infer(model, img, spec.input_shape));
    // Warm-up (JIT of the JavaScript paths, caches): untimed, else the first model pays.
    for (let r = 0; r < Math.max(2, REPEATS / 4); r++) {
      for (const img of images) await infer(model, img, spec.input_shape);
    }
    // Latency: REPEATS timed passes over the digits; the mean of the faster half of the
    // passes (other processes on a busy machine only ever add time, and averaging
    // smooths the browser's coarse timer).
    const latencyMs = await fastHalfMs(REPEATS, images.length, async () => {
      for (const img of images) await infer(model, img, spec.input_shape);
    });
    // `model.run` alone: input tensors made beforehand, outputs deleted unread.
    const inputs = images.map((img) => new Tensor(img, spec.input_shape));
    const runMs = await fastHalfMs(REPEATS, images.length, async () => {
      for (const input of inputs) {
        for (const t of await model.run(input)) t.delete();
      }
    });
    for (const t of inputs) t.delete();
    return {name: spec.name, title: spec.title, file: spec.file, bytes: bytes.length,
            load_ms: loadMs, latency_ms: latencyMs, run_ms: runMs,
            inferences: REPEATS * images.length, outputs, predictions: outputs.map(argmax)};
  } finally {
    model.delete();
  }
}

function barChart(id, rows, key, digits) {
  const width = 420, bar = 26, gap = 10, left = 110, pad = 4;
  const max = Math.max(...rows.map((r) => r[key])) || 1;
  const height = rows.length * (bar + gap) + gap;
  const bars = rows.map((r, i) => {
    const y = gap + i * (bar + gap);
    const w = Math.max(1, (width - left - 70) * r[key] / max);
    return `<text x="${left - pad}" y="${y + bar / 2 + 4}" text-anchor="end">${r.name}</text>` +
        `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${bar}" ` +
        `fill="${COLORS[r.name] || '#888'}"/>` +
        `<text x="${left + w + pad}" y="${y + bar / 2 + 4}">${r[key].toFixed(digits)}</text>`;
  }).join('');
  document.getElementById(id).innerHTML =
      `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" ` +
      `font-size="12" font-family="sans-serif">${bars}</svg>`;
}

function showDigits(images, labels, results) {
  const box = document.getElementById('digits');
  images.forEach((img, i) => {
    const div = document.createElement('div');
    div.className = 'digit';
    const canvas = document.createElement('canvas');
    canvas.width = canvas.height = 28;
    const ctx = canvas.getContext('2d');
    const data = ctx.createImageData(28, 28);
    for (let p = 0; p < 784; p++) {
      const v = 255 - Math.round(img[p] * 255);
      data.data.set([v, v, v, 255], 4 * p);
    }
    ctx.putImageData(data, 0, 0);
    const preds = results.map((r) => {
      const p = r.predictions[i];
      return p === labels[i] ? `${p}` : `<span class="bad">${p}</span>`;
    });
    div.innerHTML = `<div>label ${labels[i]}</div>`;
    div.appendChild(canvas);
    div.insertAdjacentHTML('beforeend', `<div>${preds.join(' / ')}</div>`);
    box.appendChild(div);
  });
}

function showTable(results, labels) {
  const body = document.querySelector('#results tbody');
  for (const r of results) {
    const correct = r.predictions.filter((p, i) => p === labels[i]).length;
    const tr = document.createElement('tr');
    tr.innerHTML = `<td class="l" title="${r.title}">${r.name}<br><small>${r.title}</small></td>` +
        `<td>${(r.bytes / 1024).toFixed(1)}</td><td>${r.load_ms.toFixed(1)}</td>` +
        `<td>${(1000 * r.latency_ms).toFixed(0)}</td><td>${(1000 * r.run_ms).toFixed(0)}</td>` +
        `<td>${correct} / ${labels.length}</td>` +
        `<td class="l p">${r.predictions.join(' ')}</td>`;
    body.appendChild(tr);
  }
}

async function main() {
  const started = performance.now();
  await loadLiteRt(new URL('./node_modules/@litertjs/core/wasm/', location.href).href);
  const runtimeMs = performance.now() - started;
  const spec = await (await fetch('./models/models.json')).json();
  const pixels = await fetchBytes(spec.digits.file);
  const images = [];
  for (let i = 0; i < spec.digits.count; i++) {
    images.push(Float32Array.from(pixels.subarray(784 * i, 784 * (i + 1)), (v) => v / 255));
  }
  const results = [];
  for (const m of spec.models) {
    setStatus(`running ${m.name} ...`);
    results.push(await runModel(m, images));
  }
  showTable(results, spec.digits.labels);
  barChart('chart-latency', results.map((r) => ({...r, us: 1000 * r.latency_ms})), 'us', 0);
  barChart('chart-size', results.map((r) => ({...r, kb: r.bytes / 1024})), 'kb', 1);
  showDigits(images, spec.digits.labels, results);
  const browser = navigator.userAgent.match(/Chrom\S+/)?.[0] || '';
  setStatus(`LiteRT.js runtime loaded in ${runtimeMs.toFixed(0)} ms; ${REPEATS} x ` +
            `${images.length} inferences per model (${browser})`);
  window.demoResults = {ok: true, repeats: REPEATS, runtime_load_ms: runtimeMs,
                        user_agent: navigator.userAgent, models: results};
}

main().catch((e) => {
  setStatus(`error: ${e.message || e}`, true);
  window.demoResults = {ok: false, error: String(e && e.stack || e)};
});
