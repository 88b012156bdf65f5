// trunk post_build hook: bundles the page's JavaScript (web/app.js with three.js from node_modules) into the
// staging folder with esbuild, so the site needs nothing from another origin. The worker (web/worker.js) is
// copied by trunk as is: it imports the wasm-bindgen glue that trunk writes next to it.
import { build } from 'esbuild';
import path from 'node:path';

const staging = process.env.TRUNK_STAGING_DIR;
if (!staging) throw new Error('run by trunk (TRUNK_STAGING_DIR is not set)');
const release = process.env.TRUNK_PROFILE === 'release';
await build({
  entryPoints: ['web/app.js'],
  bundle: true,
  format: 'esm',
  minify: release,
  sourcemap: !release,
  target: 'es2022',
  outfile: path.join(staging, 'app.js'),
  logLevel: 'warning',
});
