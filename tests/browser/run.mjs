// Browser tests: headless Debian Chromium with SwiftShader WebGPU, driven by playwright-core.
// Serves dist/ (built by `trunk build --release`) and checks the page; screenshots go to test-artifacts/.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { serve } from './server.mjs';
import { execFileSync } from 'node:child_process';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const DIST = path.join(ROOT, 'dist');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });

const ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
  '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic'];

const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test('the page loads and the wasm CPU sampler runs (served under a sub-path)', async (browser) => {
  const server = await serve(DIST, { prefix: '/equivariant/' });
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await page.goto(`http://127.0.0.1:${server.address().port}/equivariant/`);
    const status = page.locator('#selftest');
    await page.waitForSelector('#selftest[data-state="done"], #selftest[data-state="error"]', { timeout: 60000, state: 'attached' });
    const text = await status.textContent();
    await page.screenshot({ path: path.join(ARTIFACTS, 'selftest.png') });
    if ((await status.getAttribute('data-state')) !== 'done') throw new Error(`self-test failed: ${text}`);
    if (!/ran 21 network evaluations/.test(text)) throw new Error(`unexpected self-test text: ${text}`);
    // same seed, same molecules: the native build must print the identical summary
    const native = execFileSync(path.join(ROOT, 'target/release/equivariant'), ['selftest']).toString().trim();
    if (!text.endsWith(native)) throw new Error(`browser and native self-test differ:\n  browser: ${text}\n  native:  ${native}`);
    if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  } finally {
    await page.close();
    server.close();
  }
});


// ---------- the app ----------
const WEIGHTS = fs.readFileSync(path.join(DIST, 'weights/edm_qm9_9x128.safetensors'));

async function openApp(browser, query, { override = {} } = {}) {
  const server = await serve(DIST, { prefix: '/equivariant/', override });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.goto(`http://127.0.0.1:${server.address().port}/equivariant/?${query}`);
  const close = async () => { await context.close(); server.close(); };
  return { page, errors, close };
}

async function waitState(page, states, timeout) {
  const sel = states.map((s) => `[data-testid="status"][data-state="${s}"]`).join(', ');
  await page.waitForSelector(sel, { timeout });
  return page.locator('[data-testid="status"]').getAttribute('data-state');
}

async function generateAndFinish(page, shot) {
  if ((await waitState(page, ['ready', 'error'], 120000)) !== 'ready') {
    throw new Error(`app did not become ready: ${await page.locator('[data-testid="status"]').textContent()}`);
  }
  await page.getByTestId('generate').click();
  const end = await waitState(page, ['done', 'error'], 240000);
  await page.screenshot({ path: path.join(ARTIFACTS, shot) });
  if (end !== 'done') throw new Error(`run failed: ${await page.locator('[data-testid="status"]').textContent()}`);
  const drawn = Number(await page.getByTestId('viewer').getAttribute('data-frames-drawn'));
  const backend = await page.getByTestId('backend').getAttribute('data-backend');
  const rate = await page.getByTestId('progress-text').getAttribute('data-steps-per-second');
  const first = await page.getByTestId('status').getAttribute('data-first-frame-ms');
  return { drawn, backend, rate, first };
}

test('app: a 50-step generation with the shipped weights on WebGPU draws the chain', async (browser) => {
  const { page, errors, close } = await openApp(browser, 'steps=50&seed=3&atoms=qm9&batch=1&backend=webgpu');
  try {
    const r = await generateAndFinish(page, 'app-webgpu-done.png');
    console.log(`     backend ${r.backend}, ${r.drawn} frames drawn, ${r.rate} steps/s, first frame ${r.first} ms`);
    if (r.backend !== 'webgpu') throw new Error(`expected the WebGPU backend, got ${r.backend}: ${await page.getByTestId('backend').textContent()}`);
    if (r.drawn < 10) throw new Error(`only ${r.drawn} distinct frames drawn`);
    const info = await page.getByTestId('info').textContent();
    if (!/atoms/.test(info)) throw new Error(`no molecule info: ${info}`);
    if (errors.length) throw new Error(`page errors: ${errors.join('; ')}`);
  } finally {
    await close();
  }
});

test('app: exports download and parse (XYZ, SDF, trajectory)', async (browser) => {
  const { page, close } = await openApp(browser, 'steps=50&seed=5&atoms=12&batch=1&backend=cpu');
  try {
    await generateAndFinish(page, 'app-exports.png');
    const grab = async (testid) => {
      const [dl] = await Promise.all([page.waitForEvent('download'), page.getByTestId(testid).click()]);
      return fs.readFileSync(await dl.path(), 'utf8');
    };
    const xyz = (await grab('export-xyz')).trim().split('\n');
    if (Number(xyz[0]) !== 12 || xyz.length !== 14) throw new Error(`bad XYZ:\n${xyz.join('\n')}`);
    for (const line of xyz.slice(2)) {
      const f = line.trim().split(/\s+/);
      if (!['H', 'C', 'N', 'O', 'F'].includes(f[0]) || f.slice(1).some((v) => !Number.isFinite(Number(v)))) throw new Error(`bad XYZ line ${line}`);
    }
    const sdf = (await grab('export-sdf')).split('\n');
    const counts = sdf[3] || '';
    if (Number(counts.slice(0, 3)) !== 12 || !counts.includes('V2000') || !sdf.some((l) => l.startsWith('M  END'))) throw new Error(`bad SDF:\n${sdf.slice(0, 5).join('\n')}`);
    const nb = Number(counts.slice(3, 6));
    for (const l of sdf.slice(4 + 12, 4 + 12 + nb)) {
      const [a, b, o] = [Number(l.slice(0, 3)), Number(l.slice(3, 6)), Number(l.slice(6, 9))];
      if (!(a >= 1 && a <= 12 && b >= 1 && b <= 12 && o >= 1 && o <= 3)) throw new Error(`bad SDF bond line ${l}`);
    }
    const traj = (await grab('export-trajectory')).trim().split('\n');
    if (traj.length < 14 * 10) throw new Error(`trajectory has only ${traj.length} lines`);
  } finally {
    await close();
  }
});

test('app: live equivariance (rotation, reflection, permutation, translation, arrow keys, also mid-run) stays below 1e-3 Å', async (browser) => {
  const { page, close } = await openApp(browser, 'steps=50&seed=7&atoms=10&batch=1&eq=1');
  try {
    if ((await waitState(page, ['ready', 'error'], 120000)) !== 'ready') throw new Error('not ready');
    await page.getByTestId('g-rotate').click(); // g before the run
    await page.getByTestId('generate').click();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="progress"]').dataset.step || 0) >= 10, null, { timeout: 120000 });
    await page.getByTestId('g-rotate').click(); // and a new g mid-run: rotation, reflection, renumbered atoms
    await page.getByTestId('g-reflect').click();
    await page.getByTestId('g-permute').click();
    await page.getByTestId('g-translate').click();
    // the keyboard equivalent of dragging the right view: ArrowRight turns g by 15° about y
    const rotation = async () => (await page.locator('#equivariance-panel').getAttribute('data-rotation')).split(' ').map(Number);
    const before = await rotation();
    await page.getByTestId('viewer-right').focus();
    await page.keyboard.press('ArrowRight');
    const after = await rotation();
    let trace = 0; // trace(after · beforeᵀ) = 1 + 2 cos(angle)
    for (let i = 0; i < 3; i++) for (let k = 0; k < 3; k++) trace += after[3 * i + k] * before[3 * i + k];
    if (!(Math.abs(trace - (1 + 2 * Math.cos(Math.PI / 12))) < 1e-4)) throw new Error(`ArrowRight should turn g by 15°: trace ${trace}`);
    // and about +y, the way dragging right turns it: M = after · beforeᵀ has M[1][1] = 1, M[0][2] = sin 15°
    const m = (i, j) => [0, 1, 2].reduce((acc, k) => acc + after[3 * i + k] * before[3 * j + k], 0);
    if (!(Math.abs(m(1, 1) - 1) < 1e-4 && Math.abs(m(0, 2) - Math.sin(Math.PI / 12)) < 1e-4)) {
      throw new Error(`ArrowRight should turn g about +y: M11 ${m(1, 1)}, M02 ${m(0, 2)}`);
    }
    const end = await waitState(page, ['done', 'error'], 240000);
    await page.screenshot({ path: path.join(ARTIFACTS, 'app-equivariance.png') });
    if (end !== 'done') throw new Error(await page.getByTestId('status').textContent());
    const dev = Number(await page.getByTestId('deviation').getAttribute('data-value'));
    console.log(`     deviation ${dev.toExponential(2)} Å on ${await page.getByTestId('backend').getAttribute('data-backend')}`);
    if (!(dev < 1e-3)) throw new Error(`deviation ${dev} Å`);
  } finally {
    await close();
  }
});

test('app: a corrupted weights file shows a clear error', async (browser) => {
  const broken = Buffer.from(WEIGHTS.subarray(0, 100000));
  const { page, close } = await openApp(browser, 'steps=50', { override: { '/weights/edm_qm9_9x128.safetensors': broken } });
  try {
    await waitState(page, ['error', 'ready'], 120000);
    await page.screenshot({ path: path.join(ARTIFACTS, 'app-corrupted-weights.png') });
    const text = await page.getByTestId('status').textContent();
    if (!/corrupted or truncated/.test(text)) throw new Error(`expected a corrupted-weights message, got: ${text}`);
  } finally {
    await close();
  }
});

test('app: a GPU device lost, or a GPU call failing, mid-run restarts the run on the CPU with the same molecules', async (browser) => {
  const query = 'steps=50&seed=5&atoms=9&batch=1';
  const finish = async (page) => {
    const end = await waitState(page, ['done', 'error'], 240000);
    if (end !== 'done') throw new Error(await page.getByTestId('status').textContent());
    // the view plays queued frames after the worker is done: wait until it shows the last one
    await page.waitForFunction(() => {
      const info = document.querySelector('[data-testid="info"]').dataset.step;
      return info !== undefined && info === document.querySelector('[data-testid="progress"]').dataset.step;
    }, null, { timeout: 10000 });
    return page.getByTestId('info').textContent();
  };
  // each failure: the debug hook, the label's wording in English and Chinese, and what its reason must name
  const failures = [
    { hook: 'loseGpu', shot: 'app-gpu-lost.png', en: 'the GPU device was lost: ', zh: 'GPU 设备丢失：', reason: /destroyed|lost/i },
    // a validation error on a device that stays up: the GPU's own message, naming the refused buffer
    { hook: 'failGpu', shot: 'app-gpu-failed.png', en: 'a GPU computation failed: ', zh: 'GPU 计算失败：', reason: /simulated failure/ },
  ];
  const infos = [];
  for (const f of failures) {
    const app = await openApp(browser, `${query}&backend=webgpu`);
    try {
      if ((await waitState(app.page, ['ready', 'error'], 120000)) !== 'ready') throw new Error('not ready');
      await app.page.getByTestId('generate').click();
      await app.page.waitForFunction(() => Number(document.querySelector('[data-testid="progress"]').dataset.step || 0) >= 2, null, { timeout: 120000 });
      if ((await app.page.getByTestId('backend').getAttribute('data-backend')) !== 'webgpu') throw new Error(`${f.hook}: the run did not start on WebGPU`);
      await app.page.evaluate((hook) => globalThis.equivariantDebug[hook](), f.hook);
      infos.push(await finish(app.page));
      await app.page.screenshot({ path: path.join(ARTIFACTS, f.shot) });
      const backend = app.page.getByTestId('backend');
      if ((await backend.getAttribute('data-backend')) !== 'cpu') throw new Error(`${f.hook}: the run did not move to the CPU`);
      const label = await backend.textContent();
      // what happened, then the reason the browser gave, on one line
      const reason = label.startsWith('CPU (WebAssembly); ' + f.en) ? label.slice(('CPU (WebAssembly); ' + f.en).length) : '';
      // the crate's "GPU: " / "GPU device lost: " prefix is not repeated after the label's own wording
      if (/^GPU/.test(reason)) throw new Error(`${f.hook}: the label repeats the error's prefix: ${label}`);
      if (!f.reason.test(reason) || reason.includes('\n')) throw new Error(`${f.hook}: the backend label should say what happened, and why: ${JSON.stringify(label)}`);
      // the label follows a language switch, keeping the reason the browser gave
      await app.page.getByTestId('language').selectOption('zh');
      const zh = await backend.textContent();
      if (zh !== `CPU（WebAssembly）；${f.zh}${reason}`) throw new Error(`${f.hook}: the backend label was not translated: ${zh}`);
      if (app.errors.length) throw new Error(`${f.hook}: page errors: ${app.errors.join('; ')}`);
    } finally {
      await app.close();
    }
  }
  const cpu = await openApp(browser, `${query}&backend=cpu`);
  try {
    if ((await waitState(cpu.page, ['ready', 'error'], 120000)) !== 'ready') throw new Error('not ready');
    await cpu.page.getByTestId('generate').click();
    const infoCpu = await finish(cpu.page);
    console.log(`     after the loss / the failure: ${infos.join(' / ')}`);
    for (const [i, info] of infos.entries()) {
      if (info !== infoCpu) throw new Error(`after ${failures[i].hook}: ${info}, but a CPU run of the same seed gave ${infoCpu}`);
    }
  } finally {
    await cpu.close();
  }
});

test('app: a link with a step count off the menu runs it; a value that cannot be used stays reported through an autostarted run', async (browser) => {
  // autostart: the run begins at once, and the note must outlive the ready status it used to be part of
  const { page, close } = await openApp(browser, 'steps=20&batch=3&atoms=40&seed=4&backend=cpu&autostart=1');
  try {
    if ((await waitState(page, ['done', 'error'], 120000)) !== 'done') throw new Error(await page.getByTestId('status').textContent());
    const note = page.getByTestId('notice');
    const text = await note.textContent();
    if (!(await note.isVisible()) || !/batch=3 is not available; using 1/.test(text)) throw new Error(`batch=3 should be reported: ${text}`);
    if (!/atoms=40 is not available; using QM9 distribution/.test(text)) throw new Error(`atoms=40 should be reported: ${text}`);
    if (/steps=/.test(text)) throw new Error(`steps=20 is valid and should not be reported: ${text}`);
    if ((await page.getByTestId('steps').inputValue()) !== '20') throw new Error('steps=20 was not selected');
    const progress = await page.locator('#progress-text').textContent();
    if (!/of 21\b/.test(progress)) throw new Error(`expected 20 steps (21 frames), got: ${progress}`);
    // the note follows the language
    await page.getByTestId('language').selectOption('zh');
    const zh = await note.textContent();
    if (!/batch=3 不可用/.test(zh) || !/atoms=40 不可用，改用 QM9 分布/.test(zh)) throw new Error(`note not translated: ${zh}`);
  } finally {
    await close();
  }
});

const NO_GPU_ARGS = ARGS.filter((a) => !/webgpu|vulkan/i.test(a));
test('app: without WebGPU the CPU path generates', async () => {
  const noGpu = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: NO_GPU_ARGS });
  const { page, close } = await openApp(noGpu, 'steps=50&seed=3&atoms=qm9&batch=1');
  try {
    const r = await generateAndFinish(page, 'app-cpu-done.png');
    console.log(`     backend ${r.backend}, ${r.drawn} frames drawn, ${r.rate} steps/s, first frame ${r.first} ms`);
    if (r.backend !== 'cpu') throw new Error(`expected the CPU path, got ${r.backend}`);
    if (r.drawn < 10) throw new Error(`only ${r.drawn} distinct frames drawn`);
    const label = await page.getByTestId('backend').textContent();
    if (!/WebGPU/.test(label)) throw new Error(`the label should say why WebGPU is not used: ${label}`);
  } finally {
    await close();
    await noGpu.close();
  }
});

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ARGS, // playwright gives every launch a fresh temporary profile
});
// `node tests/browser/run.mjs <text>` runs only the tests whose name contains <text>
const only = process.argv[2];
const chosen = only ? tests.filter((t) => t.name.includes(only)) : tests;
if (!chosen.length) throw new Error(`no test name contains ${JSON.stringify(only)}`);
let failed = 0;
for (const t of chosen) {
  const t0 = Date.now();
  try {
    await t.fn(browser);
    console.log(`ok   ${t.name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${t.name}\n     ${e.stack || e}`);
  }
}
await browser.close();
console.log(`${chosen.length - failed} passed, ${failed} failed${only ? ` (of ${tests.length}; only names with ${JSON.stringify(only)})` : ''}; screenshots in ${ARTIFACTS}`);
process.exit(failed ? 1 : 0);
