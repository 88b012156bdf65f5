// A three.js molecule view: atoms coloured and sized by element, bonds as 1-3 sticks by order, atoms with a
// wrong valence ringed in red, an optional ghost molecule (wireframe), orbit/zoom with the mouse, and an optional
// "drag rotates the input" mode that reports the rotation on release (arrow keys do the same in 15° steps).
import { Color, CylinderGeometry, DirectionalLight, Group, HemisphereLight, InstancedMesh, Matrix4, MeshBasicMaterial, MeshStandardMaterial, PerspectiveCamera, Quaternion, Scene, SphereGeometry, Vector3, WebGLRenderer } from 'three';
import { OrbitControls } from 'three/addons/controls/OrbitControls.js';

const COLORS = [0xffffff, 0x909090, 0x3050f8, 0xff0d0d, 0x90e050]; // H C N O F
const RADII = [0.25, 0.4, 0.38, 0.37, 0.35];
const MAX_ATOMS = 29;
const MAX_STICKS = 29 * 28 * 3;
// arrow keys in drag mode: rotation axis of the input, the same sense as dragging the mouse that way
const KEY_AXES = { ArrowLeft: [0, -1, 0], ArrowRight: [0, 1, 0], ArrowUp: [-1, 0, 0], ArrowDown: [1, 0, 0] };

export class MoleculeViewer {
  constructor(container, { dragRotates = false, onRotate = null } = {}) {
    this.container = container;
    this.renderer = new WebGLRenderer({ antialias: true, preserveDrawingBuffer: true });
    this.renderer.setPixelRatio(Math.min(window.devicePixelRatio || 1, 2));
    container.appendChild(this.renderer.domElement);
    this.scene = new Scene();
    this.scene.background = new Color(0x12151b);
    this.camera = new PerspectiveCamera(40, 1, 0.1, 500);
    this.camera.position.set(0, 0, 14);
    this.scene.add(new HemisphereLight(0xffffff, 0x303040, 2.2));
    const sun = new DirectionalLight(0xffffff, 1.6);
    sun.position.set(5, 8, 10);
    this.scene.add(sun);
    this.group = new Group();
    this.scene.add(this.group);

    const sphere = new SphereGeometry(1, 20, 14);
    this.atoms = new InstancedMesh(sphere, new MeshStandardMaterial({ roughness: 0.35 }), MAX_ATOMS);
    this.halos = new InstancedMesh(sphere, new MeshBasicMaterial({ color: 0xff3030, transparent: true, opacity: 0.35, depthWrite: false }), MAX_ATOMS);
    this.ghost = new InstancedMesh(sphere, new MeshBasicMaterial({ color: 0x7fd4ff, wireframe: true, transparent: true, opacity: 0.5 }), MAX_ATOMS);
    const stick = new CylinderGeometry(1, 1, 1, 10, 1);
    this.sticks = new InstancedMesh(stick, new MeshStandardMaterial({ color: 0xb8bcc8, roughness: 0.5 }), MAX_STICKS);
    for (const m of [this.atoms, this.halos, this.ghost, this.sticks]) {
      m.count = 0;
      m.frustumCulled = false;
      this.group.add(m);
    }
    this.controls = new OrbitControls(this.camera, this.renderer.domElement);
    this.controls.enableDamping = true;
    this.radius = 6;
    this.framesDrawn = 0;
    this.lastDrawnKey = null;
    this.pending = null;
    this.dragRotates = dragRotates;
    this.onRotate = onRotate;
    if (dragRotates) this.#installDrag();
    new ResizeObserver(() => this.#resize()).observe(container);
    this.#resize();
    const loop = () => {
      this.controls.update();
      if (this.pending) {
        this.#apply(this.pending);
        this.pending = null;
      }
      this.renderer.render(this.scene, this.camera);
      requestAnimationFrame(loop);
    };
    requestAnimationFrame(loop);
  }

  #resize() {
    const w = Math.max(this.container.clientWidth, 50);
    const h = Math.max(this.container.clientHeight, 50);
    this.renderer.setSize(w, h, false);
    this.camera.aspect = w / h;
    this.camera.updateProjectionMatrix();
  }

  // Drag rotates the displayed molecule (= the input g) instead of the camera; the rotation is reported on release.
  #installDrag() {
    const el = this.renderer.domElement;
    this.controls.enableRotate = false;
    let last = null;
    el.addEventListener('pointerdown', (e) => { last = [e.clientX, e.clientY]; el.setPointerCapture(e.pointerId); });
    el.addEventListener('pointermove', (e) => {
      if (!last) return;
      const dx = e.clientX - last[0];
      const dy = e.clientY - last[1];
      last = [e.clientX, e.clientY];
      const q = new Quaternion()
        .setFromAxisAngle(new Vector3(0, 1, 0), dx * 0.01)
        .multiply(new Quaternion().setFromAxisAngle(new Vector3(1, 0, 0), dy * 0.01));
      this.group.quaternion.premultiply(q);
    });
    const report = () => {
      const m = new Matrix4().makeRotationFromQuaternion(this.group.quaternion);
      const e = m.elements; // column-major 4x4
      const rows = [e[0], e[4], e[8], e[1], e[5], e[9], e[2], e[6], e[10]];
      if (this.onRotate) this.onRotate(rows);
    };
    const end = () => {
      if (!last) return;
      last = null;
      report();
    };
    el.addEventListener('pointerup', end);
    el.addEventListener('pointercancel', end);
    // keyboard equivalent: the view takes focus; each arrow key turns the input by 15° and reports it at once
    this.container.tabIndex = 0;
    this.container.addEventListener('keydown', (e) => {
      const axis = KEY_AXES[e.key];
      if (!axis || e.altKey || e.ctrlKey || e.metaKey) return; // Alt+Left is the browser's Back
      e.preventDefault();
      const q = new Quaternion().setFromAxisAngle(new Vector3(...axis), (15 * Math.PI) / 180);
      this.group.quaternion.premultiply(q);
      report();
    });
  }

  resetDrag() {
    this.group.quaternion.identity();
  }

  // mol: {positions, types, bonds, atomStable}; ghost: positions or null. Drawn at the next animation frame.
  show(mol, ghost = null, key = null) {
    this.pending = { mol, ghost, key };
  }

  #apply({ mol, ghost, key }) {
    const m = new Matrix4();
    const p = mol.positions;
    const n = mol.types.length;
    let far = 1;
    let halos = 0;
    for (let i = 0; i < n; i++) {
      const r = RADII[mol.types[i]] ?? 0.3;
      const x = p[3 * i], y = p[3 * i + 1], z = p[3 * i + 2];
      if (!Number.isFinite(x + y + z)) continue;
      far = Math.max(far, Math.hypot(x, y, z) + r);
      m.makeScale(r, r, r).setPosition(x, y, z);
      this.atoms.setMatrixAt(i, m);
      this.atoms.setColorAt(i, new Color(COLORS[mol.types[i]] ?? 0xff00ff));
      if (mol.atomStable && mol.atomStable[i] === false) {
        m.makeScale(r * 1.45, r * 1.45, r * 1.45).setPosition(x, y, z);
        this.halos.setMatrixAt(halos++, m);
      }
    }
    this.atoms.count = n;
    this.halos.count = halos;
    this.atoms.instanceMatrix.needsUpdate = true;
    if (this.atoms.instanceColor) this.atoms.instanceColor.needsUpdate = true;
    this.halos.instanceMatrix.needsUpdate = true;

    let s = 0;
    const up = new Vector3(0, 1, 0);
    const b = mol.bonds || [];
    for (let k = 0; k + 2 < b.length; k += 3) {
      const a = new Vector3(p[3 * b[k]], p[3 * b[k] + 1], p[3 * b[k] + 2]);
      const c = new Vector3(p[3 * b[k + 1]], p[3 * b[k + 1] + 1], p[3 * b[k + 1] + 2]);
      const dir = c.clone().sub(a);
      const len = dir.length();
      if (!(len > 1e-6)) continue;
      const q = new Quaternion().setFromUnitVectors(up, dir.clone().normalize());
      const side = new Vector3(1, 0, 0).applyQuaternion(q).multiplyScalar(0.13);
      const order = b[k + 2];
      const rad = order === 1 ? 0.075 : 0.05;
      for (let o = 0; o < order; o++) {
        const shift = side.clone().multiplyScalar(o - (order - 1) / 2);
        const mid = a.clone().add(c).multiplyScalar(0.5).add(shift);
        m.compose(mid, q, new Vector3(rad, len, rad));
        if (s < MAX_STICKS) this.sticks.setMatrixAt(s++, m);
      }
    }
    this.sticks.count = s;
    this.sticks.instanceMatrix.needsUpdate = true;

    let g = 0;
    if (ghost) {
      for (let i = 0; i < ghost.length / 3; i++) {
        const r = (RADII[mol.types[i]] ?? 0.3) * 1.15;
        m.makeScale(r, r, r).setPosition(ghost[3 * i], ghost[3 * i + 1], ghost[3 * i + 2]);
        this.ghost.setMatrixAt(g++, m);
      }
    }
    this.ghost.count = g;
    this.ghost.instanceMatrix.needsUpdate = true;

    // keep the whole cloud in view as it condenses (smoothly shrinking, never clipping)
    this.radius = Math.max(far, this.radius * 0.97);
    const dist = this.radius / Math.sin((this.camera.fov * Math.PI) / 360) * 1.05;
    const dirCam = this.camera.position.clone().sub(this.controls.target).normalize();
    this.camera.position.copy(this.controls.target.clone().add(dirCam.multiplyScalar(dist)));
    if (key !== null && key !== this.lastDrawnKey) {
      this.framesDrawn++;
      this.lastDrawnKey = key;
      this.container.dataset.framesDrawn = String(this.framesDrawn);
    }
  }

  resetView() {
    this.radius = 6;
    this.framesDrawn = 0;
    this.lastDrawnKey = null;
    this.container.dataset.framesDrawn = '0';
  }

  png() {
    this.renderer.render(this.scene, this.camera);
    return this.renderer.domElement.toDataURL('image/png');
  }
}
