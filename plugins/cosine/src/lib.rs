//! The reference detector strategy: the score of a pair is the plain cosine of
//! the probe's and the reference's embeddings, with no translator. It only
//! makes sense for two models that share an embedding space (equal dims, e.g.
//! a model and a re-export or fine-tune of it), and it exercises the detector
//! ABI end to end; the paper's translator-based pairing is a separate plugin.

use zooaudit_plugin_sdk::abi::PluginModRef;
use zooaudit_plugin_sdk::{
    Descriptor, DetectorStrategy, Matrix, Options, PairDetector, PluginError, detector_module,
    invalid,
};

/// The plugin's root module.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> PluginModRef {
    detector_module::<Cosine>()
}

/// The cosine strategy.
pub struct Cosine;

impl DetectorStrategy for Cosine {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "cosine".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "plain cosine of equal-dimension embeddings (reference detector)".into(),
            formats: vec!["cosine".into()],
        }
    }

    fn create(options: &Options) -> Result<Box<dyn PairDetector>, PluginError> {
        if let Some(k) = options.keys().next() {
            return Err(invalid(format!(
                "option {k}: the cosine detector takes no options"
            )));
        }
        Ok(Box::new(CosineDetector))
    }
}

struct CosineDetector;

pub use zooaudit_pairing::cosine_checked as cosine;

fn check(probe: &Matrix<'_>, reference: &Matrix<'_>) -> Result<(), PluginError> {
    if probe.dim != reference.dim {
        return Err(invalid(format!(
            "the cosine detector needs equal dimensions; probe has {}, reference has {} (use a translator-based detector)",
            probe.dim, reference.dim
        )));
    }
    Ok(())
}

fn scores(probe: &Matrix<'_>, reference: &Matrix<'_>) -> Result<Vec<f32>, PluginError> {
    check(probe, reference)?;
    (0..probe.rows)
        .map(|i| {
            cosine(probe.row(i), reference.row(i)).ok_or_else(|| {
                PluginError::new(
                    zooaudit_plugin_sdk::abi::error_code::NUMERIC,
                    format!("row {i}: zero-norm or non-finite embedding"),
                )
            })
        })
        .collect()
}

impl PairDetector for CosineDetector {
    fn fit(
        &mut self,
        probe: Matrix<'_>,
        reference: Matrix<'_>,
    ) -> Result<serde_json::Value, PluginError> {
        let s = scores(&probe, &reference)?;
        let mean = if s.is_empty() {
            0.0
        } else {
            s.iter().map(|v| f64::from(*v)).sum::<f64>() / s.len() as f64
        };
        Ok(serde_json::json!({ "method": "cosine", "samples": s.len(), "mean_cosine": mean }))
    }

    fn score(&self, probe: Matrix<'_>, reference: Matrix<'_>) -> Result<Vec<f32>, PluginError> {
        scores(&probe, &reference)
    }

    /// Plain cosine fits nothing: its state is empty.
    fn export(&self) -> Result<Vec<u8>, PluginError> {
        Ok(b"{}".to_vec())
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        match serde_json::from_slice::<serde_json::Value>(state) {
            Ok(serde_json::Value::Object(m)) if m.is_empty() => Ok(()),
            _ => Err(zooaudit_plugin_sdk::invalid(
                "the cosine detector's state is the empty JSON object",
            )),
        }
    }
}
