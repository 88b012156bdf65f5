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
    /// Every name [`Error::kind`] can return. The wasm bindings export it (`errorKinds`), so the web worker
    /// recognises the crate's errors without a list of its own; `npm/index.d.ts` spells the same names out for
    /// TypeScript, and a test keeps the two in step.
    pub const KINDS: [&'static str; 11] = [
        "WeightsError",
        "InputError",
        "NonFiniteError",
        "FinishedError",
        "NoAdapterError",
        "GpuError",
        "GpuLostError",
        "ConvertError",
        "TensorBackendError",
        "IoError",
        "JsonError",
    ];

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

    /// The message without the prefix that names its kind ("GPU device lost: destroyed by the caller" ->
    /// "destroyed by the caller"; a message with no such prefix, e.g. an invalid atom count, is returned whole).
    /// The wasm bindings give it to the JavaScript `Error` as `detail`, beside `name` (the kind), so a page that
    /// already says what kind of failure it was shows the inner text without parsing the message.
    pub fn detail(&self) -> String {
        match self {
            Error::WeightsFormat(s)
            | Error::Input(s)
            | Error::NoAdapter(s)
            | Error::Gpu(s)
            | Error::GpuLost(s)
            | Error::Convert(s) => s.clone(),
            Error::WeightsTensor { .. } | Error::MissingTensor(_) | Error::UnexpectedTensor(_) => {
                let whole = self.to_string();
                whole
                    .strip_prefix("weights file: ")
                    .map(str::to_string)
                    .unwrap_or(whole)
            }
            Error::Candle(e) => e.to_string(),
            Error::Io(e) => e.to_string(),
            Error::Json(e) => e.to_string(),
            Error::AtomCount(_) | Error::Steps(_) | Error::NonFinite(_) | Error::Finished => {
                self.to_string()
            }
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// One error of every variant. The exhaustive match (no wildcard) stops this test from compiling when a
    /// variant is added, until a sample of it is added here too.
    fn one_of_each() -> Vec<Error> {
        let all = vec![
            Error::WeightsFormat("x".into()),
            Error::WeightsTensor {
                tensor: "x".into(),
                problem: "y".into(),
            },
            Error::MissingTensor("x".into()),
            Error::UnexpectedTensor("x".into()),
            Error::AtomCount(40),
            Error::Steps(0),
            Error::Input("x".into()),
            Error::NonFinite("x".into()),
            Error::Finished,
            Error::NoAdapter("x".into()),
            Error::Gpu("x".into()),
            Error::GpuLost("x".into()),
            Error::Convert("x".into()),
            Error::Candle(candle_core::Error::Msg("x".into())),
            Error::Io(std::io::Error::other("x")),
            Error::Json(serde_json::from_str::<u8>("x").unwrap_err()),
        ];
        let mut seen = BTreeSet::new();
        for e in &all {
            seen.insert(match e {
                Error::WeightsFormat(_) => 0,
                Error::WeightsTensor { .. } => 1,
                Error::MissingTensor(_) => 2,
                Error::UnexpectedTensor(_) => 3,
                Error::AtomCount(_) => 4,
                Error::Steps(_) => 5,
                Error::Input(_) => 6,
                Error::NonFinite(_) => 7,
                Error::Finished => 8,
                Error::NoAdapter(_) => 9,
                Error::Gpu(_) => 10,
                Error::GpuLost(_) => 11,
                Error::Convert(_) => 12,
                Error::Candle(_) => 13,
                Error::Io(_) => 14,
                Error::Json(_) => 15,
            });
        }
        assert_eq!(seen.len(), 16, "one sample per variant");
        all
    }

    #[test]
    fn kinds_lists_exactly_the_names_kind_returns() {
        let returned: BTreeSet<&str> = one_of_each().iter().map(Error::kind).collect();
        let listed: BTreeSet<&str> = Error::KINDS.iter().copied().collect();
        assert_eq!(listed.len(), Error::KINDS.len(), "KINDS has a duplicate");
        assert_eq!(returned, listed);
    }

    /// `detail` is the message's tail: the whole message, or the message after a prefix that ends in ": " (the
    /// kind's name in words). Never empty when the message is not.
    #[test]
    fn detail_is_the_message_without_its_prefix() {
        for e in one_of_each() {
            let (whole, detail) = (e.to_string(), e.detail());
            assert!(!detail.is_empty(), "{whole}: empty detail");
            if detail != whole {
                let prefix = whole
                    .strip_suffix(&detail)
                    .unwrap_or_else(|| panic!("{whole:?} does not end with its detail {detail:?}"));
                assert!(prefix.ends_with(": "), "{whole:?}: prefix {prefix:?}");
                assert!(
                    !prefix[..prefix.len() - 2].contains(": "),
                    "{whole:?}: detail {detail:?} cut too short"
                );
            }
        }
        assert_eq!(
            Error::GpuLost("destroyed by the caller".into()).detail(),
            "destroyed by the caller"
        );
        let tensor = Error::WeightsTensor {
            tensor: "egnn.embedding.weight".into(),
            problem: "shape [3] expected [128, 7]".into(),
        };
        assert_eq!(
            tensor.detail(),
            "tensor `egnn.embedding.weight`: shape [3] expected [128, 7]"
        );
    }

    /// The TypeScript declaration names the same kinds as the crate (it is written by hand): every member of the
    /// union is a quoted kind, each once.
    #[test]
    fn npm_declaration_names_every_kind() {
        let head = "export type GeneratorErrorName =";
        let dts = include_str!("../npm/index.d.ts");
        let start = dts
            .find(head)
            .expect("npm/index.d.ts declares GeneratorErrorName");
        let body = &dts[start + head.len()..];
        let body = &body[..body.find(';').expect("the type ends with ;")];
        let members: Vec<&str> = body
            .split('|')
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .map(|m| {
                m.strip_prefix('\'')
                    .and_then(|m| m.strip_suffix('\''))
                    .unwrap_or_else(|| panic!("GeneratorErrorName member {m} is not a quoted name"))
            })
            .collect();
        let declared: BTreeSet<&str> = members.iter().copied().collect();
        assert_eq!(declared.len(), members.len(), "a name is declared twice");
        let listed: BTreeSet<&str> = Error::KINDS.iter().copied().collect();
        assert_eq!(
            declared, listed,
            "GeneratorErrorName in npm/index.d.ts and Error::KINDS differ"
        );
    }

    /// The worker moves a run to the CPU on the errors it names in GPU_FAILURES: those must be kinds the crate
    /// gives (a renamed kind would silently stop the fallback).
    #[test]
    fn worker_gpu_failures_are_kinds() {
        let js = include_str!("../web/worker.js");
        let line = js
            .lines()
            .find(|l| l.starts_with("const GPU_FAILURES = ["))
            .expect("web/worker.js declares GPU_FAILURES");
        let names: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
        assert!(!names.is_empty(), "no names in {line}");
        for name in names {
            assert!(
                Error::KINDS.contains(&name),
                "GPU_FAILURES names {name}, not an Error kind"
            );
        }
    }
}
