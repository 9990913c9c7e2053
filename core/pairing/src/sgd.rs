//! The paper's translator fit: one linear layer trained on the negative
//! cosine loss with seeded mini-batches and Adam, stopped early on the inner
//! held-out cosine.

use faer::Mat;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::linalg::{mean_row_cosine, predict, rows_of};
use crate::{FitOptions, FitReport, Method, PairingError, Translator};

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

pub(crate) fn fit_sgd(
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
