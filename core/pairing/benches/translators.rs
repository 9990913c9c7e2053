//! Translator fit time and scoring throughput at n = 5000 pairs, 512→128
//! (the size), on synthetic embeddings with a known linear relation.
//!
//! Run: `cargo bench -p zooaudit-pairing --bench translators`
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zooaudit_pairing::{FitOptions, Method, Rows, fit};

fn synthetic(n: usize, din: usize, dout: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let m: Vec<f32> = (0..din * dout)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let x: Vec<f32> = (0..n * din)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let mut y = vec![0f32; n * dout];
    for i in 0..n {
        for o in 0..dout {
            let v: f32 = (0..din).map(|k| x[i * din + k] * m[k * dout + o]).sum();
            y[i * dout + o] = v + 2.0 * rng.random_range(-1.0f32..1.0);
        }
    }
    (x, y)
}

fn time<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed().as_secs_f64() * 1e3)
}

fn main() {
    let n = 5000;
    println!(
        "translator fit, n = {n} pairs ({} threads)",
        std::thread::available_parallelism()
            .map(|v| v.get())
            .unwrap_or(1)
    );
    println!(
        "{:<12} {:>10} {:>12} {:>18}",
        "method", "dims", "fit (ms)", "inner held-out cos"
    );
    for (method, din, dout) in [
        (Method::Ridge, 512, 128),
        (Method::Ridge, 128, 512),
        (Method::Procrustes, 512, 512),
        (Method::Procrustes, 128, 128),
        (Method::SgdCosine, 512, 128),
    ] {
        let (x, y) = synthetic(n, din, dout, 1);
        let opts = FitOptions {
            method,
            ..Default::default()
        };
        let probe = Rows::new(&x, din).unwrap();
        let reference = Rows::new(&y, dout).unwrap();
        let _ = fit(probe, reference, &opts).unwrap(); // warm-up
        let reps = if method == Method::SgdCosine { 1 } else { 5 };
        let mut best = f64::INFINITY;
        let mut report = None;
        for _ in 0..reps {
            let ((_, r), ms) = time(|| fit(probe, reference, &opts).unwrap());
            best = best.min(ms);
            report = Some(r);
        }
        let r = report.unwrap();
        println!(
            "{:<12} {:>10} {:>12.1} {:>18.4}",
            method.to_string(),
            format!("{din}→{dout}"),
            best,
            r.inner_holdout_cosine
        );
    }
    let (x, y) = synthetic(n, 512, 128, 2);
    let (t, _) = fit(
        Rows::new(&x, 512).unwrap(),
        Rows::new(&y, 128).unwrap(),
        &FitOptions::default(),
    )
    .unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let (_, ms) = time(|| {
            t.score(Rows::new(&x, 512).unwrap(), Rows::new(&y, 128).unwrap())
                .unwrap()
        });
        best = best.min(ms);
    }
    println!(
        "scoring 512→128: {:.0} pairs/s ({n} pairs in {best:.1} ms)",
        n as f64 / best * 1e3
    );
}
