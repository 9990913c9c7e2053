//! Translators on real embeddings of the shared faces (SFace 128-d,
//! faceplugin 512-d), checked against independent numpy computations.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use zooaudit_pairing::{FitOptions, Method, PairingError, Rows, Translator, fit};
use zooaudit_testsupport as support;

struct Pair {
    sface: Vec<f32>,
    fp: Vec<f32>,
    n: usize,
}

fn pair() -> Pair {
    let s = support::real_embeddings("sface.toml");
    let f = support::real_embeddings("faceplugin.toml");
    assert_eq!(s.rows, f.rows);
    Pair {
        n: s.rows,
        sface: s.data,
        fp: f.data,
    }
}

/// (W as in×out row-major, bias) of a translator, for comparison.
fn w_in_out(t: &Translator) -> Vec<f32> {
    let mut w = vec![0f32; (t.in_dim + 1) * t.out_dim];
    for o in 0..t.out_dim {
        for i in 0..t.in_dim {
            w[i * t.out_dim + o] = t.weights[o * t.in_dim + i];
        }
        w[t.in_dim * t.out_dim + o] = t.bias[o];
    }
    w
}

fn numpy(args: &[&str], probe: &[f32], pd: usize, reference: &[f32], rd: usize) -> Vec<f32> {
    let tmp = tempfile::tempdir().unwrap();
    let (p, r, o) = (
        tmp.path().join("p.npy"),
        tmp.path().join("r.npy"),
        tmp.path().join("w.npy"),
    );
    zooaudit_formats::npy::write(&p, probe.len() / pd, pd, probe).unwrap();
    zooaudit_formats::npy::write(&r, reference.len() / rd, rd, reference).unwrap();
    let mut cmd = Command::new(support::python());
    cmd.arg(support::repo_root().join("tests/reference/translators.py"))
        .arg(args[0])
        .arg(&p)
        .arg(&r);
    cmd.args(&args[1..]).arg(&o);
    assert!(cmd.status().unwrap().success());
    zooaudit_formats::npy::read(&o).unwrap().data
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    assert!(
        a.iter().chain(b).all(|v| v.is_finite()),
        "non-finite weights"
    );
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn ridge_matches_numpy_lstsq_on_real_embeddings_both_directions() {
    let p = pair();
    for (probe, pd, reference, rd) in [(&p.fp, 512, &p.sface, 128), (&p.sface, 128, &p.fp, 512)] {
        let opts = FitOptions {
            method: Method::Ridge,
            seed: 1,
            ..Default::default()
        };
        let (t, report) = fit(
            Rows::new(probe, pd).unwrap(),
            Rows::new(reference, rd).unwrap(),
            &opts,
        )
        .unwrap();
        let lambda = report.lambda.unwrap();
        let reference_w = numpy(&["ridge", &lambda.to_string()], probe, pd, reference, rd);
        let d = max_diff(&w_in_out(&t), &reference_w);
        eprintln!(
            "ridge {pd}→{rd}: λ = {lambda:.4}, inner held-out cos {:.3}, max |Δ| vs numpy = {d:e}",
            report.inner_holdout_cosine
        );
        assert!(d <= 1e-4, "ridge differs from numpy lstsq by {d}");
        assert!(report.inner_holdout_cosine > 0.5, "{report:?}");
    }
}

#[test]
fn procrustes_matches_numpy_svd_and_recovers_a_rotation() {
    let p = pair();
    // An equal-dimension pair: SFace and a seeded random rotation of it plus noise.
    let d = 128;
    let q = random_orthogonal(d, 7);
    let mut rotated = vec![0f32; p.sface.len()];
    for i in 0..p.n {
        for o in 0..d {
            let v: f64 = (0..d)
                .map(|k| f64::from(p.sface[i * d + k]) * q[k * d + o])
                .sum();
            rotated[i * d + o] = v as f32 + 0.01 * (((i * 31 + o * 17) % 13) as f32 - 6.0) / 6.0;
        }
    }
    let opts = FitOptions {
        method: Method::Procrustes,
        ..Default::default()
    };
    let (t, report) = fit(
        Rows::new(&p.sface, d).unwrap(),
        Rows::new(&rotated, d).unwrap(),
        &opts,
    )
    .unwrap();
    let reference_w = numpy(&["procrustes"], &p.sface, d, &rotated, d);
    let diff = max_diff(&w_in_out(&t), &reference_w);
    eprintln!(
        "procrustes: max |Δ| vs numpy = {diff:e}, inner held-out cos {:.4}",
        report.inner_holdout_cosine
    );
    assert!(diff <= 1e-4, "{diff}");
    assert!(report.inner_holdout_cosine > 0.95);
    // Heterogeneous dims are a clear error.
    let err = fit(
        Rows::new(&p.fp, 512).unwrap(),
        Rows::new(&p.sface, 128).unwrap(),
        &opts,
    )
    .unwrap_err();
    assert_eq!(
        err,
        PairingError::DimsDiffer {
            probe: 512,
            reference: 128
        }
    );
}

fn random_orthogonal(d: usize, seed: u64) -> Vec<f64> {
    // Gram–Schmidt on a deterministic pseudo-random matrix.
    let mut s = seed;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 11) as f64 / (1u64 << 53) as f64) - 0.5
    };
    let mut cols: Vec<Vec<f64>> = Vec::new();
    for _ in 0..d {
        let mut v: Vec<f64> = (0..d).map(|_| next()).collect();
        for c in &cols {
            let dot: f64 = v.iter().zip(c).map(|(a, b)| a * b).sum();
            v.iter_mut().zip(c).for_each(|(a, b)| *a -= dot * b);
        }
        let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter_mut().for_each(|a| *a /= n);
        cols.push(v);
    }
    let mut q = vec![0.0; d * d];
    for (j, c) in cols.iter().enumerate() {
        for (i, v) in c.iter().enumerate() {
            q[i * d + j] = *v;
        }
    }
    q
}

#[test]
fn sgd_cosine_learns_the_map_and_is_deterministic() {
    let p = pair();
    let opts = FitOptions {
        method: Method::SgdCosine,
        seed: 3,
        ..Default::default()
    };
    let probe = Rows::new(&p.fp, 512).unwrap();
    let reference = Rows::new(&p.sface, 128).unwrap();
    let (t1, r1) = fit(probe, reference, &opts).unwrap();
    let (t2, _) = fit(probe, reference, &opts).unwrap();
    assert_eq!(t1, t2, "same seed, same translator");
    let ridge = fit(probe, reference, &FitOptions::default()).unwrap().1;
    eprintln!(
        "sgd-cosine 512→128: epochs {:?}, batches {:?}, inner held-out cos {:.3} (ridge {:.3})",
        r1.epochs, r1.batches, r1.inner_holdout_cosine, ridge.inner_holdout_cosine
    );
    assert!(r1.inner_holdout_cosine > 0.5, "{r1:?}");
    assert!(r1.epochs.unwrap() < opts.max_epochs || r1.inner_holdout_cosine > 0.5);
}

#[test]
fn fidelity_on_held_out_faces_is_far_above_chance() {
    let p = pair();
    let n_fit = p.n * 3 / 4;
    let probe = Rows::new(&p.fp[..n_fit * 512], 512).unwrap();
    let reference = Rows::new(&p.sface[..n_fit * 128], 128).unwrap();
    let (t, _) = fit(probe, reference, &FitOptions::default()).unwrap();
    let f = t
        .fidelity(
            Rows::new(&p.fp[n_fit * 512..], 512).unwrap(),
            Rows::new(&p.sface[n_fit * 128..], 128).unwrap(),
        )
        .unwrap();
    eprintln!(
        "held-out fidelity (ridge 512→128, {} faces): {f:?}",
        f.samples
    );
    // Chance: top-1 = 1/n, mean rank = (n+1)/2.
    assert!(
        f.top1 > 0.5 && f.mean_rank < 5.0 && f.mean_cosine > 0.5,
        "{f:?}"
    );
}

#[test]
fn degenerate_inputs_are_named() {
    let mut probe = vec![1f32; 20 * 4];
    let reference = vec![1f32; 20 * 4];
    probe[4 * 3 + 1] = f32::NAN;
    let err = fit(
        Rows::new(&probe, 4).unwrap(),
        Rows::new(&reference, 4).unwrap(),
        &FitOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 3 of the probe embeddings is not finite (NaN or infinity)"
    );
    let zeros = vec![0f32; 20 * 4];
    let err = fit(
        Rows::new(&reference, 4).unwrap(),
        Rows::new(&zeros, 4).unwrap(),
        &FitOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "row 0 of the reference embeddings is all zeros"
    );
    let err = fit(
        Rows::new(&reference[..16], 4).unwrap(),
        Rows::new(&reference[..16], 4).unwrap(),
        &FitOptions::default(),
    )
    .unwrap_err();
    assert!(matches!(err, PairingError::TooFew { .. }));
}
