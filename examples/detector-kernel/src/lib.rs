//! **kernel**: a small non-linear translator.
//!
//! The paper's translator is linear: `y = W·x + b`. This one is RBF kernel
//! ridge regression from the probe's (unit) embedding space into the
//! reference's: `f(x) = μ + Σᵢ αᵢ·exp(−γ‖x − cᵢ‖²)`, with centres `cᵢ` the
//! probe embeddings of up to `centers` fit faces (evenly spaced) and `α`
//! solving `(K + λI)·α = R − μ` on them. The score is `cos(f(probe),
//! reference)`, as pairing's. `γ` (as a multiple of the median heuristic
//! `1 / median‖cᵢ − cⱼ‖²`) and `λ` are picked on an inner held-out fifth of
//! the fit faces (highest mean cosine), then refitted on all of them.
//!
//! What the ridge translator cannot do: bend. Where the two models'
//! spaces are related non-linearly, a kernel translator can follow; where
//! they are related linearly, it has more to estimate from the same faces.
//!
//! Options: `centers` (default 256), `gamma` and `lambda` (fix them instead
//! of choosing).

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use zooaudit_plugin_sdk::abi::{PluginModRef, error_code};
use zooaudit_plugin_sdk::{
    Descriptor, DetectorStrategy, Matrix, Options, PairDetector, PluginError, detector_module,
    invalid,
};

#[abi_stable::export_root_module]
pub fn zooaudit_plugin() -> PluginModRef {
    detector_module::<Kernel>()
}

pub struct Kernel;

/// Multiples of the median heuristic, and ridges, tried on the inner split.
const GAMMAS: [f64; 3] = [0.5, 1.0, 2.0];
const LAMBDAS: [f64; 3] = [1e-3, 1e-2, 1e-1];

impl DetectorStrategy for Kernel {
    fn descriptor() -> Descriptor {
        Descriptor {
            name: "kernel".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "RBF kernel ridge translator probe→reference, cosine agreement".into(),
            formats: vec!["kernel".into()],
        }
    }

    fn create(options: &Options) -> Result<Box<dyn PairDetector>, PluginError> {
        let mut d = KernelDetector {
            centers: 256,
            gamma: None,
            lambda: None,
            state: Mutex::new(None),
        };
        for (k, v) in options {
            let positive = || {
                v.as_f64()
                    .filter(|x| x.is_finite() && *x > 0.0)
                    .ok_or_else(|| invalid(format!("option {k}: must be a positive number")))
            };
            match k.as_str() {
                "centers" => {
                    d.centers = v
                        .as_u64()
                        .filter(|n| *n >= 4)
                        .ok_or_else(|| invalid("option centers: must be an integer ≥ 4"))?
                        as usize
                }
                "gamma" => d.gamma = Some(positive()?),
                "lambda" => d.lambda = Some(positive()?),
                _ => return Err(invalid(format!("option {k}: unknown option for kernel"))),
            }
        }
        Ok(Box::new(d))
    }
}

/// The fitted translator.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fitted {
    probe_dim: usize,
    reference_dim: usize,
    /// The RBF's γ on unit vectors, and the ridge λ.
    gamma: f64,
    lambda: f64,
    /// Unit probe embeddings, `m × probe_dim`.
    centers: Vec<f32>,
    /// `m × reference_dim`.
    alpha: Vec<f32>,
    /// Mean unit reference embedding.
    mean: Vec<f32>,
}

impl Fitted {
    fn check(&self) -> Result<(), PluginError> {
        let m = self.centers.len() / self.probe_dim.max(1);
        if self.probe_dim == 0
            || self.reference_dim == 0
            || m == 0
            || self.centers.len() != m * self.probe_dim
            || self.alpha.len() != m * self.reference_dim
            || self.mean.len() != self.reference_dim
        {
            return Err(invalid(
                "state: centres, coefficients and dimensions disagree",
            ));
        }
        let finite = self.centers.iter().chain(&self.alpha).chain(&self.mean);
        if !(self.gamma > 0.0 && self.lambda > 0.0) || finite.into_iter().any(|x| !x.is_finite()) {
            return Err(PluginError::new(
                error_code::NUMERIC,
                "state: non-finite or non-positive values",
            ));
        }
        Ok(())
    }

    /// `f(x)` for a unit probe embedding.
    fn apply(&self, x: &[f32]) -> Vec<f32> {
        let mut y: Vec<f64> = self.mean.iter().map(|&v| f64::from(v)).collect();
        let rd = self.reference_dim;
        for (c, a) in self
            .centers
            .chunks_exact(self.probe_dim)
            .zip(self.alpha.chunks_exact(rd))
        {
            let k = (-self.gamma * sq_dist(x, c)).exp();
            for (yi, ai) in y.iter_mut().zip(a) {
                *yi += k * f64::from(*ai);
            }
        }
        y.into_iter().map(|v| v as f32).collect()
    }
}

struct KernelDetector {
    centers: usize,
    gamma: Option<f64>,
    lambda: Option<f64>,
    state: Mutex<Option<Fitted>>,
}

fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    (n.is_finite() && n > 0.0).then(|| v.iter().map(|x| x / n).collect())
}

fn sq_dist(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

/// Solves `(K + λI)·X = B` for symmetric positive definite `K + λI`
/// (`n × n`, `B` `n × d`, row-major) by Cholesky.
fn solve(k: &[f64], n: usize, lambda: f64, b: &[f64], d: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = k[i * n + j] + if i == j { lambda } else { 0.0 };
            for p in 0..j {
                s -= l[i * n + p] * l[j * n + p];
            }
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut x = b.to_vec();
    for c in 0..d {
        for i in 0..n {
            let mut s = x[i * d + c];
            for p in 0..i {
                s -= l[i * n + p] * x[p * d + c];
            }
            x[i * d + c] = s / l[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * d + c];
            for p in i + 1..n {
                s -= l[p * n + i] * x[p * d + c];
            }
            x[i * d + c] = s / l[i * n + i];
        }
    }
    Some(x)
}

/// Unit rows `idx` of `m`, or the first row that has none.
fn unit_rows(m: &Matrix<'_>, idx: &[usize]) -> Result<Vec<Vec<f32>>, PluginError> {
    idx.iter()
        .map(|&i| {
            unit(m.row(i)).ok_or_else(|| {
                PluginError::new(
                    error_code::NUMERIC,
                    format!("row {i}: zero-norm or non-finite embedding"),
                )
            })
        })
        .collect()
}

/// Kernel ridge on centres `p` → targets `r` with `gamma`, `lambda`.
fn fit_on(p: &[Vec<f32>], r: &[Vec<f32>], gamma: f64, lambda: f64) -> Option<Fitted> {
    let (n, pd, rd) = (p.len(), p[0].len(), r[0].len());
    let mut mean = vec![0.0f64; rd];
    for row in r {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / n as f64;
        }
    }
    let mut k = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let v = (-gamma * sq_dist(&p[i], &p[j])).exp();
            k[i * n + j] = v;
            k[j * n + i] = v;
        }
    }
    let b: Vec<f64> = r
        .iter()
        .flat_map(|row| row.iter().zip(&mean).map(|(v, m)| f64::from(*v) - m))
        .collect();
    let alpha = solve(&k, n, lambda, &b, rd)?;
    Some(Fitted {
        probe_dim: pd,
        reference_dim: rd,
        gamma,
        lambda,
        centers: p.iter().flatten().copied().collect(),
        alpha: alpha.into_iter().map(|v| v as f32).collect(),
        mean: mean.into_iter().map(|v| v as f32).collect(),
    })
}

/// `1 / median ‖pᵢ − pⱼ‖²` over the centres' pairs.
fn median_heuristic(p: &[Vec<f32>]) -> f64 {
    let mut d: Vec<f64> = (0..p.len())
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| sq_dist(&p[i], &p[j]))
        .collect();
    d.sort_by(f64::total_cmp);
    let med = d.get(d.len() / 2).copied().unwrap_or(1.0);
    if med > 0.0 { 1.0 / med } else { 1.0 }
}

impl PairDetector for KernelDetector {
    fn fit(
        &mut self,
        probe: Matrix<'_>,
        reference: Matrix<'_>,
    ) -> Result<serde_json::Value, PluginError> {
        let m = self.centers.min(probe.rows);
        if m < 10 {
            return Err(invalid(format!(
                "{} fit faces; kernel needs ≥ 10",
                probe.rows
            )));
        }
        let idx: Vec<usize> = (0..m).map(|j| j * probe.rows / m).collect();
        let (p, r) = (unit_rows(&probe, &idx)?, unit_rows(&reference, &idx)?);
        let base = median_heuristic(&p);
        // Inner split: every fifth centre checks the others' fit.
        let (inner, check): (Vec<usize>, Vec<usize>) = (0..m).partition(|i| i % 5 != 4);
        let pick =
            |v: &[Vec<f32>], ix: &[usize]| ix.iter().map(|&i| v[i].clone()).collect::<Vec<_>>();
        let (ip, ir, cp, cr) = (
            pick(&p, &inner),
            pick(&r, &inner),
            pick(&p, &check),
            pick(&r, &check),
        );
        let gammas: Vec<f64> = match self.gamma {
            Some(g) => vec![g],
            None => GAMMAS.iter().map(|g| g * base).collect(),
        };
        let lambdas: Vec<f64> = self.lambda.map_or(LAMBDAS.to_vec(), |l| vec![l]);
        let mut best: Option<(f64, f64, f64)> = None;
        for &g in &gammas {
            for &l in &lambdas {
                let Some(f) = fit_on(&ip, &ir, g, l) else {
                    continue;
                };
                let score = cp
                    .iter()
                    .zip(&cr)
                    .map(|(x, y)| f64::from(cosine(&f.apply(x), y)))
                    .sum::<f64>()
                    / cp.len() as f64;
                if best.is_none_or(|(s, _, _)| score > s) {
                    best = Some((score, g, l));
                }
            }
        }
        let (inner_cos, gamma, lambda) = best.ok_or_else(|| {
            PluginError::new(
                error_code::NUMERIC,
                "the kernel matrix is not positive definite for any γ, λ tried",
            )
        })?;
        let fitted = fit_on(&p, &r, gamma, lambda).ok_or_else(|| {
            PluginError::new(
                error_code::NUMERIC,
                "the kernel matrix is not positive definite",
            )
        })?;
        let report = serde_json::json!({ "fit": {
            "method": "kernel-ridge-rbf",
            "centers": m,
            "gamma": gamma,
            "gamma_over_median_heuristic": gamma / base,
            "lambda": lambda,
            "inner_holdout_cosine": inner_cos,
        }});
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(fitted);
        Ok(report)
    }

    fn score(&self, probe: Matrix<'_>, reference: Matrix<'_>) -> Result<Vec<f32>, PluginError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let f = guard
            .as_ref()
            .ok_or_else(|| invalid("score called before fit"))?;
        if probe.dim != f.probe_dim || reference.dim != f.reference_dim {
            return Err(invalid(format!(
                "fitted on {}-d → {}-d, given {}-d → {}-d",
                f.probe_dim, f.reference_dim, probe.dim, reference.dim
            )));
        }
        let all: Vec<usize> = (0..probe.rows).collect();
        let (p, r) = (unit_rows(&probe, &all)?, unit_rows(&reference, &all)?);
        Ok(p.iter()
            .zip(&r)
            .map(|(x, y)| cosine(&f.apply(x), y))
            .collect())
    }

    fn export(&self) -> Result<Vec<u8>, PluginError> {
        let guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let f = guard
            .as_ref()
            .ok_or_else(|| invalid("export called before fit"))?;
        serde_json::to_vec(f).map_err(|e| PluginError::new(error_code::INTERNAL, e.to_string()))
    }

    fn restore(&mut self, state: &[u8]) -> Result<(), PluginError> {
        let f: Fitted = serde_json::from_slice(state)
            .map_err(|e| invalid(format!("state is not kernel's translator: {e}")))?;
        f.check()?;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
        Ok(())
    }
}
