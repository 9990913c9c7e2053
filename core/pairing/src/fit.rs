//! Fitting a translator: the entry point that checks and normalises the
//! pairs, the ridge fit with its λ search, and the orthogonal Procrustes fit.

use faer::{Mat, MatRef};

use crate::linalg::{
    gram_lower, inner_split, mean_row_cosine, normalized, predict, ridge_solve, row_norms, rows_of,
    sample_columns32, split_wb,
};
use crate::sgd::fit_sgd;
use crate::{FitOptions, FitReport, Method, PairingError, Rows, Translator};

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
