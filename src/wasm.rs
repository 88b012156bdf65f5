//! Browser bindings (wasm32 only): `Generator`, the sampler on WebGPU (the GPU backend) or on the CPU, with one
//! chain or two (the live-equivariance view: a chain from z_T and one from g·z_T), frames with bonds and
//! stability for the viewer, exports; and a start-up self-test that proves the sampler runs in the page.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use crate::chemistry::{bonds, formula, stability};
use crate::egnn::Egnn;
use crate::export::{to_sdf, to_xyz};
use crate::gpu::{GpuContext, GpuModel, GpuSampler};
use crate::sampler::{AtomCounts, Frame, Molecule, Sampler, SamplerConfig, Transform};
use crate::weights::Weights;

/// A crate error as a JavaScript `Error` whose `name` is the error's kind (`GpuLostError`, `WeightsError`, ...:
/// `Error::kind`) and whose `detail` is the message without the prefix naming that kind (`Error::detail`), so
/// callers act on the kind and show the inner text without parsing the message.
fn js_err(e: crate::Error) -> JsValue {
    let err = js_sys::Error::new(&e.to_string());
    err.set_name(e.kind());
    // setting a property on a fresh Error object cannot fail
    let _ = js_sys::Reflect::set(
        &err,
        &JsValue::from_str("detail"),
        &JsValue::from_str(&e.detail()),
    );
    err.into()
}

/// The `name`s the crate gives its JavaScript errors (`Error::KINDS`): an error named otherwise did not come from
/// the crate (a failed download, a wasm panic, a `TypeError`).
#[wasm_bindgen(js_name = errorKinds)]
pub fn error_kinds() -> Vec<String> {
    crate::Error::KINDS.iter().map(|k| k.to_string()).collect()
}

/// A plain JavaScript `Error` (misuse of the API, bad options).
fn plain_err(message: &str) -> JsValue {
    js_sys::Error::new(message).into()
}

/// g from JS: `{rotation: [9 numbers, row-major], translation: [3], permutation: [n] (optional)}`.
#[derive(serde::Deserialize, Default, Clone)]
struct JsTransform {
    #[serde(default)]
    rotation: Option<Vec<f32>>,
    #[serde(default)]
    translation: Option<[f32; 3]>,
    #[serde(default)]
    permutation: Option<Vec<usize>>,
}

impl JsTransform {
    fn to_transform(&self, molecules: usize) -> Result<Transform, JsValue> {
        let mut t = Transform::default();
        if let Some(r) = &self.rotation {
            if r.len() != 9 {
                return Err(plain_err(
                    "transform.rotation needs 9 numbers (row-major 3x3)",
                ));
            }
            for i in 0..3 {
                t.rotation[i].copy_from_slice(&r[i * 3..i * 3 + 3]);
            }
        }
        if let Some(s) = self.translation {
            t.translation = s;
        }
        if let Some(p) = &self.permutation {
            t.permutations = vec![p.clone(); molecules];
        }
        Ok(t)
    }
}

/// Options of a sampling run (`{molecules, atoms, steps, seed, equivariance, transform}`; atoms omitted = QM9
/// histogram; `equivariance: true` adds the chain of g·z_T).
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct RunOptions {
    #[serde(default = "one")]
    molecules: usize,
    #[serde(default)]
    atoms: Option<usize>,
    #[serde(default = "thousand")]
    steps: usize,
    #[serde(default = "one_u64")]
    seed: u64,
    #[serde(default)]
    equivariance: bool,
    #[serde(default)]
    transform: Option<JsTransform>,
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn thousand() -> usize {
    1000
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsMolecule {
    positions: Vec<f32>,
    types: Vec<u8>,
    /// (i, j, order) triples of the EDM distance rule
    bonds: Vec<u32>,
    atom_stable: Vec<bool>,
    stable_atoms: usize,
    molecule_stable: bool,
    formula: String,
    failed: bool,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct JsFrame {
    step: usize,
    total: usize,
    t: usize,
    finished: bool,
    /// chains[0]: from z_T; chains[1] (equivariance view): from g·z_T
    chains: Vec<Vec<JsMolecule>>,
    /// g⁻¹ applied to chain 1, in chain 0's atom order (the ghost), per molecule
    ghost: Option<Vec<Vec<f32>>>,
    /// largest |g⁻¹·chain1 − chain0| over atoms and molecules, in Å
    deviation: Option<f32>,
}

enum Chain {
    Cpu(Sampler<Egnn>),
    Gpu(Box<GpuSampler>),
}

impl Chain {
    fn finished(&self) -> bool {
        match self {
            Chain::Cpu(s) => s.is_finished(),
            Chain::Gpu(s) => s.is_finished(),
        }
    }
    async fn advance(&mut self, k: usize) -> crate::Result<()> {
        match self {
            Chain::Cpu(s) => {
                for _ in 0..k {
                    if s.is_finished() {
                        break;
                    }
                    s.step()?;
                }
                Ok(())
            }
            Chain::Gpu(s) => {
                if !s.is_finished() && k > 0 {
                    s.advance(k).await?;
                }
                Ok(())
            }
        }
    }
    async fn frame(&mut self) -> crate::Result<(Frame, usize)> {
        match self {
            Chain::Cpu(s) => Ok((s.frame(), s.total_steps())),
            Chain::Gpu(s) => Ok((s.frame().await?, s.total_steps())),
        }
    }
    async fn state(&mut self) -> crate::Result<Vec<Vec<f32>>> {
        match self {
            Chain::Cpu(s) => Ok(s.state().to_vec()),
            Chain::Gpu(s) => s.state().await,
        }
    }
    /// New g, and g·z as the state (a diverged molecule, whose z is not finite, keeps its state). g is validated
    /// by `set_transform` before anything changes.
    async fn retarget(&mut self, g: Transform, z: Vec<Vec<f32>>) -> crate::Result<()> {
        let finite = |zb: &[f32]| zb.iter().all(|v| v.is_finite());
        match self {
            Chain::Cpu(s) => {
                s.set_transform(g)?;
                for (b, zb) in z.into_iter().enumerate() {
                    if finite(&zb) {
                        s.set_state(b, zb)?;
                    }
                }
            }
            Chain::Gpu(s) => {
                s.set_transform(g)?;
                for (b, zb) in z.into_iter().enumerate() {
                    if finite(&zb) {
                        s.set_state(b, zb).await?;
                    }
                }
            }
        }
        Ok(())
    }
    fn molecules(&self) -> Option<&[Molecule]> {
        match self {
            Chain::Cpu(s) => s.molecules(),
            Chain::Gpu(s) => s.molecules(),
        }
    }
    fn transform(&self) -> &Transform {
        match self {
            Chain::Cpu(s) => s.transform(),
            Chain::Gpu(s) => s.transform(),
        }
    }
}

struct Inner {
    weights: Weights,
    gpu: Option<Rc<GpuModel>>,
    adapter: String,
    fallback: Option<String>,
    chains: Vec<Chain>,
    /// An async call (step, setTransform) holds the chains.
    busy: bool,
}

/// A molecule generator: weights, a backend, and the chains of the current run.
#[wasm_bindgen]
pub struct Generator {
    inner: Rc<RefCell<Inner>>,
}

/// g·z for one molecule's raw state: atom i of the result is atom perm[i] of z, x rotated (no translation: the
/// state is kept centred; the translation only shifts frames).
fn apply(g: &Transform, b: usize, z: &[f32]) -> Vec<f32> {
    let n = z.len() / 9;
    let perm = g.permutations.get(b).filter(|p| !p.is_empty());
    let mut out = vec![0.0f32; z.len()];
    for i in 0..n {
        let src = perm.map_or(i, |p| p[i]);
        let x = g.rotate([z[src * 9], z[src * 9 + 1], z[src * 9 + 2]]);
        out[i * 9..i * 9 + 3].copy_from_slice(&x);
        out[i * 9 + 3..i * 9 + 9].copy_from_slice(&z[src * 9 + 3..src * 9 + 9]);
    }
    out
}

/// g⁻¹ applied to positions of chain 1 (with translation), in chain 0's atom order.
fn unapply(g: &Transform, b: usize, pos: &[f32]) -> Vec<f32> {
    let n = pos.len() / 3;
    let perm = g.permutations.get(b).filter(|p| !p.is_empty());
    let r = &g.rotation;
    let mut out = vec![0.0f32; pos.len()];
    for i in 0..n {
        let d = [
            pos[i * 3] - g.translation[0],
            pos[i * 3 + 1] - g.translation[1],
            pos[i * 3 + 2] - g.translation[2],
        ];
        let dst = perm.map_or(i, |p| p[i]);
        for c in 0..3 {
            out[dst * 3 + c] = r[0][c] * d[0] + r[1][c] * d[1] + r[2][c] * d[2];
        }
    }
    out
}

fn js_molecule(positions: &[f32], types: &[u8], failed: bool) -> JsMolecule {
    let st = stability(positions, types);
    JsMolecule {
        bonds: bonds(positions, types)
            .iter()
            .flat_map(|b| [b.i as u32, b.j as u32, b.order as u32])
            .collect(),
        stable_atoms: st.stable_atoms(),
        molecule_stable: st.molecule_stable(),
        atom_stable: st.atom_stable,
        formula: formula(types),
        positions: positions.to_vec(),
        types: types.to_vec(),
        failed,
    }
}

/// Opens WebGPU; with `hardware_only`, a software adapter (SwiftShader) is refused because the wasm CPU path
/// is faster than it.
async fn open_gpu(w: &Weights, hardware_only: bool) -> crate::Result<(Rc<GpuModel>, String)> {
    let ctx = Rc::new(GpuContext::new_async().await?);
    if hardware_only && ctx.software {
        return Err(crate::Error::NoAdapter(format!(
            "only a software adapter ({}), slower than the CPU path",
            ctx.adapter
        )));
    }
    let label = ctx.adapter.clone();
    Ok((Rc::new(GpuModel::new(ctx, w)?), label))
}

#[wasm_bindgen]
impl Generator {
    /// Loads safetensors weights (errors name the offending tensor) and opens the backend: `"webgpu"`, `"cpu"`
    /// or `"auto"` (WebGPU on a hardware adapter, else the CPU, with the reason in `fallbackReason`).
    pub async fn create(weights: Vec<u8>, backend: String) -> Result<Generator, JsValue> {
        let weights = Weights::from_bytes(&weights).map_err(js_err)?;
        Self::open(weights, &backend).await
    }

    /// A generator with small random weights (demos and tests; the molecules are meaningless).
    pub async fn random(
        nf: usize,
        layers: usize,
        seed: u64,
        backend: String,
    ) -> Result<Generator, JsValue> {
        Self::open(Weights::random(nf, layers, seed), &backend).await
    }

    async fn open(weights: Weights, backend: &str) -> Result<Generator, JsValue> {
        let (gpu, adapter, fallback) = match backend {
            "cpu" => (None, String::new(), None),
            "webgpu" => {
                let (m, a) = open_gpu(&weights, false).await.map_err(js_err)?;
                (Some(m), a, None)
            }
            "auto" | "" => match open_gpu(&weights, true).await {
                Ok((m, a)) => (Some(m), a, None),
                Err(e) => (None, String::new(), Some(e.to_string())),
            },
            other => {
                return Err(plain_err(&format!(
                    "backend must be \"auto\", \"webgpu\" or \"cpu\", not {other:?}"
                )))
            }
        };
        Ok(Generator {
            inner: Rc::new(RefCell::new(Inner {
                weights,
                gpu,
                adapter,
                fallback,
                chains: Vec::new(),
                busy: false,
            })),
        })
    }

    /// `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        if self.inner.borrow().gpu.is_some() {
            "webgpu".into()
        } else {
            "cpu".into()
        }
    }

    /// The WebGPU adapter's description (empty on the CPU).
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> String {
        self.inner.borrow().adapter.clone()
    }

    /// Why `"auto"` fell back to the CPU, if it did.
    #[wasm_bindgen(getter, js_name = fallbackReason)]
    pub fn fallback_reason(&self) -> Option<String> {
        self.inner.borrow().fallback.clone()
    }

    /// Destroys the WebGPU device, as a driver reset or a removed GPU would: the step in flight or the next one
    /// fails with a device-lost error. Lets a page test its handling of a lost device (the bundled app restarts
    /// the run on the CPU). Does nothing on the CPU backend.
    #[wasm_bindgen(js_name = simulateGpuLoss)]
    pub fn simulate_gpu_loss(&self) {
        if let Some(m) = &self.inner.borrow().gpu {
            m.ctx.simulate_loss();
        }
    }

    /// Makes a GPU call the device refuses (an invalid buffer), as a driver or shader bug would on a device that
    /// stays up: the next step fails with a `GpuError`. Lets a page test its handling of a failed GPU call (the
    /// bundled app restarts the run on the CPU, as for a lost device). Does nothing on the CPU backend.
    #[wasm_bindgen(js_name = simulateGpuError)]
    pub fn simulate_gpu_error(&self) {
        if let Some(m) = &self.inner.borrow().gpu {
            m.ctx.simulate_error();
        }
    }

    /// Model size as `"9x128"`.
    #[wasm_bindgen(getter)]
    pub fn model(&self) -> String {
        let w = &self.inner.borrow().weights;
        format!("{}x{}", w.config.n_layers, w.config.nf)
    }

    /// Starts a run (one chain, or two with `equivariance: true`).
    pub fn start(&self, options: JsValue) -> Result<(), JsValue> {
        let o: RunOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| plain_err(&format!("options: {e}")))?;
        let mut inner = self.inner.borrow_mut();
        if inner.busy {
            return Err(plain_err(
                "a step is still running: await it before starting another run",
            ));
        }
        let base = SamplerConfig {
            molecules: o.molecules,
            atoms: o
                .atoms
                .map(AtomCounts::Fixed)
                .unwrap_or(AtomCounts::Histogram),
            steps: o.steps,
            seed: o.seed,
            histogram: inner.weights.config.histogram(),
            ..Default::default()
        };
        let mut configs = vec![base.clone()];
        if o.equivariance {
            let mut c = base;
            let g = o.transform.unwrap_or_default().to_transform(o.molecules)?;
            c.transform = Some(g);
            configs.push(c);
        }
        let mut chains = Vec::new();
        for c in configs {
            chains.push(match &inner.gpu {
                Some(m) => Chain::Gpu(Box::new(GpuSampler::new(m.clone(), c).map_err(js_err)?)),
                None => Chain::Cpu(
                    Sampler::new(Egnn::new(&inner.weights).map_err(js_err)?, c).map_err(js_err)?,
                ),
            });
        }
        inner.chains = chains;
        Ok(())
    }

    /// Advances every chain by up to `k` network evaluations and resolves to the frame (`k = 0`: the current
    /// frame). Calls must not overlap (await each).
    pub fn step(&self, k: usize) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut chains = take_chains(&inner)?;
            let result = step_chains(&mut chains, k).await;
            give_back(&inner, chains);
            result.map_err(js_err)
        })
    }

    /// Sets a new g for the second chain mid-run: it restarts from g applied to the first chain's current state
    /// and stays its image.
    #[wasm_bindgen(js_name = setTransform)]
    pub fn set_transform(&self, transform: JsValue) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let t: JsTransform = serde_wasm_bindgen::from_value(transform)
                .map_err(|e| plain_err(&format!("transform: {e}")))?;
            let mut chains = take_chains(&inner)?;
            let result = retarget(&mut chains, &t).await;
            give_back(&inner, chains);
            result?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// A finished molecule of a chain as XYZ text.
    pub fn xyz(&self, chain: usize, molecule: usize) -> Result<String, JsValue> {
        self.export(chain, molecule, to_xyz)
    }

    /// A finished molecule of a chain as SDF text (bonds inferred from distances).
    pub fn sdf(&self, chain: usize, molecule: usize) -> Result<String, JsValue> {
        self.export(chain, molecule, to_sdf)
    }

    fn export(
        &self,
        chain: usize,
        molecule: usize,
        f: impl Fn(&[f32], &[u8], &str) -> String,
    ) -> Result<String, JsValue> {
        let inner = self.inner.borrow();
        if inner.busy {
            return Err(plain_err(
                "a step is still running: await it before exporting",
            ));
        }
        let mols = inner
            .chains
            .get(chain)
            .and_then(|c| c.molecules())
            .ok_or_else(|| plain_err("no finished run to export"))?;
        let m = mols
            .get(molecule)
            .ok_or_else(|| plain_err(&format!("no molecule {molecule}")))?;
        if m.failed {
            return Err(plain_err(&format!(
                "molecule {molecule} diverged (non-finite positions); nothing to export"
            )));
        }
        Ok(f(
            &m.positions,
            &m.types,
            &format!(
                "molecule {molecule} {} (Equivariant, EDM)",
                formula(&m.types)
            ),
        ))
    }
}

/// Takes the chains out for an async call (no RefCell borrow is held across an await); overlapping calls get
/// an error instead of an empty run.
fn take_chains(inner: &Rc<RefCell<Inner>>) -> Result<Vec<Chain>, JsValue> {
    let mut i = inner.borrow_mut();
    if i.busy {
        return Err(plain_err(
            "another call is still running: await each call of the generator",
        ));
    }
    i.busy = true;
    Ok(std::mem::take(&mut i.chains))
}

fn give_back(inner: &Rc<RefCell<Inner>>, chains: Vec<Chain>) {
    let mut i = inner.borrow_mut();
    i.chains = chains;
    i.busy = false;
}

async fn step_chains(chains: &mut [Chain], k: usize) -> crate::Result<JsValue> {
    if chains.is_empty() {
        return Err(crate::Error::Input("no run: call start() first".into()));
    }
    let mut frames = Vec::new();
    for c in chains.iter_mut() {
        if k > 0 && !c.finished() {
            c.advance(k).await?;
        }
        frames.push(c.frame().await?);
    }
    let (f0, total) = &frames[0];
    let js_chains: Vec<Vec<JsMolecule>> = frames
        .iter()
        .zip(chains.iter())
        .map(|((f, _), chain)| {
            f.molecules
                .iter()
                .enumerate()
                .map(|(b, m)| {
                    let failed = chain
                        .molecules()
                        .and_then(|ms| ms.get(b))
                        .is_some_and(|m| m.failed);
                    js_molecule(&m.positions, &m.types, failed)
                })
                .collect()
        })
        .collect();
    let (ghost, deviation) = if frames.len() > 1 {
        let g = chains[1].transform().clone();
        let ghost: Vec<Vec<f32>> = frames[1]
            .0
            .molecules
            .iter()
            .enumerate()
            .map(|(b, m)| unapply(&g, b, &m.positions))
            .collect();
        let dev = ghost
            .iter()
            .zip(&f0.molecules)
            .flat_map(|(gh, m)| gh.iter().zip(&m.positions).map(|(a, b)| (a - b).abs()))
            .fold(0.0f32, f32::max);
        (Some(ghost), Some(dev))
    } else {
        (None, None)
    };
    let frame = JsFrame {
        step: f0.step,
        total: *total,
        t: f0.t,
        finished: f0.finished,
        chains: js_chains,
        ghost,
        deviation,
    };
    serde_wasm_bindgen::to_value(&frame).map_err(|e| crate::Error::Input(e.to_string()))
}

async fn retarget(chains: &mut [Chain], t: &JsTransform) -> Result<(), JsValue> {
    if chains.len() < 2 {
        return Err(plain_err(
            "no equivariance run: start with equivariance: true",
        ));
    }
    let z = chains[0].state().await.map_err(js_err)?;
    let g = t.to_transform(z.len())?;
    let gz: Vec<Vec<f32>> = z
        .iter()
        .enumerate()
        .map(|(b, zb)| apply(&g, b, zb))
        .collect();
    chains[1].retarget(g, gz).await.map_err(js_err)
}

/// Start-up: panic hook, then (in a page with `#selftest`) a self-test that samples with a small random model.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Some(out) = doc.get_element_by_id("selftest") else {
        return;
    };
    let now = || {
        web_sys::window()
            .and_then(|w| w.performance())
            .map(|p| p.now())
            .unwrap_or(0.0)
    };
    let t0 = now();
    let result = crate::sampler::self_test().map(|mols| {
        format!(
            "CPU sampler ran 21 network evaluations in {:.0} ms (random 3x32 model): {}",
            now() - t0,
            crate::sampler::self_test_summary(&mols)
        )
    });
    match result {
        Ok(text) => {
            out.set_text_content(Some(&text));
            let _ = out.set_attribute("data-state", "done");
        }
        Err(e) => {
            out.set_text_content(Some(&format!("error: {e}")));
            let _ = out.set_attribute("data-state", "error");
        }
    }
}
