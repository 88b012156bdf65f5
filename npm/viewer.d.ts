import type { Frame, Molecule } from './index.js';

export interface Viewer {
  show(frame: Frame | Molecule, molecule?: number): void;
  play(frames: AsyncIterable<Frame>, molecule?: number): Promise<Frame | null>;
  /** a PNG data URL of the view */
  png(): string;
  dispose(): void;
}

export declare function mountViewer(element: HTMLElement): Viewer;

/** <equivariant-viewer>: set `.frame` or call `.play(gen.sample(...))`. */
export declare class EquivariantViewer extends HTMLElement {
  set frame(f: Frame);
  play(frames: AsyncIterable<Frame>): Promise<Frame | null>;
}
