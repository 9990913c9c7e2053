//! Embedding translators: linear maps `y ≈ W·x + b` from a probe model's
//! embedding space into a reference model's, fitted on unlabeled faces.
//!
//! Embeddings are L2-normalised before fitting and scoring (face models
//! compare by cosine; norms carry no identity). Three methods:
//!
//! - [`Method::Ridge`]: closed-form least squares with an unpenalised bias and
//!   an L2 penalty λ chosen on an inner held-out split of the fit data (by mean
//!   cosine), then refitted on all of it. Normal equations in f64, solved by
//!   Cholesky; the held-out Gram matrix is subtracted rather than recomputed.
//! - [`Method::Procrustes`]: the orthogonal map (Kabsch/Wahba, with the
//!   reflection fix so `det W = +1`) between centred embeddings, plus a bias;
//!   equal dimensions only.
//! - [`Method::SgdCosine`]: the paper's — one fully connected layer with bias
//!   trained with the negative cosine loss, mini-batches of 128, Adam, seeded,
//!   stopped when the inner held-out cosine stops improving.
//!
//! [`Translator::score`] is the agreement score of a pair: the cosine of the
//! translated probe embedding and the reference embedding.

mod fidelity;
mod fit;
mod linalg;
mod sgd;

use faer::{Mat, MatRef};
use serde::{Deserialize, Serialize};

pub use fidelity::{Fidelity, fidelity_from_matrix};
pub use fit::{fit, procrustes_map};

/// Errors of fitting or applying a translator.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum PairingError {
    #[error("probe has {probe} rows but reference has {reference}")]
    RowMismatch { probe: usize, reference: usize },
    #[error("{0}")]
    Shape(String),
    #[error(
        "procrustes needs equal dimensions, but the probe has {probe} and the reference {reference}; use ridge or sgd-cosine"
    )]
    DimsDiffer { probe: usize, reference: usize },
    #[error("need at least {needed} paired samples to fit, got {got}")]
    TooFew { needed: usize, got: usize },
    #[error("row {row} of the {which} embeddings is {what}")]
    Degenerate {
        which: &'static str,
        row: usize,
        what: &'static str,
    },
    #[error("unknown translator '{0}' (ridge, procrustes, sgd-cosine)")]
    UnknownMethod(String),
    #[error("numerical failure: {0}")]
    Numeric(String),
}

/// A translator method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    Ridge,
    Procrustes,
    SgdCosine,
}

impl std::str::FromStr for Method {
    type Err = PairingError;
    fn from_str(s: &str) -> Result<Self, PairingError> {
        match s {
            "ridge" => Ok(Method::Ridge),
            "procrustes" => Ok(Method::Procrustes),
            "sgd-cosine" => Ok(Method::SgdCosine),
            other => Err(PairingError::UnknownMethod(other.to_string())),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Method::Ridge => "ridge",
            Method::Procrustes => "procrustes",
            Method::SgdCosine => "sgd-cosine",
        })
    }
}

/// A borrowed row-major matrix.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub dim: usize,
}

impl<'a> Rows<'a> {
    pub fn new(data: &'a [f32], dim: usize) -> Result<Self, PairingError> {
        if dim == 0 || !data.len().is_multiple_of(dim) {
            return Err(PairingError::Shape(format!(
                "{} values do not form rows of {dim}",
                data.len()
            )));
        }
        Ok(Rows {
            data,
            rows: data.len() / dim,
            dim,
        })
    }

    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Options of a fit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FitOptions {
    pub method: Method,
    pub seed: u64,
    /// Share of the fit rows held out inside the fit to choose λ / stop SGD.
    pub inner_holdout: f64,
    /// Ridge: candidate penalties, relative to the mean diagonal of XᵀX.
    pub ridge_grid: Vec<f64>,
    /// SGD: learning rate, batch size, epoch cap, patience (epochs).
    pub learning_rate: f64,
    pub batch_size: usize,
    pub max_epochs: usize,
    pub patience: usize,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            method: Method::Ridge,
            seed: 0,
            inner_holdout: 0.2,
            ridge_grid: vec![1e-3, 1e-2, 0.1, 0.3, 1.0, 3.0],
            learning_rate: 1e-3,
            batch_size: 128,
            max_epochs: 400,
            patience: 20,
        }
    }
}

/// A fitted translator: `y = W·x̂ + b`, `x̂` the L2-normalised probe embedding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Translator {
    pub method: Method,
    pub in_dim: usize,
    pub out_dim: usize,
    /// `out_dim × in_dim`, row-major.
    pub weights: Vec<f32>,
    pub bias: Vec<f32>,
}

/// What a fit did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    pub method: Method,
    pub samples: usize,
    pub in_dim: usize,
    pub out_dim: usize,
    /// Ridge: the chosen penalty (absolute).
    pub lambda: Option<f64>,
    /// SGD: epochs run and mini-batches seen.
    pub epochs: Option<usize>,
    pub batches: Option<usize>,
    /// Mean cosine on the inner held-out split at the chosen setting.
    pub inner_holdout_cosine: f64,
}

impl FitReport {
    pub(crate) fn new(t: &Translator, samples: usize, inner_holdout_cosine: f64) -> Self {
        FitReport {
            method: t.method,
            samples,
            in_dim: t.in_dim,
            out_dim: t.out_dim,
            lambda: None,
            epochs: None,
            batches: None,
            inner_holdout_cosine,
        }
    }
}

impl Translator {
    /// Translates one probe embedding (normalised first).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        let n = x
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        (0..self.out_dim)
            .map(|o| {
                let w = &self.weights[o * self.in_dim..(o + 1) * self.in_dim];
                self.bias[o] + w.iter().zip(x).map(|(a, b)| a * b).sum::<f32>() / n
            })
            .collect()
    }

    /// Translates many probe rows at once (one matrix product).
    pub fn apply_rows(&self, probe: Rows<'_>) -> Vec<f32> {
        let (n, din, dout) = (probe.rows, self.in_dim, self.out_dim);
        let x = Mat::<f32>::from_fn(n, din, |i, j| probe.data[i * din + j]);
        let wt = Mat::<f32>::from_fn(din, dout, |i, o| self.weights[o * din + i]);
        let z = &x * &wt;
        let mut out = Vec::with_capacity(n * dout);
        for i in 0..n {
            let norm = probe
                .row(i)
                .iter()
                .map(|v| v * v)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            out.extend((0..dout).map(|o| z[(i, o)] / norm + self.bias[o]));
        }
        out
    }

    /// Agreement score per row: cos(translate(probe_i), reference_i).
    pub fn score(&self, probe: Rows<'_>, reference: Rows<'_>) -> Result<Vec<f32>, PairingError> {
        self.check(probe, reference)?;
        let t = self.apply_rows(probe);
        let d = self.out_dim;
        Ok((0..probe.rows)
            .map(|i| cosine(&t[i * d..(i + 1) * d], reference.row(i)))
            .collect())
    }

    pub(crate) fn check(&self, probe: Rows<'_>, reference: Rows<'_>) -> Result<(), PairingError> {
        if probe.rows != reference.rows {
            return Err(PairingError::RowMismatch {
                probe: probe.rows,
                reference: reference.rows,
            });
        }
        if probe.dim != self.in_dim || reference.dim != self.out_dim {
            return Err(PairingError::Shape(format!(
                "translator maps {}→{}, given {}→{}",
                self.in_dim, self.out_dim, probe.dim, reference.dim
            )));
        }
        Ok(())
    }

    pub(crate) fn from_mat(method: Method, w: MatRef<'_, f64>, b: &[f64]) -> Self {
        // `w` is in_dim × out_dim (y = xᵀW + b); store its transpose row-major.
        let (in_dim, out_dim) = (w.nrows(), w.ncols());
        let mut weights = Vec::with_capacity(in_dim * out_dim);
        for o in 0..out_dim {
            for i in 0..in_dim {
                weights.push(w[(i, o)] as f32);
            }
        }
        Translator {
            method,
            in_dim,
            out_dim,
            weights,
            bias: b.iter().map(|v| *v as f32).collect(),
        }
    }
}

/// Cosine similarity accumulated in f64; `None` when a vector has zero norm
/// or a value is not finite.
pub fn cosine_checked(a: &[f32], b: &[f32]) -> Option<f32> {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    let c = ab / (aa * bb).sqrt();
    c.is_finite().then_some(c as f32)
}

/// Cosine similarity (0 when a vector is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    cosine_checked(a, b).unwrap_or(0.0)
}
