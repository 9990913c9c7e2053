//! The model-pairing detector strategy (the paper's method).
//!
//! `fit` learns a linear translator from the probe's embedding space into the
//! reference's on clean pairs; `score` is cos(translate(probe), reference),
//! high when the two models agree about the face. Options (JSON):
//! `translator` = `ridge` (default) | `procrustes` | `sgd-cosine`, `seed`,
//! and for SGD `learning_rate`, `max_epochs`, `patience`, `batch_size`.
//! The fitted translator is the detector's exported state (plugin ABI 1.1):
//! JSON `{"method", "in_dim", "out_dim", "weights", "bias"}`, which a pair
//! bundle stores and the guard restores.

use std::sync::Mutex;

use zooaudit_pairing::{FitOptions, Method, Rows, Translator, fit};
use zooaudit_plugin_sdk::abi::{PluginModRef, error_code};
use zooaudit_plugin_sdk::{
    Descriptor, DetectorStrategy, Matrix, Options, PairDetector, PluginError, detector_module,
    invalid,
};

/// The plugin's root module.
#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> PluginModRef {
    detector_module::<Pairing>()
}

/// The pairing strategy.
pub struct Pairing;

impl DetectorStrategy for Pairing {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "pairing".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "model pairing: linear translator probe→reference, cosine agreement"
                .into(),
            formats: vec!["ridge".into(), "procrustes".into(), "sgd-cosine".into()],
        }
    }

    fn create(options: &Options) -> Result<Box<dyn PairDetector>, PluginError> {
        let mut opts = FitOptions::default();
        for (k, v) in options {
            let num = || {
                v.as_f64()
                    .ok_or_else(|| invalid(format!("option {k}: must be a number")))
            };
            let count = || {
                v.as_u64()
                    .filter(|n| *n > 0)
                    .map(|n| n as usize)
                    .ok_or_else(|| invalid(format!("option {k}: must be a positive integer")))
            };
            match k.as_str() {
                "translator" => {
                    let s = v
                        .as_str()
                        .ok_or_else(|| invalid(format!("option {k}: must be a string")))?;
                    opts.method = s
                        .parse::<Method>()
                        .map_err(|e| invalid(format!("option {k}: {e}")))?;
                }
                "seed" => {
                    opts.seed = v.as_u64().ok_or_else(|| {
                        invalid(format!("option {k}: must be a non-negative integer"))
                    })?
                }
                "learning_rate" => opts.learning_rate = num()?,
                "inner_holdout" => opts.inner_holdout = num()?.clamp(0.05, 0.5),
                "max_epochs" => opts.max_epochs = count()?,
                "patience" => opts.patience = count()?,
                "batch_size" => opts.batch_size = count()?,
                _ => {
                    return Err(invalid(format!(
                        "option {k}: unknown option for the pairing detector"
                    )));
                }
            }
        }
        Ok(Box::new(PairingDetector {
            opts,
            fitted: Mutex::new(None),
        }))
    }
}

struct PairingDetector {
    opts: FitOptions,
    fitted: Mutex<Option<Translator>>,
}

fn rows<'a>(m: &Matrix<'a>) -> Result<Rows<'a>, PluginError> {
    Rows::new(m.data, m.dim).map_err(|e| invalid(e.to_string()))
}

fn pairing_error(e: zooaudit_pairing::PairingError) -> PluginError {
    use zooaudit_pairing::PairingError as P;
    let code = match e {
        P::Degenerate { .. } | P::Numeric(_) => error_code::NUMERIC,
        _ => error_code::INVALID_INPUT,
    };
    PluginError::new(code, e.to_string())
}

impl PairDetector for PairingDetector {
    fn fit(
        &mut self,
        probe: Matrix<'_>,
        reference: Matrix<'_>,
    ) -> Result<serde_json::Value, PluginError> {
        let (t, report) =
            fit(rows(&probe)?, rows(&reference)?, &self.opts).map_err(pairing_error)?;
        let value = serde_json::json!({ "fit": report });
        *self.fitted.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(value)
    }

    fn score(&self, probe: Matrix<'_>, reference: Matrix<'_>) -> Result<Vec<f32>, PluginError> {
        let guard = self.fitted.lock().unwrap_or_else(|p| p.into_inner());
        let t = guard
            .as_ref()
            .ok_or_else(|| invalid("score called before fit"))?;
        t.score(rows(&probe)?, rows(&reference)?)
            .map_err(pairing_error)
    }

    /// The translator as JSON (`method`, `in_dim`, `out_dim`, `weights`,
    /// `bias`): what pair bundles of format 1.x held.
    fn export(&self) -> Result<Vec<u8>, PluginError> {
        let guard = self.fitted.lock().unwrap_or_else(|p| p.into_inner());
        let t = guard
            .as_ref()
            .ok_or_else(|| invalid("export called before fit"))?;
        serde_json::to_vec(t).map_err(|e| PluginError::new(error_code::INTERNAL, e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let t: Translator = serde_json::from_slice(state)
            .map_err(|e| invalid(format!("state is not a pairing translator: {e}")))?;
        if t.weights.len() != t.in_dim * t.out_dim || t.bias.len() != t.out_dim {
            return Err(invalid(format!(
                "state: translator {}→{} has {} weights and {} biases",
                t.in_dim,
                t.out_dim,
                t.weights.len(),
                t.bias.len()
            )));
        }
        if t.weights.iter().chain(&t.bias).any(|x| !x.is_finite()) {
            return Err(PluginError::new(
                error_code::NUMERIC,
                "state: translator has non-finite weights",
            ));
        }
        *self.fitted.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        Ok(())
    }
}
