//! Shared numerics of the fits: row checks and normalisation, the inner
//! held-out split, Gram products, the ridge solve and prediction.

use faer::{Mat, MatRef};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::{PairingError, Rows};

/// L2-normalises every row into an f64 matrix; refuses non-finite or zero rows.
/// Checks every row (finite, not all zeros) and returns its L2 norm.
pub(crate) fn row_norms(m: Rows<'_>, which: &'static str) -> Result<Vec<f64>, PairingError> {
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
pub(crate) fn normalized(m: Rows<'_>, norms: &[f64]) -> Mat<f64> {
    Mat::from_fn(m.rows, m.dim, |i, j| f64::from(m.row(i)[j]) / norms[i])
}

/// Rows `idx` of `m` divided by their norms, in f32 and *one sample per
/// column* (the copy then reads and writes memory in order; callers use the
/// transpose), with a constant 1 appended to each sample when `bias`.
pub(crate) fn sample_columns32(m: Rows<'_>, norms: &[f64], idx: &[usize], bias: bool) -> Mat<f32> {
    Mat::from_fn(m.dim + usize::from(bias), idx.len(), |j, c| {
        if j < m.dim {
            (f64::from(m.row(idx[c])[j]) / norms[idx[c]]) as f32
        } else {
            1.0
        }
    })
}

/// Seeded split of `0..n` into (train, inner held-out).
pub(crate) fn inner_split(n: usize, share: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
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

pub(crate) fn mean_row_cosine(pred: MatRef<'_, f64>, target: MatRef<'_, f64>) -> f64 {
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

pub(crate) fn rows_of(m: MatRef<'_, f64>, idx: &[usize]) -> Mat<f64> {
    Mat::from_fn(idx.len(), m.ncols(), |i, j| m[(idx[i], j)])
}

/// The lower triangle (with the diagonal) of `xᵀx`; the strict upper
/// triangle is left zero. Only the lower side is ever read (Cholesky with
/// `Side::Lower`), and computing half the product halves the dominant cost.
pub(crate) fn gram_lower<T>(x: MatRef<'_, T>) -> Mat<T>
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
pub(crate) fn ridge_solve<T>(
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

pub(crate) fn split_wb(wa: MatRef<'_, f64>) -> (Mat<f64>, Vec<f64>) {
    let d = wa.nrows() - 1;
    let w = Mat::from_fn(d, wa.ncols(), |i, j| wa[(i, j)]);
    let b = (0..wa.ncols()).map(|j| wa[(d, j)]).collect();
    (w, b)
}

pub(crate) fn predict(x: MatRef<'_, f64>, w: MatRef<'_, f64>, b: &[f64]) -> Mat<f64> {
    let mut y = x * w;
    for i in 0..y.nrows() {
        for (j, bj) in b.iter().enumerate() {
            y[(i, j)] += bj;
        }
    }
    y
}
