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
    await page.waitForSelector('#selftest[data-state="done"], #selftest[data-state="error"]', { timeout: 60000 });
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

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ARGS, // playwright gives every launch a fresh temporary profile
});
let failed = 0;
for (const t of tests) {
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
console.log(`${tests.length - failed} passed, ${failed} failed; screenshots in ${ARTIFACTS}`);
process.exit(failed ? 1 : 0);
