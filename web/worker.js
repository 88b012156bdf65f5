// The sampler in a dedicated Web Worker, so the page (and its viewer) stays responsive. Loads the wasm module,
// fetches the weights once through the Cache API (checked against the SHA-256 of weights/manifest.json), opens
// WebGPU or falls back to the CPU, and streams frames to the page. A lost GPU device switches to the CPU.
import init, { Generator, errorKinds } from './equivariant.js';

const post = (type, data = {}) => self.postMessage({ type, ...data });
let gen = null;
let weightBytes = null;
let run = null; // {options, paused, stop}
let busy = Promise.resolve();

async function sha256Hex(bytes) {
  const d = await crypto.subtle.digest('SHA-256', bytes);
  return [...new Uint8Array(d)].map((b) => b.toString(16).padStart(2, '0')).join('');
}

async function download(url, total) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`weights download failed: HTTP ${resp.status} for ${url}`);
  const reader = resp.body.getReader();
  const chunks = [];
  let got = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    got += value.length;
    post('progress', { phase: 'download', fraction: total ? Math.min(got / total, 1) : 0 });
  }
  const out = new Uint8Array(got);
  let at = 0;
  for (const c of chunks) { out.set(c, at); at += c.length; }
  return out;
}

// manifestUrl: weights/manifest.json (file, sha256, bytes) next to the weights; or weightsUrl alone (a custom
// file: no checksum to compare, safetensors validation still names any bad tensor).
async function loadWeights({ manifestUrl, weightsUrl }) {
  if (weightsUrl && !manifestUrl) {
    const bytes = await download(weightsUrl, 0);
    return bytes;
  }
  const mresp = await fetch(manifestUrl);
  if (!mresp.ok) throw new Error(`weights manifest missing: HTTP ${mresp.status} for ${manifestUrl}`);
  const manifest = await mresp.json();
  const url = new URL(manifest.file, manifestUrl).href;
  const cache = self.caches ? await self.caches.open('equivariant-weights-v1') : null;
  let bytes = null;
  if (cache) {
    const hit = await cache.match(url);
    if (hit) bytes = new Uint8Array(await hit.arrayBuffer());
  }
  if (bytes && (await sha256Hex(bytes)) !== manifest.sha256) {
    await cache.delete(url); // a stale or damaged cached copy: fetch again
    bytes = null;
  }
  if (!bytes) {
    bytes = await download(url, manifest.bytes);
    post('progress', { phase: 'verify', fraction: 1 });
    const got = await sha256Hex(bytes);
    if (got !== manifest.sha256) {
      throw new Error(`weights file ${manifest.file} is corrupted or truncated: SHA-256 ${got.slice(0, 12)}…, expected ${manifest.sha256.slice(0, 12)}… (${bytes.length} of ${manifest.bytes} bytes)`);
    }
    if (cache) await cache.put(url, new Response(bytes));
  }
  return bytes;
}

async function open(backend) {
  gen = await Generator.create(weightBytes, backend);
  return { backend: gen.backend, adapter: gen.adapter, fallbackReason: gen.fallbackReason ?? null, model: gen.model };
}

const GPU_FAILURES = ['GpuLostError', 'GpuError'];
// the names the wasm side gives its errors (Error::KINDS in src/error.rs, exported as errorKinds() and read once
// the module is loaded); any other error (a failed download, a wasm panic) reaches the page as a plain Error
let ERROR_KINDS = [];
// (the crate's errors also carry `detail`: the message without the prefix that names the kind, Error::detail)
const detailOf = (e) => String(e.detail ?? e.message);
const errorData = (e) => ({
  message: String(e?.message ?? e),
  ...(ERROR_KINDS.includes(e?.name) ? { name: e.name, detail: detailOf(e) } : {}),
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Every message of a run carries its id, so the page can drop what a replaced run still sends.
async function runLoop(r) {
  const post = (type, data = {}) => self.postMessage({ type, run: r.id, ...data });
  // a lost GPU device (mid-run, or already lost when the run starts): reopen on the CPU and restart the same run
  // (same seed, same molecules); anything else is the caller's error
  const onCpu = async (e) => {
    // the wasm side names its errors by kind (Error::kind): a lost device, or a GPU call that failed
    if (!(GPU_FAILURES.includes(e?.name) && gen.backend === 'webgpu')) throw e;
    post('gpu-lost', { kind: e.name, reason: String(e.message), detail: detailOf(e), ...(await open('cpu')) });
    r.transform = r.options.transform ?? null;
    return runLoop(r);
  };
  let frame;
  try {
    gen.start(r.options);
    frame = await gen.step(0);
  } catch (e) {
    return onCpu(e);
  }
  post('frame', { frame, rate: 0 });
  let busyMs = 0; // time spent stepping (pauses excluded)
  let k = 1;
  // enough frames to watch even a short run condense: at most total/60 evaluations per frame
  const kMax = Math.max(1, Math.min(50, Math.floor(frame.total / 60)));
  while (!frame.finished && !r.stop) {
    if (r.transform) {
      const g = r.transform;
      r.transform = null;
      try {
        await gen.setTransform(g);
        post('transformed', {});
      } catch (e) {
        post('transform-error', { message: String(e?.message ?? e) }); // the run goes on with the previous g
      }
    }
    if (r.paused) { await sleep(50); continue; }
    const t0 = performance.now();
    try {
      frame = await gen.step(k);
    } catch (e) {
      return onCpu(e);
    }
    const dt = performance.now() - t0;
    busyMs += dt;
    // about 30 frames per second to the page, whatever the speed of a step
    k = Math.max(1, Math.min(kMax, Math.round((k * 33) / Math.max(dt, 1))));
    post('frame', { frame, ms: dt, k, rate: (frame.step * 1000) / Math.max(busyMs, 1) });
  }
  r.finished = true;
  post(r.stop ? 'stopped' : 'done', {});
}

function serial(fn) {
  busy = busy.then(fn).catch((e) => post('error', errorData(e)));
  return busy;
}

self.onmessage = (e) => {
  const m = e.data;
  switch (m.type) {
    case 'init':
      serial(async () => {
        await init({ module_or_path: new URL('equivariant_bg.wasm', import.meta.url) });
        ERROR_KINDS = errorKinds();
        weightBytes = await loadWeights(m);
        post('ready', await open(m.backend || 'auto'));
      });
      break;
    case 'start': {
      if (run) run.stop = true;
      const r = { id: m.run, options: m.options, paused: false, stop: false };
      run = r;
      serial(() => runLoop(r));
      break;
    }
    case 'pause':
      if (run) run.paused = true;
      break;
    case 'resume':
      if (run) run.paused = false;
      break;
    case 'stop':
      if (run) run.stop = true;
      break;
    case 'transform':
      // applied between two steps of the running chain (the generator's calls must not overlap)
      if (run && !run.stop && !run.finished && run.options.equivariance) run.transform = m.transform;
      break;
    case 'simulate-gpu-loss':
      // a test hook: destroys the WebGPU device mid-run, as a driver reset would
      if (gen) gen.simulateGpuLoss();
      break;
    case 'simulate-gpu-error':
      // a test hook: a GPU call the device refuses, the device staying up (a GpuError, not a loss)
      if (gen) gen.simulateGpuError();
      break;
    case 'export':
      try {
        const text = m.format === 'sdf' ? gen.sdf(m.chain, m.molecule) : gen.xyz(m.chain, m.molecule);
        post('export', { format: m.format, text, molecule: m.molecule, id: m.id });
      } catch (err) {
        post('error', errorData(err));
      }
      break;
    default:
      post('error', { message: `unknown message ${m.type}` });
  }
};
