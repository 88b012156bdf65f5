// equivariant: EDM molecule generation (E(3)-equivariant diffusion, EGNN denoiser) in the browser.
// The sampler runs in a module Web Worker shipped with this package (WebGPU when the browser has a hardware
// adapter, else WebAssembly on the CPU); this module is its promise / async-iterator front end.

const HERE = new URL('./', import.meta.url);

// an error from the worker, with the kind the wasm side gave it as `name` (`WeightsError`, `InputError`,
// `GpuLostError`, ...) and the message without the prefix naming that kind as `detail`; plain `Error` otherwise)
function workerError(m) {
  const e = new Error(m.message);
  if (m.name) Object.assign(e, { name: m.name, detail: m.detail });
  return e;
}

/** Turns a worker frame into the public shape: typed arrays, molecule 0 at the top level. */
function decorate(f) {
  const molecules = f.chains[0].map((m) => ({
    positions: Float32Array.from(m.positions),
    types: Uint8Array.from(m.types),
    bonds: Uint32Array.from(m.bonds),
    atomStable: m.atomStable,
    stableAtoms: m.stableAtoms,
    moleculeStable: m.moleculeStable,
    formula: m.formula,
    failed: m.failed,
  }));
  return {
    step: f.step,
    total: f.total,
    t: f.t,
    finished: f.finished,
    positions: molecules[0].positions,
    types: molecules[0].types,
    molecules,
    transformed: f.chains[1] ? f.chains[1].map((m) => ({ positions: Float32Array.from(m.positions), types: Uint8Array.from(m.types) })) : null,
    deviation: f.deviation ?? null,
  };
}

export class Generator {
  #worker;
  #listeners = new Set();
  #busy = false;
  #nextId = 1;

  constructor(worker) {
    this.#worker = worker;
    worker.onmessage = (e) => {
      const m = e.data;
      if (m.type === 'gpu-lost') {
        // the worker reopened the model on the CPU and restarted the run: the generator now says so
        Object.assign(this, { backend: m.backend, adapter: m.adapter || null, fallbackReason: m.reason });
      }
      for (const l of [...this.#listeners]) l(m);
    };
    worker.onerror = (e) => { for (const l of [...this.#listeners]) l({ type: 'error', message: e.message || 'worker failed to start' }); };
    /** 'webgpu' or 'cpu' */
    this.backend = null;
    /** the WebGPU adapter, if any */
    this.adapter = null;
    /** why 'auto' did not use WebGPU, if it did not */
    this.fallbackReason = null;
    /** e.g. '9x128' */
    this.model = null;
  }

  /**
   * Loads the model. `weightsUrl`: a safetensors file (default: the weights shipped in this package, checked
   * against their SHA-256); `backend`: 'auto' | 'webgpu' | 'cpu'; `assetsUrl`: where this package's files are
   * served (default: next to this module; set it when a bundler moves this module); `onProgress(fraction)`.
   */
  static async create({ weightsUrl, backend = 'auto', assetsUrl, onProgress } = {}) {
    const base = assetsUrl ? new URL(assetsUrl, globalThis.location?.href) : HERE;
    const gen = new Generator(new Worker(new URL('worker.js', base), { type: 'module' }));
    const init = { type: 'init', backend };
    if (weightsUrl) init.weightsUrl = new URL(weightsUrl, globalThis.location?.href).href;
    else init.manifestUrl = new URL('weights/manifest.json', base).href;
    const ready = await gen.#request(init, (m) => {
      if (m.type === 'progress' && onProgress) onProgress(m.fraction);
      return m.type === 'ready';
    });
    Object.assign(gen, { backend: ready.backend, adapter: ready.adapter || null, fallbackReason: ready.fallbackReason, model: ready.model });
    return gen;
  }

  #request(message, isAnswer) {
    return new Promise((resolve, reject) => {
      const l = (m) => {
        if (m.type === 'error') { this.#listeners.delete(l); reject(workerError(m)); }
        else if (isAnswer(m)) { this.#listeners.delete(l); resolve(m); }
      };
      this.#listeners.add(l);
      this.#worker.postMessage(message);
    });
  }

  /**
   * Samples molecules, yielding a frame per few denoising steps: `{step, total, t, finished, positions, types,
   * molecules, deviation}`. Options: `atoms` (1-29, QM9's molecules having 3-29; default: drawn from QM9), `steps` (default 1000), `seed`,
   * `batch` (molecules), `transform` ({rotation: [9], translation: [3], permutation}: adds the chain of g·z_T,
   * see `frame.transformed` and `frame.deviation`), `signal` (an AbortSignal). The last frame's molecules have
   * `toXYZ()` and `toSDF()`.
   */
  async *sample({ atoms, steps = 1000, seed = 1, batch = 1, transform, signal } = {}) {
    if (this.#busy) throw new Error('a sampling run is already active on this generator');
    if (signal?.aborted) throw new DOMException('sampling aborted', 'AbortError');
    this.#busy = true;
    const queue = [];
    let ended = null;
    let wake = null;
    const run = this.#nextId++;
    const l = (m) => {
      if (m.run !== undefined && m.run !== run) return; // from an earlier, cancelled run
      if (m.type === 'frame') queue.push(m.frame);
      else if (m.type === 'done' || m.type === 'stopped') ended = { ok: true };
      else if (m.type === 'error') ended = { error: workerError(m) };
      else return;
      wake?.();
    };
    const abort = () => this.#worker.postMessage({ type: 'stop' });
    this.#listeners.add(l);
    signal?.addEventListener('abort', abort);
    this.#worker.postMessage({
      type: 'start',
      run,
      options: { molecules: batch, atoms, steps, seed, equivariance: !!transform, transform },
    });
    try {
      for (;;) {
        while (queue.length) {
          const f = decorate(queue.shift());
          if (f.finished) await this.#attachExports(f);
          yield f;
        }
        if (ended) break;
        await new Promise((r) => { wake = r; });
        wake = null;
      }
      if (ended.error) throw ended.error;
      if (signal?.aborted) throw new DOMException('sampling aborted', 'AbortError');
    } finally {
      signal?.removeEventListener('abort', abort);
      this.#listeners.delete(l);
      this.#busy = false;
    }
  }

  async #attachExports(frame) {
    for (let b = 0; b < frame.molecules.length; b++) {
      const m = frame.molecules[b];
      if (m.failed) continue;
      for (const format of ['xyz', 'sdf']) {
        const id = this.#nextId++;
        const r = await this.#request({ type: 'export', format, chain: 0, molecule: b, id }, (x) => x.type === 'export' && x.id === id);
        if (format === 'xyz') m.toXYZ = () => r.text;
        else m.toSDF = () => r.text;
      }
    }
  }

  /**
   * Destroys the WebGPU device, as a driver reset or a removed GPU would, to test a page's handling of it: the
   * running sample() restarts on the CPU (its frames begin again at step 0, same seed, same molecules) and
   * `backend` becomes 'cpu' with the reason in `fallbackReason`. Does nothing on the CPU backend.
   */
  simulateGpuLoss() {
    this.#worker.postMessage({ type: 'simulate-gpu-loss' });
  }

  /**
   * Makes a GPU call that the device refuses (an invalid buffer) while the device stays up, as a driver or shader
   * bug would, to test a page's handling of a failed GPU computation: handled like a loss (the running sample()
   * restarts on the CPU, `backend` becomes 'cpu', the GPU's message in `fallbackReason`). Does nothing on the CPU
   * backend.
   */
  simulateGpuError() {
    this.#worker.postMessage({ type: 'simulate-gpu-error' });
  }

  /** Ends the worker. */
  dispose() {
    this.#worker.terminate();
  }
}
