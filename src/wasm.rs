//! Browser bindings (wasm32 only): a `Generator` class over the CPU sampler, and a start-up self-test that
//! proves the sampler runs in the page.

use wasm_bindgen::prelude::*;

use crate::egnn::Egnn;
use crate::export::{to_sdf, to_xyz};
use crate::sampler::{AtomCounts, Frame, Sampler, SamplerConfig};
use crate::weights::Weights;

fn js_err(e: crate::Error) -> JsError {
    JsError::new(&e.to_string())
}

/// Options of a sampling run, from JS (`{molecules, atoms, steps, seed}`; atoms omitted = QM9 histogram).
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
struct JsMolecule {
    positions: Vec<f32>,
    types: Vec<u8>,
}

#[derive(serde::Serialize)]
struct JsFrame {
    step: usize,
    total: usize,
    t: usize,
    finished: bool,
    molecules: Vec<JsMolecule>,
}

/// A molecule generator: weights plus, while a run is active, its sampler.
#[wasm_bindgen]
pub struct Generator {
    weights: Weights,
    /// The model, laid out once; it moves into the sampler during a run and is taken back for the next.
    egnn: Option<Egnn>,
    sampler: Option<Sampler<Egnn>>,
}

#[wasm_bindgen]
impl Generator {
    /// Loads safetensors weights (errors name the offending tensor).
    #[wasm_bindgen(constructor)]
    pub fn new(weights: &[u8]) -> Result<Generator, JsError> {
        let weights = Weights::from_bytes(weights).map_err(js_err)?;
        Ok(Generator {
            egnn: Some(Egnn::new(&weights).map_err(js_err)?),
            weights,
            sampler: None,
        })
    }

    /// A generator with small random weights (for demos and tests; the molecules are meaningless).
    pub fn random(nf: usize, layers: usize, seed: u64) -> Result<Generator, JsError> {
        let weights = Weights::random(nf, layers, seed);
        Ok(Generator {
            egnn: Some(Egnn::new(&weights).map_err(js_err)?),
            weights,
            sampler: None,
        })
    }

    /// Starts a run; returns the first frame (z_T).
    pub fn start(&mut self, options: JsValue) -> Result<JsValue, JsError> {
        let o: RunOptions = serde_wasm_bindgen::from_value(options)
            .map_err(|e| JsError::new(&format!("options: {e}")))?;
        let config = SamplerConfig {
            molecules: o.molecules,
            atoms: o
                .atoms
                .map(AtomCounts::Fixed)
                .unwrap_or(AtomCounts::Histogram),
            steps: o.steps,
            seed: o.seed,
            histogram: self.weights.config.histogram(),
            ..Default::default()
        };
        let egnn = match (self.sampler.take(), self.egnn.take()) {
            (Some(previous), _) => previous.into_denoiser(),
            (None, Some(egnn)) => egnn,
            (None, None) => Egnn::new(&self.weights).map_err(js_err)?,
        };
        let s = Sampler::new(egnn, config).map_err(js_err)?;
        let frame = to_js(&s.frame(), s.total_steps())?;
        self.sampler = Some(s);
        Ok(frame)
    }

    /// Advances up to `k` network evaluations and returns the latest frame.
    pub fn step(&mut self, k: usize) -> Result<JsValue, JsError> {
        let s = self
            .sampler
            .as_mut()
            .ok_or_else(|| JsError::new("no run: call start() first"))?;
        for _ in 0..k.max(1) {
            if s.is_finished() {
                break;
            }
            s.step().map_err(js_err)?;
        }
        to_js(&s.frame(), s.total_steps())
    }

    /// The finished molecules as XYZ text.
    pub fn xyz(&self) -> Result<String, JsError> {
        self.export(to_xyz)
    }

    /// The finished molecules as SDF text (bonds inferred from distances).
    pub fn sdf(&self) -> Result<String, JsError> {
        self.export(to_sdf)
    }

    fn export(&self, f: impl Fn(&[f32], &[u8], &str) -> String) -> Result<String, JsError> {
        let mols = self
            .sampler
            .as_ref()
            .and_then(|s| s.molecules())
            .ok_or_else(|| JsError::new("no finished run to export"))?;
        Ok(mols
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.failed)
            .map(|(i, m)| {
                f(
                    &m.positions,
                    &m.types,
                    &format!("molecule {i} {}", crate::chemistry::formula(&m.types)),
                )
            })
            .collect())
    }
}

fn to_js(frame: &Frame, total: usize) -> Result<JsValue, JsError> {
    let f = JsFrame {
        step: frame.step,
        total,
        t: frame.t,
        finished: frame.finished,
        molecules: frame
            .molecules
            .iter()
            .map(|m| JsMolecule {
                positions: m.positions.clone(),
                types: m.types.clone(),
            })
            .collect(),
    };
    serde_wasm_bindgen::to_value(&f).map_err(|e| JsError::new(&e.to_string()))
}

/// Start-up: panic hook, then a self-test that samples with a small random model and reports in the page.
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
