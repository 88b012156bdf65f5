/** An element g of E(3) × S_n applied to the input of a second chain. */
export interface Transform {
  /** Row-major 3×3 orthogonal matrix (rotation or reflection). */
  rotation?: number[];
  translation?: [number, number, number];
  /** Atom i of the transformed chain is atom permutation[i] of the original (needs a fixed `atoms`). */
  permutation?: number[];
}

export interface Molecule {
  /** [n × 3] in Å */
  positions: Float32Array;
  /** indices into H, C, N, O, F */
  types: Uint8Array;
  /** (i, j, order) triples from EDM's distance rule */
  bonds: Uint32Array;
  atomStable: boolean[];
  stableAtoms: number;
  moleculeStable: boolean;
  formula: string;
  /** the chain went non-finite */
  failed: boolean;
  /** on the last frame: XYZ text */
  toXYZ?: () => string;
  /** on the last frame: SDF (V2000) text with bonds */
  toSDF?: () => string;
}

export interface Frame {
  step: number;
  total: number;
  /** diffusion time of the state (T = 1000 … 0) */
  t: number;
  finished: boolean;
  /** molecule 0's positions and types */
  positions: Float32Array;
  types: Uint8Array;
  molecules: Molecule[];
  /** with a `transform`: the chain of g·z_T */
  transformed: { positions: Float32Array; types: Uint8Array }[] | null;
  /** with a `transform`: the largest |g⁻¹·transformed − chain| in Å */
  deviation: number | null;
}

export interface CreateOptions {
  /** A safetensors file; default: the weights shipped in the package (checked against their SHA-256). */
  weightsUrl?: string | URL;
  backend?: 'auto' | 'webgpu' | 'cpu';
  /** Where the package's files are served, if a bundler moved this module away from them. */
  assetsUrl?: string | URL;
  onProgress?: (fraction: number) => void;
}

export interface SampleOptions {
  /** 1 to 29 (QM9's molecules have 3 to 29: the model never saw fewer); default: drawn from QM9's distribution */
  atoms?: number;
  /** 1 to 1000 (default 1000) */
  steps?: number;
  seed?: number;
  /** molecules per run (default 1); on WebGPU a batch holds at most 65,535 atoms (more: an `InputError`) */
  batch?: number;
  transform?: Transform;
  signal?: AbortSignal;
}

/**
 * The `name` of an error from `create` or `sample`, where the generator knows its kind (`Error::kind` of the
 * crate); other errors (bad options, a weights file that fails its SHA-256 check, a failed download, a worker that
 * fails to start) are plain `Error`s. A `GpuLostError` or `GpuError` during a run does not reach the caller: the
 * run restarts on the CPU.
 */
export type GeneratorErrorName =
  | 'WeightsError'
  | 'InputError'
  | 'NonFiniteError'
  | 'FinishedError'
  | 'NoAdapterError'
  | 'GpuError'
  | 'GpuLostError'
  | 'ConvertError'
  | 'TensorBackendError'
  | 'IoError'
  | 'JsonError';

/**
 * An error of the generator itself: its kind as `name`, and as `detail` the message without the words that name
 * that kind (`message` "weights file: tensor `egnn.embedding.weight` is missing" has the `detail` "tensor
 * `egnn.embedding.weight` is missing"; a message with no such words is its own `detail`).
 */
export interface GeneratorError extends Error {
  name: GeneratorErrorName;
  detail: string;
}

/**
 * Rejects and throws `GeneratorError`s, or plain `Error`s whose `name` is `'Error'`; `sample` whose `signal`
 * aborts throws a `DOMException` named `'AbortError'`.
 */
export declare class Generator {
  static create(options?: CreateOptions): Promise<Generator>;
  /** 'cpu' after a lost GPU device (the run goes on there) */
  readonly backend: 'webgpu' | 'cpu';
  readonly adapter: string | null;
  readonly fallbackReason: string | null;
  readonly model: string;
  sample(options?: SampleOptions): AsyncGenerator<Frame, void, void>;
  /** destroys the WebGPU device (a test of loss handling): the run restarts on the CPU from step 0 */
  simulateGpuLoss(): void;
  /** a GPU call the device refuses, the device staying up (a test of GpuError handling): handled like a loss */
  simulateGpuError(): void;
  dispose(): void;
}
