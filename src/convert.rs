//! Converter from the original EDM checkpoint (`generative_model_ema.npy`: despite the name, a `torch.save`
//! zip archive of the model's state dict) to this project's safetensors format.
//!
//! The pickle is read by candle-core's pickle reader, which interprets the data and executes no code.
//! Native only (it reads a file from disk).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::DType;

use crate::error::{Error, Result};
use crate::weights::{ModelConfig, Tensor32, Weights};

/// Reads a PyTorch state-dict checkpoint into validated [`Weights`].
pub fn read_torch_checkpoint(path: &Path) -> Result<Weights> {
    let tensors = candle_core::pickle::read_all(path).map_err(|e| {
        Error::Convert(format!(
            "{}: not a readable torch.save checkpoint ({e}); expected EDM's generative_model_ema.npy",
            path.display()
        ))
    })?;
    if tensors.is_empty() {
        return Err(Error::Convert(format!(
            "{}: the checkpoint holds no tensors",
            path.display()
        )));
    }
    let mut map = BTreeMap::new();
    for (name, t) in tensors {
        let name = name.strip_prefix("module.").unwrap_or(&name).to_string();
        let shape = t.dims().to_vec();
        let data = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| Error::WeightsTensor {
                tensor: name.clone(),
                problem: format!("cannot read as float: {e}"),
            })?;
        map.insert(name, Tensor32 { shape, data });
    }
    let nf = map
        .get("dynamics.egnn.embedding.weight")
        .map(|t| t.shape[0])
        .ok_or_else(|| Error::MissingTensor("dynamics.egnn.embedding.weight".into()))?;
    let n_layers = (0..)
        .take_while(|i| {
            map.contains_key(&format!(
                "dynamics.egnn.e_block_{i}.gcl_0.edge_mlp.0.weight"
            ))
        })
        .count();
    let mut config = ModelConfig::new(nf, n_layers);
    config.provenance = serde_json::json!({
        "source": "converted from an EDM PyTorch checkpoint",
        "file": path.file_name().map(|f| f.to_string_lossy().to_string()),
    });
    let w = Weights {
        config,
        tensors: map,
    };
    // Round-trip through the loader: the same checks (names, shapes, finiteness, γ table) as any weights file.
    Weights::from_bytes(&w.to_bytes(crate::weights::Precision::F32)?)
}
