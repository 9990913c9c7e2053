//! Which preprocessing a model was trained with, measured rather than
//! guessed (`zooaudit init`): every channel order × common normalisation is
//! tried on labeled faces, and the one whose embeddings best separate
//! genuine pairs (two faces of one identity) from impostor pairs wins, if
//! it wins clearly.
//!
//! - **Separation** is the decidability index d′ = (μ_genuine − μ_impostor)
//!   / √((σ²_genuine + σ²_impostor)/2) of the cosine scores over all pairs.
//! - Candidates whose embeddings agree (mean cosine between the two
//!   embeddings of the same image ≥ 0.999, e.g. (x−127.5)/128 and
//!   (x−127.5)/127.5) are **one class**: the data cannot tell them apart and
//!   the choice between them does not matter to an audit.
//! - **Clearly** means: the best class's d′ minus the runner-up class's d′
//!   has a 95 % percentile-bootstrap interval above zero, resampling
//!   identities (faces of one person are not independent; pairs within a
//!   resampled identity are genuine, pairs across different people
//!   impostor, pairs across two copies of one person are left out).
//!   Otherwise nothing is chosen and the caller says so.

use std::path::PathBuf;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zooaudit_manifest::{Channels, InputSection};

use crate::{EmbedError, Embedder};

/// A normalisation, per channel in **RGB** order, in 0..255 units:
/// value = (pixel − mean) / std.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalisation {
    pub name: &'static str,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The normalisations tried.
pub const NORMALISATIONS: [Normalisation; 6] = [
    Normalisation {
        name: "0..255",
        mean: [0.0; 3],
        std: [1.0; 3],
    },
    Normalisation {
        name: "(x-127.5)/128",
        mean: [127.5; 3],
        std: [128.0; 3],
    },
    Normalisation {
        name: "(x-127.5)/127.5",
        mean: [127.5; 3],
        std: [127.5; 3],
    },
    Normalisation {
        name: "(x-127)/128",
        mean: [127.0; 3],
        std: [128.0; 3],
    },
    Normalisation {
        name: "x/255",
        mean: [0.0; 3],
        std: [255.0; 3],
    },
    Normalisation {
        name: "imagenet",
        mean: [123.675, 116.28, 103.53],
        std: [58.395, 57.12, 57.375],
    },
];

/// One preprocessing tried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub channels: Channels,
    pub norm: Normalisation,
}

impl Candidate {
    /// `base` with this channel order and normalisation (mean and std per
    /// model channel, so reversed for BGR).
    pub fn input(&self, base: &InputSection) -> InputSection {
        let mut i = base.clone();
        i.channels = self.channels;
        let (mut mean, mut std) = (self.norm.mean, self.norm.std);
        if self.channels == Channels::BGR {
            mean.reverse();
            std.reverse();
        }
        i.mean = mean;
        i.std = std;
        i
    }

    pub fn label(&self) -> String {
        format!("{:?} {}", self.channels, self.norm.name)
    }
}

/// How well one candidate's embeddings separate genuine from impostor pairs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Separation {
    pub dprime: f64,
    pub genuine_mean: f64,
    pub impostor_mean: f64,
    pub genuine_pairs: usize,
    pub impostor_pairs: usize,
}

#[derive(Debug, Clone)]
pub struct Scored {
    pub candidate: Candidate,
    pub separation: Separation,
    /// Index of its class in [`Inference::classes`].
    pub class: usize,
}

/// What the faces say.
#[derive(Debug, Clone)]
pub struct Inference {
    /// Best d′ first.
    pub scored: Vec<Scored>,
    /// Classes of candidates that agree, best first; each lists indices
    /// into `scored`, its best first.
    pub classes: Vec<Vec<usize>>,
    /// d′(best class) − d′(runner-up class), and its 95 % interval.
    pub difference: f64,
    pub ci95: [f64; 2],
    /// Whether the interval lies above zero (or only one class is left).
    pub decided: bool,
    pub images: usize,
    pub identities: usize,
    pub resamples: usize,
}

impl Inference {
    /// The winner, when decided.
    pub fn chosen(&self) -> Option<&Scored> {
        self.decided.then(|| &self.scored[self.classes[0][0]])
    }

    /// The best member of the runner-up class.
    pub fn runner_up(&self) -> Option<&Scored> {
        self.classes.get(1).map(|c| &self.scored[c[0]])
    }
}

/// What to try and how hard.
#[derive(Debug, Clone)]
pub struct Options {
    /// Only this channel order (the user knows it).
    pub channels: Option<Channels>,
    /// Only normalisations with this name.
    pub normalisation: Option<String>,
    pub resamples: usize,
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            channels: None,
            normalisation: None,
            resamples: 10_000,
            seed: 42,
        }
    }
}

/// The candidates `opts` allows.
pub fn candidates(opts: &Options) -> Vec<Candidate> {
    let mut out = Vec::new();
    for channels in [Channels::RGB, Channels::BGR] {
        if opts.channels.is_some_and(|c| c != channels) {
            continue;
        }
        for norm in NORMALISATIONS {
            if opts
                .normalisation
                .as_deref()
                .is_some_and(|n| n != norm.name)
            {
                continue;
            }
            out.push(Candidate { channels, norm });
        }
    }
    out
}

/// Embeds `faces` (image, identity) under every candidate and measures.
/// `progress(done, total)` counts candidates.
pub fn infer(
    embedder: &mut Embedder,
    faces: &[(PathBuf, String)],
    opts: &Options,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Inference, EmbedError> {
    let cands = candidates(opts);
    if cands.is_empty() {
        return Err(EmbedError::NoImages(
            "no candidate preprocessing matches the options".into(),
        ));
    }
    let base = embedder.manifest().input.clone();
    let files: Vec<PathBuf> = faces.iter().map(|(p, _)| p.clone()).collect();
    let mut unit: Vec<Vec<Vec<f32>>> = Vec::new();
    let mut kept: Vec<PathBuf> = Vec::new();
    for (k, c) in cands.iter().enumerate() {
        progress(k, cands.len());
        embedder.set_input(&c.input(&base));
        let e = embedder.embed_images(&files, true, &mut |_, _| {})?;
        if k == 0 {
            kept = e.images.clone();
        } else if e.images != kept {
            return Err(EmbedError::NoImages(
                "the same faces did not decode under every preprocessing".into(),
            ));
        }
        unit.push((0..e.rows).map(|r| normalised(e.row(r))).collect());
    }
    progress(cands.len(), cands.len());
    embedder.set_input(&base);
    let ident_of: std::collections::HashMap<&PathBuf, &str> =
        faces.iter().map(|(p, i)| (p, i.as_str())).collect();
    let mut names: Vec<&str> = Vec::new();
    let ids: Vec<usize> = kept
        .iter()
        .map(|p| {
            let name = ident_of.get(p).copied().unwrap_or("");
            match names.iter().position(|n| *n == name) {
                Some(i) => i,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            }
        })
        .collect();
    let per_id = |i: usize| ids.iter().filter(|&&x| x == i).count();
    let usable = (0..names.len()).filter(|&i| per_id(i) >= 2).count();
    if usable < 2 || names.len() < 2 {
        return Err(EmbedError::NoImages(format!(
            "{} faces of {} identities: inferring preprocessing needs at least 2 identities with 2 or more faces each",
            kept.len(),
            names.len()
        )));
    }
    let cosines: Vec<Vec<f64>> = unit.iter().map(|u| cosine_matrix(u)).collect();
    let all: Vec<(usize, usize)> = (0..ids.len()).map(|i| (i, 0)).collect();
    let mut scored: Vec<Scored> = cands
        .iter()
        .zip(&cosines)
        .map(|(c, cos)| Scored {
            candidate: *c,
            separation: separation(cos, ids.len(), &all, &ids),
            class: 0,
        })
        .collect();
    let order = sorted_by_dprime(&scored);
    let (scored_sorted, unit_sorted, cos_sorted) = (
        order.iter().map(|&i| scored[i].clone()).collect::<Vec<_>>(),
        order.iter().map(|&i| &unit[i]).collect::<Vec<_>>(),
        order.iter().map(|&i| &cosines[i]).collect::<Vec<_>>(),
    );
    scored = scored_sorted;
    let classes = classes(&mut scored, &unit_sorted);
    let (difference, ci95, resamples) = if classes.len() < 2 {
        (f64::INFINITY, [f64::INFINITY; 2], 0)
    } else {
        let (a, b) = (classes[0][0], classes[1][0]);
        let d = scored[a].separation.dprime - scored[b].separation.dprime;
        let ci = bootstrap(cos_sorted[a], cos_sorted[b], &ids, names.len(), opts);
        (d, ci, opts.resamples)
    };
    Ok(Inference {
        decided: ci95[0] > 0.0,
        scored,
        classes,
        difference,
        ci95,
        images: kept.len(),
        identities: names.len(),
        resamples,
    })
}

fn normalised(row: &[f32]) -> Vec<f32> {
    let n = row
        .iter()
        .map(|v| f64::from(*v).powi(2))
        .sum::<f64>()
        .sqrt();
    row.iter()
        .map(|v| (f64::from(*v) / n.max(1e-12)) as f32)
        .collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

fn cosine_matrix(u: &[Vec<f32>]) -> Vec<f64> {
    let n = u.len();
    let mut m = vec![0.0; n * n];
    for i in 0..n {
        for j in i..n {
            let c = dot(&u[i], &u[j]);
            m[i * n + j] = c;
            m[j * n + i] = c;
        }
    }
    m
}

fn sorted_by_dprime(scored: &[Scored]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| {
        scored[b]
            .separation
            .dprime
            .total_cmp(&scored[a].separation.dprime)
    });
    order
}

/// Groups candidates (sorted best first) whose embeddings agree.
fn classes(scored: &mut [Scored], unit: &[&Vec<Vec<f32>>]) -> Vec<Vec<usize>> {
    let mut classes: Vec<Vec<usize>> = Vec::new();
    for i in 0..scored.len() {
        let agrees = |j: usize| {
            let n = unit[i].len().max(1);
            let mean = unit[i]
                .iter()
                .zip(unit[j].iter())
                .map(|(a, b)| dot(a, b))
                .sum::<f64>()
                / n as f64;
            mean >= 0.999
        };
        match classes.iter().position(|c| agrees(c[0])) {
            Some(k) => {
                classes[k].push(i);
                scored[i].class = k;
            }
            None => {
                scored[i].class = classes.len();
                classes.push(vec![i]);
            }
        }
    }
    classes
}

/// d′ over the pairs of `entries` (image index, copy): genuine when the
/// same identity and copy (different images), impostor when different
/// identities; a pair across two copies of one identity is left out.
fn separation(cos: &[f64], n: usize, entries: &[(usize, usize)], ids: &[usize]) -> Separation {
    let (mut g, mut i) = (Moments::default(), Moments::default());
    for (a, &(p, cp)) in entries.iter().enumerate() {
        for &(q, cq) in &entries[a + 1..] {
            if ids[p] != ids[q] {
                i.add(cos[p * n + q]);
            } else if cp == cq && p != q {
                g.add(cos[p * n + q]);
            }
        }
    }
    let pooled = ((g.var() + i.var()) / 2.0).sqrt();
    Separation {
        dprime: (g.mean() - i.mean()) / pooled.max(1e-12),
        genuine_mean: g.mean(),
        impostor_mean: i.mean(),
        genuine_pairs: g.n,
        impostor_pairs: i.n,
    }
}

#[derive(Default)]
struct Moments {
    n: usize,
    sum: f64,
    sq: f64,
}

impl Moments {
    fn add(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sq += x * x;
    }
    fn mean(&self) -> f64 {
        self.sum / self.n.max(1) as f64
    }
    fn var(&self) -> f64 {
        (self.sq / self.n.max(1) as f64 - self.mean().powi(2)).max(0.0)
    }
}

/// 95 % percentile-bootstrap interval of d′(a) − d′(b), identities
/// resampled with replacement (both candidates on the same resample).
fn bootstrap(a: &[f64], b: &[f64], ids: &[usize], identities: usize, opts: &Options) -> [f64; 2] {
    let n = ids.len();
    let members: Vec<Vec<usize>> = (0..identities)
        .map(|k| (0..n).filter(|&i| ids[i] == k).collect())
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let mut diffs = Vec::with_capacity(opts.resamples);
    for _ in 0..opts.resamples {
        let mut entries = Vec::new();
        for copy in 0..identities {
            let k = rng.random_range(0..identities);
            entries.extend(members[k].iter().map(|&i| (i, copy)));
        }
        let (sa, sb) = (
            separation(a, n, &entries, ids),
            separation(b, n, &entries, ids),
        );
        if sa.genuine_pairs > 0 && sa.impostor_pairs > 0 {
            diffs.push(sa.dprime - sb.dprime);
        }
    }
    if diffs.is_empty() {
        return [f64::NAN; 2];
    }
    diffs.sort_by(f64::total_cmp);
    let at = |q: f64| diffs[((diffs.len() - 1) as f64 * q).round() as usize];
    [at(0.025), at(0.975)]
}
