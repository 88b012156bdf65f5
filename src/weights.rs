//! Model weights: safetensors with the tensor names of EDM's state dict (spec §1.7) and a JSON metadata entry
//! `equivariant` holding the configuration and the training provenance.
//!
//! The loader checks every name, shape, dtype (F32, F16 or BF16) and value (finite), and names the offending
//! tensor in its error. A file without metadata (e.g. converted by other tools) is accepted when its shapes
//! define a consistent model; the width and depth are then read off the shapes.

use std::collections::{BTreeMap, HashMap};

use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::qm9;
use crate::schedule::Schedule;

/// Name of the safetensors metadata entry holding the [`ModelConfig`] as JSON.
pub const METADATA_KEY: &str = "equivariant";
pub const FORMAT: &str = "equivariant-edm/1";

/// Configuration stored next to the weights.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ModelConfig {
    #[serde(default = "default_format")]
    pub format: String,
    pub nf: usize,
    pub n_layers: usize,
    #[serde(default = "default_t")]
    pub diffusion_steps: usize,
    #[serde(default = "default_schedule")]
    pub noise_schedule: String,
    #[serde(default = "default_precision")]
    pub noise_precision: f64,
    #[serde(default = "default_norm")]
    pub normalize_factors: [f32; 3],
    #[serde(default = "default_types")]
    pub atom_types: Vec<String>,
    /// Atom-count histogram: atoms (as a string key) -> molecules.
    #[serde(default = "default_histogram")]
    pub n_nodes_histogram: BTreeMap<String, u32>,
    /// Training provenance (molecules seen, epochs, compute, loss, git commit, ...), free-form.
    #[serde(default)]
    pub provenance: serde_json::Value,
    /// Other entries (the trainer records EDM's fixed architecture settings: attention, tanh, ...), kept so
    /// that re-storing a file (`equivariant convert --f16`) loses nothing.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

fn default_format() -> String {
    FORMAT.into()
}
fn default_t() -> usize {
    crate::schedule::T
}
fn default_schedule() -> String {
    "polynomial_2".into()
}
fn default_precision() -> f64 {
    crate::schedule::PRECISION
}
fn default_norm() -> [f32; 3] {
    qm9::NORMALIZE
}
fn default_types() -> Vec<String> {
    qm9::ATOM_TYPES.iter().map(|s| s.to_string()).collect()
}
fn default_histogram() -> BTreeMap<String, u32> {
    qm9::N_NODES_HISTOGRAM
        .iter()
        .map(|&(n, c)| (n.to_string(), c))
        .collect()
}

impl ModelConfig {
    pub fn new(nf: usize, n_layers: usize) -> Self {
        ModelConfig {
            format: default_format(),
            nf,
            n_layers,
            diffusion_steps: default_t(),
            noise_schedule: default_schedule(),
            noise_precision: default_precision(),
            normalize_factors: default_norm(),
            atom_types: default_types(),
            n_nodes_histogram: default_histogram(),
            provenance: serde_json::Value::Null,
            extra: BTreeMap::new(),
        }
    }

    /// The histogram as sorted (atoms, molecules) pairs.
    pub fn histogram(&self) -> Vec<(usize, u32)> {
        let mut h: Vec<(usize, u32)> = self
            .n_nodes_histogram
            .iter()
            .filter_map(|(k, &v)| k.parse().ok().map(|n| (n, v)))
            .collect();
        h.sort();
        h
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::WeightsFormat(m));
        if self.nf == 0 || self.n_layers == 0 {
            return bad(format!(
                "nf {} and n_layers {} must be positive",
                self.nf, self.n_layers
            ));
        }
        if self.diffusion_steps != crate::schedule::T || self.noise_schedule != "polynomial_2" {
            return bad(format!(
                "only the polynomial_2 schedule with T = {} is supported, the file says {} with T = {}",
                crate::schedule::T,
                self.noise_schedule,
                self.diffusion_steps
            ));
        }
        if self.normalize_factors != qm9::NORMALIZE {
            return bad(format!(
                "normalize_factors {:?} differ from EDM's {:?}",
                self.normalize_factors,
                qm9::NORMALIZE
            ));
        }
        if self.atom_types != default_types() {
            return bad(format!(
                "atom types {:?} are not H, C, N, O, F",
                self.atom_types
            ));
        }
        let h = self.histogram();
        if h.is_empty() || h.iter().any(|&(n, _)| n == 0 || n > qm9::MAX_ATOMS) {
            return bad("atom-count histogram is empty or has sizes outside 1..=29".into());
        }
        Ok(())
    }
}

/// One tensor in f32, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor32 {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// A validated set of weights.
#[derive(Clone, Debug)]
pub struct Weights {
    pub config: ModelConfig,
    pub tensors: BTreeMap<String, Tensor32>,
}

/// Storage precision when writing weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
}

/// Every tensor of an EDM QM9 model of width `nf` and depth `n_layers`, with its shape (spec §1.7).
pub fn expected_tensors(nf: usize, n_layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut v = vec![
        ("buffer".to_string(), vec![1]),
        ("gamma.gamma".to_string(), vec![crate::schedule::T + 1]),
        ("dynamics.egnn.embedding.weight".into(), vec![nf, 7]),
        ("dynamics.egnn.embedding.bias".into(), vec![nf]),
        ("dynamics.egnn.embedding_out.weight".into(), vec![7, nf]),
        ("dynamics.egnn.embedding_out.bias".into(), vec![7]),
    ];
    for i in 0..n_layers {
        let p = format!("dynamics.egnn.e_block_{i}.");
        let items: [(&str, Vec<usize>); 15] = [
            ("gcl_0.edge_mlp.0.weight", vec![nf, 2 * nf + 2]),
            ("gcl_0.edge_mlp.0.bias", vec![nf]),
            ("gcl_0.edge_mlp.2.weight", vec![nf, nf]),
            ("gcl_0.edge_mlp.2.bias", vec![nf]),
            ("gcl_0.node_mlp.0.weight", vec![nf, 2 * nf]),
            ("gcl_0.node_mlp.0.bias", vec![nf]),
            ("gcl_0.node_mlp.2.weight", vec![nf, nf]),
            ("gcl_0.node_mlp.2.bias", vec![nf]),
            ("gcl_0.att_mlp.0.weight", vec![1, nf]),
            ("gcl_0.att_mlp.0.bias", vec![1]),
            ("gcl_equiv.coord_mlp.0.weight", vec![nf, 2 * nf + 2]),
            ("gcl_equiv.coord_mlp.0.bias", vec![nf]),
            ("gcl_equiv.coord_mlp.2.weight", vec![nf, nf]),
            ("gcl_equiv.coord_mlp.2.bias", vec![nf]),
            ("gcl_equiv.coord_mlp.4.weight", vec![1, nf]),
        ];
        for (name, shape) in items {
            v.push((format!("{p}{name}"), shape));
        }
    }
    v
}

/// Reads a tensor's bytes as f32 (little-endian F32, F16 or BF16).
pub fn to_f32(name: &str, dtype: Dtype, bytes: &[u8]) -> Result<Vec<f32>> {
    let err = |problem: String| Error::WeightsTensor {
        tensor: name.to_string(),
        problem,
    };
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        other => {
            return Err(err(format!(
                "dtype {other:?} is not supported (use F32, F16 or BF16)"
            )))
        }
    };
    if !bytes.len().is_multiple_of(width) {
        return Err(err(format!(
            "{} bytes is not a whole number of {dtype:?} values",
            bytes.len()
        )));
    }
    let out: Vec<f32> = match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
    };
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(err(format!(
            "non-finite value {} at flat index {i}",
            out[i]
        )));
    }
    Ok(out)
}

impl Weights {
    /// Parses and validates a safetensors file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Weights> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::WeightsFormat(format!(
                "not a readable safetensors file ({} bytes): {e} (truncated or corrupted download?)",
                bytes.len()
            ))
        })?;
        let (_, meta) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::WeightsFormat(format!("unreadable header: {e}")))?;
        let mut raw = HashMap::new();
        for name in st.names() {
            let view = st.tensor(name).map_err(|e| Error::WeightsTensor {
                tensor: name.to_string(),
                problem: e.to_string(),
            })?;
            raw.insert(name.to_string(), view);
        }
        let config = match meta.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
            Some(json) => serde_json::from_str::<ModelConfig>(json).map_err(|e| {
                Error::WeightsFormat(format!("metadata entry `{METADATA_KEY}` is not valid: {e}"))
            })?,
            None => {
                let emb = raw
                    .get("dynamics.egnn.embedding.weight")
                    .ok_or_else(|| Error::MissingTensor("dynamics.egnn.embedding.weight".into()))?;
                let nf = emb.shape().first().copied().unwrap_or(0);
                let n_layers = (0..)
                    .take_while(|i| {
                        raw.contains_key(&format!(
                            "dynamics.egnn.e_block_{i}.gcl_0.edge_mlp.0.weight"
                        ))
                    })
                    .count();
                ModelConfig::new(nf, n_layers)
            }
        };
        config.validate()?;
        let expected = expected_tensors(config.nf, config.n_layers);
        let mut tensors = BTreeMap::new();
        for (name, shape) in &expected {
            let view = raw
                .remove(name)
                .ok_or_else(|| Error::MissingTensor(name.clone()))?;
            if view.shape() != shape.as_slice() {
                return Err(Error::WeightsTensor {
                    tensor: name.clone(),
                    problem: format!(
                        "shape {:?}, expected {:?} for a {}x{} model",
                        view.shape(),
                        shape,
                        config.n_layers,
                        config.nf
                    ),
                });
            }
            let data = to_f32(name, view.dtype(), view.data())?;
            tensors.insert(
                name.clone(),
                Tensor32 {
                    shape: shape.clone(),
                    data,
                },
            );
        }
        if let Some(extra) = raw.keys().min() {
            return Err(Error::UnexpectedTensor(extra.clone()));
        }
        let w = Weights { config, tensors };
        w.check_gamma()?;
        Ok(w)
    }

    /// The stored γ table must be the polynomial_2 schedule (up to float32 rounding of an EMA average).
    fn check_gamma(&self) -> Result<()> {
        let reference = Schedule::default();
        let stored = &self.tensors["gamma.gamma"].data;
        for (i, (a, b)) in stored.iter().zip(&reference.gamma).enumerate() {
            if (a - b).abs() > 1e-4 + 1e-5 * b.abs() {
                return Err(Error::WeightsTensor {
                    tensor: "gamma.gamma".into(),
                    problem: format!(
                        "entry {i} is {a}, the polynomial_2 schedule gives {b}: a different noise schedule"
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> &Tensor32 {
        &self.tensors[name]
    }

    /// Random weights with PyTorch's default Linear init, U(±1/sqrt(fan_in)), and EDM's tiny last coordinate
    /// layer (xavier, gain 0.001), from the portable RNG: the same weights on every platform. For tests and demos.
    pub fn random(nf: usize, n_layers: usize, seed: u64) -> Weights {
        let mut tensors = BTreeMap::new();
        let schedule = Schedule::default();
        for (idx, (name, shape)) in expected_tensors(nf, n_layers).into_iter().enumerate() {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = if name == "gamma.gamma" {
                schedule.gamma.clone()
            } else if name == "buffer" {
                vec![0.0]
            } else {
                let fan_in = if name.ends_with("bias") {
                    // bias bound uses the fan-in of the matching weight
                    match name.as_str() {
                        n if n.contains("embedding.") => 7,
                        n if n.contains("embedding_out") => nf,
                        n if n.contains("edge_mlp.0") || n.contains("coord_mlp.0") => 2 * nf + 2,
                        n if n.contains("node_mlp.0") => 2 * nf,
                        _ => nf,
                    }
                } else {
                    shape[1]
                };
                let bound = if name.ends_with("coord_mlp.4.weight") {
                    0.001 * (6.0 / (nf as f32 + 1.0)).sqrt()
                } else {
                    1.0 / (fan_in as f32).sqrt()
                };
                (0..len)
                    .map(|i| {
                        let b = crate::rng::philox4x32_10(
                            [i as u32, idx as u32, 0x5EED, 0],
                            crate::rng::key(seed),
                        );
                        (2.0 * crate::rng::uniform(b[0]) - 1.0) * bound
                    })
                    .collect()
            };
            tensors.insert(name, Tensor32 { shape, data });
        }
        Weights {
            config: ModelConfig::new(nf, n_layers),
            tensors,
        }
    }

    /// Serialises to safetensors with the configuration as metadata.
    pub fn to_bytes(&self, precision: Precision) -> Result<Vec<u8>> {
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, t) in &self.tensors {
            let bytes: Vec<u8> = match precision {
                // the γ table stays f32: it is tiny and the sampler's precision hangs on it
                Precision::F16 if name != "gamma.gamma" => t
                    .data
                    .iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
                _ => t.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            };
            buffers.push((name.clone(), t.shape.clone(), bytes));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = buffers
            .iter()
            .map(|(name, shape, bytes)| {
                let dtype = if bytes.len() == 2 * shape.iter().product::<usize>() {
                    Dtype::F16
                } else {
                    Dtype::F32
                };
                let view = safetensors::tensor::TensorView::new(dtype, shape.clone(), bytes)
                    .map_err(|e| Error::WeightsFormat(e.to_string()))?;
                Ok((name.clone(), view))
            })
            .collect::<Result<_>>()?;
        let mut meta = HashMap::new();
        meta.insert(
            METADATA_KEY.to_string(),
            serde_json::to_string(&self.config)?,
        );
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::WeightsFormat(e.to_string()))
    }

    pub fn parameter_count(&self) -> usize {
        self.tensors
            .iter()
            .filter(|(n, _)| n.starts_with("dynamics."))
            .map(|(_, t)| t.data.len())
            .sum()
    }
}
