// The page: controls, the worker that samples, two three.js views (the chain, and in the equivariance view the
// chain of g·z_T), the gallery, per-molecule chemistry, the timeline and the exports. Settings live in the URL
// so that a link reproduces a molecule.
import { MoleculeViewer } from './viewer.js';
import { setLanguage, t } from './i18n.js';

const $ = (id) => document.getElementById(id);
const ELEMENTS = ['H', 'C', 'N', 'O', 'F'];
const params = new URLSearchParams(location.search);

const state = {
  frames: [], // recorded frames of the current run (for the timeline and the trajectory export)
  focus: 0,
  running: false,
  paused: false,
  finished: false,
  g: { rotation: [1, 0, 0, 0, 1, 0, 0, 0, 1], translation: [0, 0, 0], permutation: null },
  startedAt: 0,
  firstFrameMs: null,
  lastRate: { time: 0, step: 0, rate: 0 },
  // the backend label as a message key and its values, so that a language switch can render it again
  backendLabel: null,
};

// ---------- language ----------
const lang = setLanguage(params.get('lang') || ((navigator.language || '').startsWith('zh') ? 'zh' : 'en'));
$('lang').value = lang;
$('lang').addEventListener('change', () => {
  setLanguage($('lang').value);
  writeUrl();
  refreshTexts();
});

// ---------- controls from the URL ----------
const atomsSel = $('atoms');
atomsSel.append(new Option(t('qm9'), 'qm9'));
for (let n = 3; n <= 29; n++) atomsSel.append(new Option(String(n), String(n)));
// A URL value the menu lacks: a whole number of steps from 1 to 1000 joins the menu (so links reproduce); any
// other value is reported in a note that stays while runs come and go, with the value used instead.
const ignoredParams = [];
// `used` is the text of what the page uses instead, or the menu option, whose text follows the language
const ignore = (name, value, used) => ignoredParams.push({ name, value, used });
function showNotice() {
  const el = $('notice');
  el.textContent = ignoredParams.map(({ name, value, used }) =>
    t('ignoredParam', { name, value, used: typeof used === 'string' ? used : used.text })).join(' ');
  el.hidden = ignoredParams.length === 0;
}
const pick = (el, name, accept = () => false) => {
  const v = params.get(name);
  if (v === null) return;
  if (![...el.options].some((o) => o.value === v)) {
    if (!accept(v)) { ignore(name, v, el.selectedOptions[0] ?? el.value); return; }
    el.append(new Option(v, v));
  }
  el.value = v;
};
pick(atomsSel, 'atoms');
pick($('steps'), 'steps', (v) => /^\d+$/.test(v) && Number(v) >= 1 && Number(v) <= 1000);
pick($('batch'), 'batch');
const seed = params.get('seed');
if (seed !== null) {
  if (/^\d+$/.test(seed)) $('seed').value = seed;
  else ignore('seed', seed, $('seed').value);
}
$('equivariance').checked = params.get('eq') === '1';
showNotice();

function writeUrl() {
  const p = new URLSearchParams();
  p.set('atoms', atomsSel.value);
  p.set('steps', $('steps').value);
  p.set('seed', $('seed').value);
  p.set('batch', $('batch').value);
  if ($('equivariance').checked) p.set('eq', '1');
  if ($('lang').value !== 'en') p.set('lang', $('lang').value);
  if (params.get('backend')) p.set('backend', params.get('backend'));
  history.replaceState(null, '', `${location.pathname}?${p}`);
}

// ---------- views ----------
const left = new MoleculeViewer($('canvas-left'));
const right = new MoleculeViewer($('canvas-right'), {
  dragRotates: true,
  onRotate: (rows) => {
    // compose the dragged rotation with g, restart the right chain from g·(left state)
    state.g.rotation = matmul(rows, state.g.rotation);
    right.resetDrag();
    sendTransform();
  },
});

function matmul(a, b) {
  const o = new Array(9).fill(0);
  for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) for (let k = 0; k < 3; k++) o[3 * i + j] += a[3 * i + k] * b[3 * k + j];
  return o;
}

function randomRotation() {
  // uniform random rotation from a random unit quaternion
  const u = [Math.random(), Math.random(), Math.random()];
  const q = [Math.sqrt(1 - u[0]) * Math.sin(2 * Math.PI * u[1]), Math.sqrt(1 - u[0]) * Math.cos(2 * Math.PI * u[1]),
    Math.sqrt(u[0]) * Math.sin(2 * Math.PI * u[2]), Math.sqrt(u[0]) * Math.cos(2 * Math.PI * u[2])];
  const [x, y, z, w] = q;
  return [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
    2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
    2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)];
}

function sendTransform() {
  // the current g's rotation, row-major, readable by tests and tools
  $('equivariance-panel').dataset.rotation = state.g.rotation.map((v) => v.toFixed(6)).join(' ');
  if (state.running && state.equivarianceRun) worker.postMessage({ type: 'transform', transform: state.g });
}

function setEquivarianceVisible() {
  const on = $('equivariance').checked;
  $('view-right').hidden = !on;
  $('equivariance-panel').hidden = !on;
}
setEquivarianceVisible();
sendTransform(); // shows the initial g (identity); sends nothing before a run
$('equivariance').addEventListener('change', () => { setEquivarianceVisible(); writeUrl(); });

$('g-rotate').addEventListener('click', () => { state.g.rotation = matmul(randomRotation(), state.g.rotation); sendTransform(); });
$('g-reflect').addEventListener('click', () => { state.g.rotation = matmul([-1, 0, 0, 0, 1, 0, 0, 0, 1], state.g.rotation); sendTransform(); });
$('g-translate').addEventListener('click', () => {
  state.g.translation = state.g.translation.map((v) => v + (Math.random() - 0.5) * 6);
  sendTransform();
});
$('g-permute').addEventListener('click', () => {
  // one permutation for every molecule: only when they all have the same number of atoms
  const last = state.frames.at(-1);
  const sizes = last ? new Set(last.chains[0].map((m) => m.types.length)) : new Set([Number(atomsSel.value) || 0]);
  const n = sizes.size === 1 ? [...sizes][0] : 0;
  if (!n) { status(state.running ? 'running' : 'ready', t('permuteNeedsSize')); return; }
  const p = [...Array(n).keys()];
  for (let i = n - 1; i > 0; i--) { const j = Math.floor(Math.random() * (i + 1)); [p[i], p[j]] = [p[j], p[i]]; }
  state.g.permutation = p;
  sendTransform();
});
$('g-reset').addEventListener('click', () => {
  state.g = { rotation: [1, 0, 0, 0, 1, 0, 0, 0, 1], translation: [0, 0, 0], permutation: null };
  sendTransform();
});

// ---------- status ----------
function status(kind, text) {
  const el = $('status');
  el.dataset.state = kind;
  el.textContent = text;
}

function showBackend(backend, key, vars = {}) {
  state.backendLabel = { key, vars };
  $('backend').dataset.backend = backend;
  renderBackendLabel();
}
function renderBackendLabel() {
  if (state.backendLabel) $('backend').textContent = t(state.backendLabel.key, state.backendLabel.vars);
}

function refreshTexts() {
  $('pause').textContent = state.paused ? t('resume') : t('pause');
  renderBackendLabel();
  atomsSel.options[0].text = t('qm9');
  showNotice();
  if (state.frames.length) showFrame(state.frames.length - 1);
}

// ---------- worker ----------
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
// for tests and for trying the fallback by hand in the console: destroy the WebGPU device mid-run, or make a GPU
// call fail on a device that stays up
globalThis.equivariantDebug = {
  loseGpu: () => worker.postMessage({ type: 'simulate-gpu-loss' }),
  failGpu: () => worker.postMessage({ type: 'simulate-gpu-error' }),
};
worker.onerror = (e) => status('error', t('error', { msg: e.message || 'the worker failed to start' }));
// a GPU failure's `detail` is the crate's message without its own "GPU: " / "GPU device lost: " (Error::detail),
// which the page's wording already says
worker.onmessage = (e) => {
  const m = e.data;
  if (m.type === 'gpu-lost') {
    // the worker is on the CPU from now on, whichever run met the loss
    // stays after the run: why it is on the CPU (a lost device, or a GPU call that failed on a live one)
    showBackend('cpu', m.kind === 'GpuError' ? 'fallbackFailed' : 'fallbackLost', { reason: m.detail });
  }
  if (m.run !== undefined && m.run !== state.run) return; // from a run that was replaced
  switch (m.type) {
    case 'progress':
      $('progress').value = m.fraction;
      status('loading', m.phase === 'verify' ? t('verifying') : t('downloading', { pct: Math.round(m.fraction * 100) }));
      break;
    case 'ready':
      if (m.backend === 'webgpu') showBackend(m.backend, 'gpuBackend', { adapter: m.adapter });
      else if (m.fallbackReason) showBackend(m.backend, 'fallback', { reason: m.fallbackReason });
      else showBackend(m.backend, 'cpuBackend');
      $('generate').disabled = false;
      $('progress').value = 0;
      status('ready', t('ready'));
      if (params.get('autostart') === '1') generate();
      break;
    case 'gpu-lost':
      // a lost device, or a GPU call that failed on a device still there (GpuError): both continue on the CPU
      status('running', t(m.kind === 'GpuError' ? 'gpuFailed' : 'gpuLost', { reason: m.detail }));
      state.frames = [];
      playQueue.length = 0;
      break;
    case 'transform-error':
      status('running', t('error', { msg: m.message }));
      break;
    case 'frame':
      onFrame(m.frame, m.rate);
      break;
    case 'transformed':
      break;
    case 'done':
    case 'stopped':
      state.running = false;
      state.finished = m.type === 'done';
      $('pause').disabled = true;
      $('stop').disabled = true;
      $('generate').disabled = false;
      $('timeline').disabled = state.frames.length < 2;
      $('timeline').max = String(Math.max(state.frames.length - 1, 0));
      $('timeline').value = $('timeline').max;
      for (const id of ['export-xyz', 'export-sdf']) $(id).disabled = !state.finished;
      $('export-traj').disabled = state.frames.length === 0;
      $('export-png').disabled = false;
      status(m.type, m.type === 'done' ? t('done', { n: state.frames.at(-1)?.chains[0].length ?? 0 }) : t('stopped'));
      break;
    case 'export':
      download(`molecule-${m.molecule}.${m.format}`, m.text, m.format === 'sdf' ? 'chemical/x-mdl-sdfile' : 'chemical/x-xyz');
      break;
    case 'error':
      state.running = false;
      $('generate').disabled = false;
      $('pause').disabled = true;
      $('stop').disabled = true;
      status('error', t('error', { msg: m.message }));
      break;
  }
};
worker.postMessage({ type: 'init', manifestUrl: new URL('weights/manifest.json', location.href).href, backend: params.get('backend') || 'auto' });
status('loading', t('loading'));

// ---------- runs ----------
function generate() {
  writeUrl();
  const atoms = atomsSel.value === 'qm9' ? undefined : Number(atomsSel.value);
  const equivariance = $('equivariance').checked;
  state.equivarianceRun = equivariance;
  const molecules = Number($('batch').value);
  if (state.g.permutation && (!atoms || state.g.permutation.length !== atoms)) state.g.permutation = null;
  const transform = { ...state.g };
  state.run = (state.run ?? 0) + 1;
  state.frames = [];
  playQueue.length = 0;
  state.scrubbing = false;
  state.focus = 0;
  state.running = true;
  state.finished = false;
  state.paused = false;
  state.firstFrameMs = null;
  state.startedAt = performance.now();
  state.lastRate = { time: performance.now(), step: 0, rate: 0 };
  left.resetView();
  right.resetView();
  right.resetDrag();
  $('generate').disabled = true;
  $('pause').disabled = false;
  $('stop').disabled = false;
  $('pause').textContent = t('pause');
  $('timeline').disabled = true;
  for (const id of ['export-xyz', 'export-sdf', 'export-traj', 'export-png']) $(id).disabled = true;
  status('running', t('running'));
  worker.postMessage({
    type: 'start',
    run: state.run,
    options: { molecules, atoms, steps: Number($('steps').value), seed: Number($('seed').value), equivariance, transform },
  });
}

$('generate').addEventListener('click', generate);
$('pause').addEventListener('click', () => {
  state.paused = !state.paused;
  worker.postMessage({ type: state.paused ? 'pause' : 'resume' });
  $('pause').textContent = state.paused ? t('resume') : t('pause');
  status(state.paused ? 'paused' : 'running', state.paused ? t('paused') : t('running'));
});
$('stop').addEventListener('click', () => worker.postMessage({ type: 'stop' }));
$('random-seed').addEventListener('click', () => { $('seed').value = String(Math.floor(Math.random() * 2 ** 31)); writeUrl(); });
for (const id of ['atoms', 'steps', 'batch', 'seed']) $(id).addEventListener('change', writeUrl);

function onFrame(frame, rate = 0) {
  if (state.firstFrameMs === null && frame.step > 0) {
    state.firstFrameMs = performance.now() - state.startedAt;
    $('status').dataset.firstFrameMs = String(Math.round(state.firstFrameMs));
  }
  state.frames.push(frame);
  // network evaluations per second of the worker's stepping time (pauses and start-up excluded)
  const lr = state.lastRate;
  if (frame.step > 0) {
    lr.rate = rate;
    $('progress-text').dataset.stepsPerSecond = rate.toFixed(2);
  }
  $('progress').value = frame.step / frame.total;
  $('progress').dataset.step = String(frame.step);
  $('progress-text').textContent = t('progress', { step: frame.step, total: frame.total, t: frame.t, rate: lr.rate.toFixed(1) });
  playQueue.push(state.frames.length - 1);
  renderGallery(frame);
}

// Frames are played one per display frame, so a fast run still shows the condensation step by step; if the
// queue falls more than ~half a second behind, older frames are skipped.
const playQueue = [];
function play() {
  if (playQueue.length > 30) playQueue.splice(0, playQueue.length - 30);
  const i = playQueue.shift();
  if (i !== undefined && !state.scrubbing) showFrame(i);
  requestAnimationFrame(play);
}
requestAnimationFrame(play);

function showFrame(i) {
  const frame = state.frames[i];
  if (!frame) return;
  const b = Math.min(state.focus, frame.chains[0].length - 1);
  const mol = frame.chains[0][b];
  left.show(mol, frame.ghost ? frame.ghost[b] : null, `${frame.step}`);
  if (frame.chains[1]) right.show(frame.chains[1][b], null, `${frame.step}`);
  if (frame.deviation !== null && frame.deviation !== undefined) {
    $('deviation').value = `${frame.deviation.toExponential(2)} Å`;
    $('deviation').textContent = `${frame.deviation.toExponential(2)} Å`;
    $('deviation').dataset.value = String(frame.deviation);
  }
  const mstable = mol.failed ? t('diverged') : mol.moleculeStable ? t('stable') : t('unstable');
  $('info').textContent = t('info', { formula: mol.formula, n: mol.types.length, stable: mol.stableAtoms, mstable });
  $('info').dataset.step = String(frame.step); // the shown frame may trail the last one while the queue plays
}

function renderGallery(frame) {
  const g = $('gallery');
  const mols = frame.chains[0];
  if (g.children.length !== mols.length) {
    g.replaceChildren(...mols.map((_, b) => {
      const btn = document.createElement('button');
      btn.addEventListener('click', () => { state.focus = b; showFrame($('timeline').disabled ? state.frames.length - 1 : Number($('timeline').value)); renderGallery(state.frames.at(-1)); });
      return btn;
    }));
  }
  mols.forEach((m, b) => {
    const btn = g.children[b];
    btn.textContent = `${b + 1}: ${m.formula}${m.moleculeStable ? ' ✓' : ''}`;
    btn.setAttribute('aria-pressed', String(b === state.focus));
  });
}

$('timeline').addEventListener('input', () => {
  state.scrubbing = true;
  playQueue.length = 0;
  showFrame(Number($('timeline').value));
});

// ---------- exports ----------
function download(name, data, type) {
  const url = typeof data === 'string' && data.startsWith('data:') ? data : URL.createObjectURL(new Blob([data], { type }));
  const a = document.createElement('a');
  a.href = url;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
}

$('export-xyz').addEventListener('click', () => worker.postMessage({ type: 'export', format: 'xyz', chain: 0, molecule: state.focus }));
$('export-sdf').addEventListener('click', () => worker.postMessage({ type: 'export', format: 'sdf', chain: 0, molecule: state.focus }));
$('export-traj').addEventListener('click', () => {
  const lines = [];
  for (const f of state.frames) {
    const m = f.chains[0][state.focus];
    lines.push(String(m.types.length), `step ${f.step} t ${f.t} ${m.formula}`);
    for (let i = 0; i < m.types.length; i++) {
      const p = m.positions.slice(3 * i, 3 * i + 3).map((v) => v.toFixed(5));
      lines.push(`${ELEMENTS[m.types[i]]} ${p.join(' ')}`);
    }
  }
  download(`trajectory-${state.focus}.xyz`, lines.join('\n') + '\n', 'chemical/x-xyz');
});
$('export-png').addEventListener('click', () => download('molecule.png', left.png(), 'image/png'));
