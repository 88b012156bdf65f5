// The npm package end to end: `npm pack` the built pkg/ (scripts/build_npm.sh), install the tarball into a
// fresh project, and in headless Chromium generate molecules through the public API from the plain-HTML example
// (WebGPU on SwiftShader, and backend 'cpu') and from the bundler example (esbuild); frames must arrive and the
// final XYZ must parse.
import { chromium } from 'playwright-core';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { serve } from '../browser/server.mjs';

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const PKG = path.join(ROOT, 'pkg');
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
fs.mkdirSync(ARTIFACTS, { recursive: true });
if (!fs.existsSync(path.join(PKG, 'package.json'))) throw new Error('pkg/ is missing: run scripts/build_npm.sh');

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'equivariant-npm-'));
const packed = JSON.parse(execFileSync('npm', ['pack', '--json', '--pack-destination', tmp], { cwd: PKG }).toString())[0];
const tarball = path.join(tmp, packed.filename);
console.log(`tarball ${packed.filename}: ${(fs.statSync(tarball).size / 1e6).toFixed(2)} MB packed, ${(packed.unpackedSize / 1e6).toFixed(2)} MB unpacked, ${packed.entryCount} files`);

const project = path.join(tmp, 'project');
fs.mkdirSync(project);
fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', tarball], { cwd: project, stdio: 'inherit' });
fs.copyFileSync(path.join(ROOT, 'examples/plain/index.html'), path.join(project, 'index.html'));

// the bundler example, built with esbuild against the installed package
const bundled = path.join(project, 'bundled');
fs.mkdirSync(path.join(bundled, 'equivariant'), { recursive: true });
execFileSync(path.join(ROOT, 'node_modules/.bin/esbuild'), [path.join(ROOT, 'examples/bundler/main.js'), '--bundle', '--format=esm',
  `--outfile=${path.join(bundled, 'main.js')}`, '--log-level=warning'], { env: { ...process.env, NODE_PATH: path.join(project, 'node_modules') } });
fs.copyFileSync(path.join(ROOT, 'examples/bundler/index.html'), path.join(bundled, 'index.html'));
const inst = path.join(project, 'node_modules/equivariant');
for (const f of ['worker.js', 'equivariant.js', 'equivariant_bg.wasm']) fs.copyFileSync(path.join(inst, f), path.join(bundled, 'equivariant', f));
fs.cpSync(path.join(inst, 'weights'), path.join(bundled, 'equivariant/weights'), { recursive: true });

// a page that loses the GPU device through the public API mid-run, then samples the same seed on the CPU
fs.writeFileSync(path.join(project, 'lost.html'), `<!doctype html><meta charset="utf-8"><p id="status" data-state="loading"></p><pre id="xyz"></pre>
<script type="module">
  import { Generator } from './node_modules/equivariant/index.js';
  const status = document.getElementById('status');
  const options = { atoms: 9, steps: 50, seed: 3 };
  // where the page is, for a test that times out
  const phase = (p) => { status.dataset.phase = p; };
  try {
    phase('a loss mid-run');
    const gen = await Generator.create({ backend: 'webgpu' });
    let frames = 0, last = null, restarted = false, prev = -1;
    for await (const f of gen.sample(options)) {
      if (++frames === 2) gen.simulateGpuLoss();
      if (f.step < prev) restarted = true;
      prev = f.step;
      last = f;
    }
    phase('the same seed on the CPU');
    const cpu = await Generator.create({ backend: 'cpu' });
    let ref = null;
    for await (const f of cpu.sample(options)) ref = f;
    if (gen.backend !== 'cpu' || !/lost/i.test(gen.fallbackReason || '')) throw new Error('backend ' + gen.backend + ', reason ' + gen.fallbackReason);
    if (!restarted) throw new Error('the frames did not restart after the loss');
    const a = last.molecules[0].toXYZ(), b = ref.molecules[0].toXYZ();
    if (a !== b) throw new Error('the molecule differs from a CPU run of the same seed:\\n' + a + '\\n' + b);
    // lost while idle: the next run starts on the CPU
    phase('a loss between runs');
    const idle = await Generator.create({ backend: 'webgpu' });
    idle.simulateGpuLoss();
    let late = null;
    for await (const f of idle.sample(options)) late = f;
    if (idle.backend !== 'cpu') throw new Error('a device lost between runs: the next run is on ' + idle.backend);
    if (late.molecules[0].toXYZ() !== b) throw new Error('a device lost between runs: the molecule differs');
    // a GPU call refused mid-run, the device staying up (a GpuError): the same restart on the CPU, with the GPU's
    // message (naming the refused buffer) as the reason
    phase('a failed GPU call mid-run');
    const failing = await Generator.create({ backend: 'webgpu' });
    let failed = null, k = 0;
    for await (const f of failing.sample(options)) {
      if (++k === 2) failing.simulateGpuError();
      failed = f;
    }
    if (failing.backend !== 'cpu' || !/simulated failure/.test(failing.fallbackReason || '')) {
      throw new Error('a failed GPU call: backend ' + failing.backend + ', reason ' + failing.fallbackReason);
    }
    if (failed.molecules[0].toXYZ() !== b) throw new Error('a failed GPU call: the molecule differs from the CPU run');
    failing.dispose();
    // a bad input on WebGPU is the caller's error, named by its kind, and the generator stays on the GPU
    phase('bad inputs on WebGPU');
    const bad = await Generator.create({ backend: 'webgpu' });
    let named = null;
    try { for await (const f of bad.sample({ atoms: 40, steps: 5 })) void f; } catch (e) { named = e; }
    if (named?.name !== 'InputError' || !/atom count 40/.test(named.message) || bad.backend !== 'webgpu') {
      throw new Error('atoms 40 on WebGPU: ' + named?.name + ' ' + named?.message + ', backend ' + bad.backend);
    }
    // a GPU size limit: its message mentions the GPU, but it is the caller's input, not a lost device
    named = null;
    try { for await (const f of bad.sample({ atoms: 29, batch: 2300, steps: 2 })) void f; } catch (e) { named = e; }
    if (named?.name !== 'InputError' || !/GPU batch holds at most 65,535 atoms/.test(named.message) || bad.backend !== 'webgpu') {
      throw new Error('66,700 atoms on WebGPU: ' + named?.name + ' ' + named?.message + ', backend ' + bad.backend);
    }
    // its detail is the message without the words that name its kind
    if (!/^a GPU batch holds/.test(named.detail) || named.message !== 'invalid input: ' + named.detail) {
      throw new Error('the detail of an InputError: ' + JSON.stringify(named.detail) + ' of ' + JSON.stringify(named.message));
    }
    bad.dispose();
    document.getElementById('xyz').textContent = a;
    Object.assign(status.dataset, { backend: gen.backend, frames: String(frames), state: 'done' });
    status.textContent = last.molecules[0].formula + ' after the loss (' + gen.fallbackReason + ')';
  } catch (e) {
    status.textContent = 'error: ' + e.message;
    status.dataset.state = 'error';
  }
</script>`);

const ARGS = ['--headless=new', '--no-sandbox', '--enable-unsafe-webgpu', '--enable-features=Vulkan',
  '--use-vulkan=swiftshader', '--use-webgpu-adapter=swiftshader', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'];
const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', args: ARGS });
const server = await serve(project, { prefix: '/' });
const port = server.address().port;
let failed = 0;
// `node tests/npm/run.mjs <text>` runs only the pages whose test name contains <text>
const only = process.argv[2];
let ran = 0;
for (const [name, url, backend, minFrames] of [
  ['plain HTML, backend webgpu', 'index.html?backend=webgpu&steps=30&atoms=9', 'webgpu', 5],
  ['plain HTML, backend cpu', 'index.html?backend=cpu&steps=100&atoms=9', 'cpu', 5],
  ['bundler (esbuild), backend cpu', 'bundled/index.html?backend=cpu', 'cpu', 5],
  ['a GPU device lost mid-run or between runs (simulateGpuLoss), or a GPU call failing mid-run (simulateGpuError): the run restarts on the CPU, same molecule; a bad input is an InputError and stays on WebGPU', 'lost.html', 'cpu', 5],
]) {
  if (only && !name.includes(only)) continue;
  ran++;
  const page = await browser.newPage();
  // a script that does not even run (a syntax error) fails with its error, not a bare timeout
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(e.message));
  const t0 = Date.now();
  try {
    await page.goto(`http://127.0.0.1:${port}/${url}`);
    await page.waitForSelector('#status[data-state="done"], #status[data-state="error"]', { timeout: 240000 }).catch(async (e) => {
      const phase = await page.locator('#status').getAttribute('data-phase').catch(() => null);
      const where = [phase && `the page was at: ${phase}`, pageErrors.length && `page errors: ${pageErrors.join('; ')}`];
      throw new Error(`${e.message.split('\n')[0]}${where.some(Boolean) ? ` (${where.filter(Boolean).join('; ')})` : ''}`);
    });
    await page.screenshot({ path: path.join(ARTIFACTS, `npm-${name.replace(/\W+/g, '-')}.png`) });
    const st = page.locator('#status');
    if ((await st.getAttribute('data-state')) !== 'done') throw new Error(await st.textContent());
    if ((await st.getAttribute('data-backend')) !== backend) throw new Error(`backend ${await st.getAttribute('data-backend')}, expected ${backend}`);
    const frames = Number(await st.getAttribute('data-frames'));
    if (frames < minFrames) throw new Error(`only ${frames} frames arrived`);
    const xyz = (await page.locator('#xyz').textContent()).trim().split('\n');
    const n = Number(xyz[0]);
    if (n !== 9 || xyz.length !== n + 2 || xyz.slice(2).some((l) => l.trim().split(/\s+/).slice(1).some((v) => !Number.isFinite(Number(v))))) {
      throw new Error(`final XYZ does not parse:\n${xyz.join('\n')}`);
    }
    console.log(`ok   ${name}: ${frames} frames, ${await st.textContent()} (${Date.now() - t0} ms)`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}\n     ${e.stack || e}`);
  } finally {
    await page.close();
  }
}
await browser.close();
server.close();
if (only && !ran) throw new Error(`no test name contains ${JSON.stringify(only)}`);
console.log(`${ran - failed} passed, ${failed} failed${only ? ` (only names with ${JSON.stringify(only)})` : ''}`);
fs.rmSync(tmp, { recursive: true, force: true });
process.exit(failed ? 1 : 0);
