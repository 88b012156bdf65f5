// The molecule view of the equivariant package (three.js bundled in): `mountViewer(element)` or the custom
// element <equivariant-viewer>, both fed with the frames of Generator.sample().
import { MoleculeViewer } from '../web/viewer.js';

/** Mounts a view into `element`; returns {show(frame, molecule = 0), play(frames), png(), dispose()}. */
export function mountViewer(element, options = {}) {
  const viewer = new MoleculeViewer(element, options);
  let key = 0;
  return {
    show(frame, molecule = 0) {
      const m = frame.molecules ? frame.molecules[molecule] : frame;
      viewer.show(m, null, `${frame.step ?? key++}`);
    },
    /** Plays an async iterable of frames (e.g. gen.sample(...)) as they come; resolves to the last frame. */
    async play(frames, molecule = 0) {
      let last = null;
      for await (const f of frames) {
        this.show(f, molecule);
        last = f;
      }
      return last;
    },
    png: () => viewer.png(),
    dispose: () => element.replaceChildren(),
  };
}

export class EquivariantViewer extends HTMLElement {
  connectedCallback() {
    if (!this.style.display) this.style.display = 'block';
    if (!this.style.height) this.style.height = '320px';
    if (!this.view) this.view = mountViewer(this);
  }
  /** Shows one frame of Generator.sample(). */
  set frame(f) {
    this.connectedCallback();
    this.view.show(f);
  }
  play(frames) {
    this.connectedCallback();
    return this.view.play(frames);
  }
}

if (typeof customElements !== 'undefined' && !customElements.get('equivariant-viewer')) {
  customElements.define('equivariant-viewer', EquivariantViewer);
}
