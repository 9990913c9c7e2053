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

use faer::{Mat, MatRef};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

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

/// L2-normalises every row into an f64 matrix; refuses non-finite or zero rows.
/// Checks every row (finite, not all zeros) and returns its L2 norm.
fn row_norms(m: Rows<'_>, which: &'static str) -> Result<Vec<f64>, PairingError> {
    (0..m.rows)
        .map(|i| {
            let row = m.row(i);
            if row.iter().any(|v| !v.is_finite()) {
                return Err(PairingError::Degenerate {
                    which,
                    row: i,
                    what: "not finite (NaN or infinity)",
                });
            }
            let n = row
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            if n == 0.0 {
                return Err(PairingError::Degenerate {
                    which,
                    row: i,
                    what: "all zeros",
                });
            }
            Ok(n)
        })
        .collect()
}

/// The rows of `m` divided by their norms, in f64.
fn normalized(m: Rows<'_>, norms: &[f64]) -> Mat<f64> {
    Mat::from_fn(m.rows, m.dim, |i, j| f64::from(m.row(i)[j]) / norms[i])
}

/// Rows `idx` of `m` divided by their norms, in f32 and *one sample per
/// column* (the copy then reads and writes memory in order; callers use the
/// transpose), with a constant 1 appended to each sample when `bias`.
fn sample_columns32(m: Rows<'_>, norms: &[f64], idx: &[usize], bias: bool) -> Mat<f32> {
    Mat::from_fn(m.dim + usize::from(bias), idx.len(), |j, c| {
        if j < m.dim {
            (f64::from(m.row(idx[c])[j]) / norms[idx[c]]) as f32
        } else {
            1.0
        }
    })
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
    fn new(t: &Translator, samples: usize, inner_holdout_cosine: f64) -> Self {
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

    fn check(&self, probe: Rows<'_>, reference: Rows<'_>) -> Result<(), PairingError> {
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

    fn from_mat(method: Method, w: MatRef<'_, f64>, b: &[f64]) -> Self {
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

/// Seeded split of `0..n` into (train, inner held-out).
fn inner_split(n: usize, share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_1234));
    let k = ((n as f64 * share).round() as usize).clamp(1, n.saturating_sub(2).max(1));
    let val = idx[..k].to_vec();
    let mut train = idx[k..].to_vec();
    train.sort_unstable();
    let mut val = val;
    val.sort_unstable();
    (train, val)
}

fn mean_row_cosine(pred: MatRef<'_, f64>, target: MatRef<'_, f64>) -> f64 {
    let n = pred.nrows();
    let mut sum = 0.0;
    for i in 0..n {
        let (mut ab, mut aa, mut bb) = (0.0, 0.0, 0.0);
        for j in 0..pred.ncols() {
            let (a, b) = (pred[(i, j)], target[(i, j)]);
            ab += a * b;
            aa += a * a;
            bb += b * b;
        }
        let d = (aa * bb).sqrt();
        sum += if d > 0.0 { ab / d } else { 0.0 };
    }
    sum / n.max(1) as f64
}

fn rows_of(m: MatRef<'_, f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)])
}

/// The lower triangle (with the diagonal) of `xᵀx`; the strict upper
/// triangle is left zero. Only the lower side is ever read (Cholesky with
/// `Side::Lower`), and computing half the product halves the dominant cost.
fn gram_lower<T>(x: MatRef<'_, T>) -> Mat<T>
where
    T: faer::traits::RealField + Copy + From<f32>,
{
    use faer::linalg::matmul::triangular::{BlockStructure, matmul};
    let d = x.ncols();
    let mut g = Mat::<T>::zeros(d, d);
    matmul(
        g.as_mut(),
        BlockStructure::TriangularLower,
        faer::Accum::Replace,
        x.transpose(),
        BlockStructure::Rectangular,
        x,
        BlockStructure::Rectangular,
        T::from(1.0f32),
        faer::get_global_parallelism(),
    );
    g
}

/// Solves `(G + λ·D) Wa = C`, D = identity except 0 for the bias row (in
/// f64 for the fit, in f32 while choosing λ), reading only the lower
/// triangle of `g`.
fn ridge_solve<T>(
    g: MatRef<'_, T>,
    c: MatRef<'_, T>,
    lambda: T,
    par: faer::Par,
) -> Result<Mat<T>, PairingError>
where
    T: faer::traits::RealField + Copy + std::ops::AddAssign,
{
    use dyn_stack::{MemBuffer, MemStack};
    use faer::linalg::cholesky::llt;
    let d = g.nrows();
    let mut a = g.to_owned();
    for i in 0..d.saturating_sub(1) {
        a[(i, i)] += lambda;
    }
    let mut scratch = MemBuffer::new(llt::factor::cholesky_in_place_scratch::<T>(
        d,
        par,
        Default::default(),
    ));
    llt::factor::cholesky_in_place(
        a.as_mut(),
        Default::default(),
        par,
        MemStack::new(&mut scratch),
        Default::default(),
    )
    .map_err(|e| {
        PairingError::Numeric(format!(
            "ridge system not positive definite ({e:?}); is the data degenerate?"
        ))
    })?;
    let mut wa = c.to_owned();
    let mut none = MemBuffer::new(llt::solve::solve_in_place_scratch::<T>(d, c.ncols(), par));
    llt::solve::solve_in_place(a.as_ref(), wa.as_mut(), par, MemStack::new(&mut none));
    Ok(wa)
}

fn split_wb(wa: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
    let d = wa.nrows() - 1;
    let w = Mat::from_fn(d, wa.ncols(), |i, j| wa[(i, j)]);
    let b = (0..wa.ncols()).map(|j| wa[(d, j)]).collect();
    (w, b)
}

fn predict(x: MatRef<'_, f64>, w: MatRef<'_, f64>, b: &[f64]) -> Mat<f64> {
    let mut y = x * w;
    for i in 0..y.nrows() {
        for (j, bj) in b.iter().enumerate() {
            y[(i, j)] += bj;
        }
    }
    y
}

/// Fits a translator on paired clean embeddings (row i of both is one image).
pub fn fit(
    probe: Rows<'_>,
    reference: Rows<'_>,
    opts: &FitOptions,
) -> Result<(Translator, FitReport), PairingError> {
    if probe.rows != reference.rows {
        return Err(PairingError::RowMismatch {
            probe: probe.rows,
            reference: reference.rows,
        });
    }
    let needed = 8;
    if probe.rows < needed {
        return Err(PairingError::TooFew {
            needed,
            got: probe.rows,
        });
    }
    if opts.method == Method::Procrustes && probe.dim != reference.dim {
        return Err(PairingError::DimsDiffer {
            probe: probe.dim,
            reference: reference.dim,
        });
    }
    let xn = row_norms(probe, "probe")?;
    let yn = row_norms(reference, "reference")?;
    let (train, val) = inner_split(probe.rows, opts.inner_holdout, opts.seed);
    if opts.method == Method::Ridge {
        let x = (probe, xn.as_slice());
        return fit_ridge(x, (reference, yn.as_slice()), &train, &val, opts);
    }
    let (x, y) = (normalized(probe, &xn), normalized(reference, &yn));
    match opts.method {
        Method::Procrustes => fit_procrustes(&x, &y, &train, &val),
        _ => fit_sgd(&x, &y, &train, &val, opts),
    }
}

fn fit_ridge(
    (x, xn): (Rows<'_>, &[f64]),
    (y, yn): (Rows<'_>, &[f64]),
    train: &[usize],
    val: &[usize],
    opts: &FitOptions,
) -> Result<(Translator, FitReport), PairingError> {
    // The products over the samples (the Gram matrix and Xᵀ·Y: nearly all
    // of the work) run in f32 on the unit-norm embeddings, separately for
    // the inner training and validation samples; λ is chosen in f32 on that
    // split (selection only), and the final system, the sum of both parts,
    // is formed and solved in f64.
    let (xt, yt) = (
        sample_columns32(x, xn, train, true),
        sample_columns32(y, yn, train, false),
    );
    let (xv, yv) = (
        sample_columns32(x, xn, val, true),
        sample_columns32(y, yn, val, false),
    );
    let g_tr = gram_lower(xt.transpose());
    let c_tr = &xt * yt.transpose();
    let g_v = gram_lower(xv.transpose());
    let c_v = &xv * yv.transpose();
    let sum64 = |a: &Mat<f32>, b: &Mat<f32>| {
        Mat::<f64>::from_fn(a.nrows(), a.ncols(), |i, j| {
            f64::from(a[(i, j)]) + f64::from(b[(i, j)])
        })
    };
    let (g, c) = (sum64(&g_tr, &g_v), sum64(&c_tr, &c_v));
    let d = x.dim;
    let scale = (0..d).map(|i| g[(i, i)]).sum::<f64>() / d as f64;
    let yv64 = Mat::<f64>::from_fn(yv.ncols(), yv.nrows(), |i, j| f64::from(yv[(j, i)]));
    // Each λ is a small problem (one 513×513 factorisation, two triangular
    // solves, one prediction): running them side by side, one per core,
    // beats splitting each one across the cores.
    let held_out_cosine = |rel: f64| -> Result<(f64, f64), PairingError> {
        let lambda = rel * scale;
        let wa32 = ridge_solve(g_tr.as_ref(), c_tr.as_ref(), lambda as f32, faer::Par::Seq)?;
        let mut pred32 = Mat::<f32>::zeros(xv.ncols(), wa32.ncols());
        faer::linalg::matmul::matmul(
            pred32.as_mut(),
            faer::Accum::Replace,
            xv.transpose(),
            wa32.as_ref(),
            1.0f32,
            faer::Par::Seq,
        );
        let pred = Mat::<f64>::from_fn(pred32.nrows(), pred32.ncols(), |i, j| {
            f64::from(pred32[(i, j)])
        });
        Ok((lambda, mean_row_cosine(pred.as_ref(), yv64.as_ref())))
    };
    let grid = &opts.ridge_grid;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, grid.len().max(1));
    let scored: Vec<Result<(f64, f64), PairingError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let held_out_cosine = &held_out_cosine;
                s.spawn(move || {
                    (w..grid.len())
                        .step_by(workers)
                        .map(|k| (k, held_out_cosine(grid[k])))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<_> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect();
        all.sort_by_key(|(k, _)| *k);
        all.into_iter().map(|(_, r)| r).collect()
    });
    if scored.len() != grid.len() {
        return Err(PairingError::Numeric(
            "a penalty search thread failed".into(),
        ));
    }
    let mut best: Option<(f64, f64)> = None;
    for r in scored {
        let (lambda, cos) = r?;
        if cos.is_finite() && best.is_none_or(|(_, b)| cos > b) {
            best = Some((lambda, cos));
        }
    }
    let (lambda, cos) =
        best.ok_or_else(|| PairingError::Numeric("no penalty gave a finite fit".into()))?;
    let wa = ridge_solve(
        g.as_ref(),
        c.as_ref(),
        lambda,
        faer::get_global_parallelism(),
    )?;
    let (w, b) = split_wb(wa.as_ref());
    let t = Translator::from_mat(Method::Ridge, w.as_ref(), &b);
    let report = FitReport {
        lambda: Some(lambda),
        ..FitReport::new(&t, x.rows, cos)
    };
    Ok((t, report))
}

/// Orthogonal Procrustes between centred `x` and `y` (rows `idx`).
pub fn procrustes_map(
    x: MatRef<'_, f64>,
    y: MatRef<'_, f64>,
) -> Result<(Mat<f64>, Vec<f64>), PairingError> {
    let (n, d) = (x.nrows(), x.ncols());
    let mx: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| x[(i, j)]).sum::<f64>() / n as f64)
        .collect();
    let my: Vec<f64> = (0..d)
        .map(|j| (0..n).map(|i| y[(i, j)]).sum::<f64>() / n as f64)
        .collect();
    let xc = Mat::from_fn(n, d, |i, j| x[(i, j)] - mx[j]);
    let yc = Mat::from_fn(n, d, |i, j| y[(i, j)] - my[j]);
    let m = xc.transpose() * &yc;
    let svd = m
        .svd()
        .map_err(|e| PairingError::Numeric(format!("SVD failed: {e:?}")))?;
    let (u, v) = (svd.U(), svd.V());
    // W = U·diag(1,…,1,det(U Vᵀ))·Vᵀ: the best rotation (no reflection).
    let r = u * v.transpose();
    let det_sign = determinant_sign(r.as_ref())?;
    let mut u_fixed = u.to_owned();
    if det_sign < 0.0 {
        for i in 0..d {
            u_fixed[(i, d - 1)] = -u_fixed[(i, d - 1)];
        }
    }
    let w = &u_fixed * v.transpose();
    let b: Vec<f64> = (0..d)
        .map(|j| my[j] - (0..d).map(|i| mx[i] * w[(i, j)]).sum::<f64>())
        .collect();
    Ok((w, b))
}

/// Sign of the determinant of a square matrix (via its LU factorisation).
fn determinant_sign(m: MatRef<'_, f64>) -> Result<f64, PairingError> {
    let det = m.determinant();
    if det.is_finite() {
        Ok(if det < 0.0 { -1.0 } else { 1.0 })
    } else {
        Err(PairingError::Numeric("determinant is not finite".into()))
    }
}

fn fit_procrustes(
    x: &Mat<f64>,
    y: &Mat<f64>,
    train: &[usize],
    val: &[usize],
) -> Result<(Translator, FitReport), PairingError> {
    let (w, b) = procrustes_map(
        rows_of(x.as_ref(), train).as_ref(),
        rows_of(y.as_ref(), train).as_ref(),
    )?;
    let cos = mean_row_cosine(
        predict(rows_of(x.as_ref(), val).as_ref(), w.as_ref(), &b).as_ref(),
        rows_of(y.as_ref(), val).as_ref(),
    );
    let (w, b) = procrustes_map(x.as_ref(), y.as_ref())?;
    let t = Translator::from_mat(Method::Procrustes, w.as_ref(), &b);
    let report = FitReport::new(&t, x.nrows(), cos);
    Ok((t, report))
}

/// Adam state for one parameter block.
struct Adam {
    m: Vec<f64>,
    v: Vec<f64>,
}

impl Adam {
    fn new(n: usize) -> Self {
        Adam {
            m: vec![0.0; n],
            v: vec![0.0; n],
        }
    }
    fn step(&mut self, p: &mut [f64], g: &[f64], lr: f64, t: i32) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8f64);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for i in 0..p.len() {
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g[i];
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g[i] * g[i];
            p[i] -= lr * (self.m[i] / c1) / ((self.v[i] / c2).sqrt() + eps);
        }
    }
}

fn fit_sgd(
    x: &Mat<f64>,
    y: &Mat<f64>,
    train: &[usize],
    val: &[usize],
    opts: &FitOptions,
) -> Result<(Translator, FitReport), PairingError> {
    let (din, dout) = (x.ncols(), y.ncols());
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    // Glorot-uniform init, zero bias.
    let limit = (6.0 / (din + dout) as f64).sqrt();
    let mut w = Mat::from_fn(din, dout, |_, _| rng.random_range(-limit..limit));
    let mut b = vec![0.0f64; dout];
    let (mut adam_w, mut adam_b) = (Adam::new(din * dout), Adam::new(dout));
    let xv = rows_of(x.as_ref(), val);
    let yv = rows_of(y.as_ref(), val);
    let mut order = train.to_vec();
    let batch = opts.batch_size.max(1);
    let mut best = (f64::NEG_INFINITY, w.clone(), b.clone(), 0usize);
    let (mut t, mut since_best, mut epochs) = (0i32, 0usize, 0usize);
    for epoch in 1..=opts.max_epochs {
        epochs = epoch;
        order.shuffle(&mut rng);
        for chunk in order.chunks(batch) {
            t += 1;
            let xb = rows_of(x.as_ref(), chunk);
            let yb = rows_of(y.as_ref(), chunk);
            let z = predict(xb.as_ref(), w.as_ref(), &b);
            // d(-mean cos)/dz_i = -(ŷ_i - cos_i·ẑ_i)/|z_i| / B
            let bsz = chunk.len() as f64;
            let mut gz = Mat::<f64>::zeros(chunk.len(), dout);
            for i in 0..chunk.len() {
                let zn = (0..dout)
                    .map(|j| z[(i, j)].powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                let yn = (0..dout)
                    .map(|j| yb[(i, j)].powi(2))
                    .sum::<f64>()
                    .sqrt()
                    .max(1e-12);
                let cos = (0..dout).map(|j| z[(i, j)] * yb[(i, j)]).sum::<f64>() / (zn * yn);
                for j in 0..dout {
                    gz[(i, j)] = -(yb[(i, j)] / yn - cos * z[(i, j)] / zn) / zn / bsz;
                }
            }
            let gw = xb.transpose() * &gz;
            let gb: Vec<f64> = (0..dout)
                .map(|j| (0..chunk.len()).map(|i| gz[(i, j)]).sum())
                .collect();
            let gw_flat: Vec<f64> = (0..din * dout).map(|k| gw[(k / dout, k % dout)]).collect();
            let mut w_flat: Vec<f64> = (0..din * dout).map(|k| w[(k / dout, k % dout)]).collect();
            adam_w.step(&mut w_flat, &gw_flat, opts.learning_rate, t);
            adam_b.step(&mut b, &gb, opts.learning_rate, t);
            w = Mat::from_fn(din, dout, |i, j| w_flat[i * dout + j]);
        }
        let cos = mean_row_cosine(predict(xv.as_ref(), w.as_ref(), &b).as_ref(), yv.as_ref());
        if !cos.is_finite() {
            return Err(PairingError::Numeric(
                "SGD diverged (non-finite held-out cosine)".into(),
            ));
        }
        if cos > best.0 + 1e-6 {
            best = (cos, w.clone(), b.clone(), epoch);
            since_best = 0;
        } else {
            since_best += 1;
            if since_best >= opts.patience {
                break;
            }
        }
    }
    let (cos, w, b, best_epoch) = best;
    let t_out = Translator::from_mat(Method::SgdCosine, w.as_ref(), &b);
    let batches_per_epoch = train.len().div_ceil(batch);
    let report = FitReport {
        epochs: Some(epochs),
        batches: Some(best_epoch * batches_per_epoch),
        ..FitReport::new(&t_out, x.nrows(), cos)
    };
    Ok((t_out, report))
}

/// How faithfully a scorer maps held-out pairs: mean matching score, top-1
/// retrieval (the true partner scores highest among all references) and mean
/// rank of the true partner (1 = best).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fidelity {
    pub samples: usize,
    pub mean_cosine: f64,
    pub top1: f64,
    pub mean_rank: f64,
}

/// Fidelity from a full score matrix `s[i][j]` = score(probe i, reference j).
pub fn fidelity_from_matrix(s: &[Vec<f32>]) -> Fidelity {
    let n = s.len();
    let (mut sum, mut top1, mut rank_sum) = (0.0, 0usize, 0usize);
    for (i, row) in s.iter().enumerate() {
        let own = row[i];
        sum += f64::from(own);
        let better = row
            .iter()
            .enumerate()
            .filter(|(j, v)| *j != i && **v > own)
            .count();
        if better == 0 {
            top1 += 1;
        }
        rank_sum += better + 1;
    }
    let n_f = n.max(1) as f64;
    Fidelity {
        samples: n,
        mean_cosine: sum / n_f,
        top1: top1 as f64 / n_f,
        mean_rank: rank_sum as f64 / n_f,
    }
}

impl Translator {
    /// Held-out fidelity of this translator.
    pub fn fidelity(&self, probe: Rows<'_>, reference: Rows<'_>) -> Result<Fidelity, PairingError> {
        self.check(probe, reference)?;
        let t: Vec<Vec<f32>> = (0..probe.rows).map(|i| self.apply(probe.row(i))).collect();
        let s: Vec<Vec<f32>> = t
            .iter()
            .map(|ti| {
                (0..reference.rows)
                    .map(|j| cosine(ti, reference.row(j)))
                    .collect()
            })
            .collect();
        Ok(fidelity_from_matrix(&s))
    }
}
