//! The crate's error type. Every variant names what went wrong with enough data to act on it.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("weights file: {0}")]
    WeightsFormat(String),
    #[error("weights file: tensor `{tensor}`: {problem}")]
    WeightsTensor { tensor: String, problem: String },
    #[error("weights file: tensor `{0}` is missing")]
    MissingTensor(String),
    #[error("weights file: unexpected tensor `{0}` (not part of an EDM QM9 model)")]
    UnexpectedTensor(String),
    #[error("invalid atom count {0}: a molecule has 1 to {max} atoms", max = crate::qm9::MAX_ATOMS)]
    AtomCount(usize),
    #[error("invalid number of steps {0}: use 1 to {max}", max = crate::schedule::T)]
    Steps(usize),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("non-finite value in {0}")]
    NonFinite(String),
    #[error("the sampler has already finished")]
    Finished,
    #[error("no GPU adapter: {0}")]
    NoAdapter(String),
    #[error("GPU: {0}")]
    Gpu(String),
    #[error("GPU device lost: {0}")]
    GpuLost(String),
    #[error("converter: {0}")]
    Convert(String),
    #[error("tensor backend: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// A stable name for the kind of error, for callers that must act on it without parsing the message: the
    /// wasm bindings give it to the JavaScript `Error` as its `name` (a lost GPU device is `GpuLostError`).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::WeightsFormat(_)
            | Error::WeightsTensor { .. }
            | Error::MissingTensor(_)
            | Error::UnexpectedTensor(_) => "WeightsError",
            Error::AtomCount(_) | Error::Steps(_) | Error::Input(_) => "InputError",
            Error::NonFinite(_) => "NonFiniteError",
            Error::Finished => "FinishedError",
            Error::NoAdapter(_) => "NoAdapterError",
            Error::Gpu(_) => "GpuError",
            Error::GpuLost(_) => "GpuLostError",
            Error::Convert(_) => "ConvertError",
            Error::Candle(_) => "TensorBackendError",
            Error::Io(_) => "IoError",
            Error::Json(_) => "JsonError",
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
