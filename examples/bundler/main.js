// The equivariant package through a bundler (esbuild here: `npm run build`, see package.json). esbuild does not
// copy assets referenced by new URL(..., import.meta.url), so the build copies the package's files to
// dist/equivariant/ and the page passes that folder as assetsUrl.
import { Generator } from 'equivariant';
import { mountViewer } from 'equivariant/viewer';

const status = document.getElementById('status');
try {
  const gen = await Generator.create({ assetsUrl: './equivariant/', backend: new URLSearchParams(location.search).get('backend') || 'auto' });
  status.dataset.backend = gen.backend;
  const view = mountViewer(document.getElementById('view'));
  let frames = 0;
  let last = null;
  for await (const frame of gen.sample({ atoms: 9, steps: 50, seed: 2 })) {
    view.show(frame);
    frames++;
    last = frame;
  }
  document.getElementById('xyz').textContent = last.molecules[0].toXYZ();
  status.dataset.frames = String(frames);
  status.textContent = `${last.molecules[0].formula}, ${frames} frames`;
  status.dataset.state = 'done';
} catch (e) {
  status.textContent = `error: ${e.message}`;
  status.dataset.state = 'error';
}
