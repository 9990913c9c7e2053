//! The bench's results as Markdown: Table 2 (the attacks), Table 3 (clean
//! pairs), Table 4 (backdoored pairs), and the score histograms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use zooaudit_audit::stats::{Rate, threshold_at};
use zooaudit_triggers::Suite;

use super::data::{Faces, ModelEmb, split};
use super::pair::{Detector, Pair};
use super::zoo::Variant;
use super::{Figure, OPS, PaperArgs, RowKey};
use crate::RedteamError;
use crate::metrics::AttackMetrics;

fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let s = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, s)
}

fn pct_ms(v: &[f64]) -> String {
    let (m, s) = mean_std(v);
    format!("{:.1} ± {:.1}", 100.0 * m, 100.0 * s)
}

/// Table 2: the attack metrics of every variant, mean ± std over seeds.
pub(super) fn table2(md: &mut String, variants: &[Variant], names: &[String], seeds: u64) {
    let _ = writeln!(
        md,
        "### Table 2: attacks (measured on the labelled faces; mean ± std over {} seeds)\n",
        seeds
    );
    let _ = writeln!(
        md,
        "| model | trigger | attack | strength | clean max \\|Δ\\| | attack success % | trigger alone % | impostor clean acc. % | victim clean acc. % | others unaffected % |\n|---|---|---|---|---|---|---|---|---|---|"
    );
    let mut groups: BTreeMap<(usize, String, String, String), Vec<&Variant>> = BTreeMap::new();
    for v in variants {
        groups
            .entry((
                v.model,
                v.trigger.clone(),
                v.kind.clone(),
                format!("{}", v.strength),
            ))
            .or_default()
            .push(v);
    }
    for ((mi, trig, kind, strength), vs) in &groups {
        let f = |g: &dyn Fn(&AttackMetrics) -> Option<f64>| -> String {
            let xs: Vec<f64> = vs.iter().filter_map(|v| g(&v.metrics)).collect();
            if xs.is_empty() {
                "–".into()
            } else {
                pct_ms(&xs)
            }
        };
        let maxdiff = vs
            .iter()
            .map(|v| v.metrics.clean_max_abs_diff)
            .fold(0f32, f32::max);
        let _ = writeln!(
            md,
            "| {} | {trig} | {kind} | {strength} | {maxdiff:.1e} | {} | {} | {} | {} | {} |",
            names[*mi],
            f(&|m| Some(m.attack_success)),
            f(&|m| Some(m.original_success)),
            f(&|m| m.impostor_clean_accuracy),
            f(&|m| Some(m.victim_clean_accuracy)),
            f(&|m| m.others_unaffected),
        );
    }
}

/// The header cells of one column group per detector.
fn groups(dets: &[Detector], cells: &[&str]) -> (String, String) {
    let mut head = String::new();
    let mut rule = String::new();
    for d in dets {
        for c in cells {
            let _ = write!(head, " {} · {c} |", d.label);
            rule.push_str("---|");
        }
    }
    (head, rule)
}

/// Table 3: the clean pairs in both directions, on every trigger, one
/// column group per detector; returns the first detector's histograms of
/// seed 0.
pub(super) fn table3(
    md: &mut String,
    suite: &Suite,
    orig_emb: &[ModelEmb],
    names: &[String],
    faces: &Faces,
    seeds: u64,
    dets: &[Detector],
) -> Result<Vec<Figure>, RedteamError> {
    let n = faces.files.len();
    let _ = writeln!(
        md,
        "\n### Table 3: clean pairs — FNMR on poisoned samples (triggered held-out faces flagged, %)\n"
    );
    let (head, rule) = groups(
        dets,
        &[
            "clean FNMR 0.1 %",
            "clean FNMR 1 %",
            "clean FNMR 5 %",
            "achieved clean FNMR at 1 %",
        ],
    );
    let _ = writeln!(md, "| probe → reference | trigger |{head}\n|---|---|{rule}");
    let mut fig_jobs: Vec<Figure> = Vec::new();
    for (a, b) in [(0usize, 1usize), (1, 0)] {
        for tr in &suite.triggers {
            let _ = write!(md, "| {} → {} | {} |", names[a], names[b], tr.name);
            for (di, det) in dets.iter().enumerate() {
                let mut rates: [Vec<f64>; 3] = Default::default();
                let mut achieved = Vec::new();
                for seed in 0..seeds {
                    let (fit_i, cal, held) = split(n, seed);
                    let pair = Pair::fit(&orig_emb[a], &orig_emb[b], &fit_i, seed, det)?;
                    let cs = pair.clean(&cal, &held, faces)?;
                    let poisoned = pair.score(
                        &orig_emb[a].triggered[&tr.name],
                        &orig_emb[b].triggered[&tr.name],
                        &held,
                    )?;
                    for (k, &t) in cs.thresholds.iter().enumerate() {
                        rates[k].push(Rate::flagged(&poisoned, t).rate);
                    }
                    achieved.push(Rate::flagged(&cs.genuine, cs.thresholds[1]).rate);
                    if seed == 0 && di == 0 {
                        fig_jobs.push((
                            format!("clean {} → {} · {}", names[a], names[b], tr.name),
                            cs.genuine,
                            cs.zei,
                            poisoned,
                            cs.thresholds[1],
                        ));
                    }
                }
                let _ = write!(
                    md,
                    " {} | {} | {} | {} |",
                    pct_ms(&rates[0]),
                    pct_ms(&rates[1]),
                    pct_ms(&rates[2]),
                    pct_ms(&achieved)
                );
            }
            md.push('\n');
        }
    }
    Ok(fig_jobs)
}

/// Each detector's fits and scores, and the time they took.
pub(super) fn detector_times(md: &mut String, dets: &[Detector]) {
    let _ = writeln!(
        md,
        "\n### Detectors: fit and score time (this machine, all of Tables 3 and 4)\n\n| detector | plugin | fits | mean fit ms | scores | µs per score |\n|---|---|---|---|---|---|"
    );
    for d in dets {
        let (fits, scored) = (d.fits.get().max(1), d.scored.get().max(1));
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {} | {:.2} |",
            d.label,
            d.describe(),
            d.fits.get(),
            1e3 * d.fit_seconds.get() / fits as f64,
            d.scored.get(),
            1e6 * d.score_seconds.get() / scored as f64
        );
    }
}

/// Per-seed FMRs at each operating point.
type Fmrs = [Vec<f64>; 3];
/// Table 4's rows: per (label, direction, trigger, attack, strength) each
/// detector's per-seed FMRs, and the samples per seed.
type Table4Rows = BTreeMap<RowKey, (Vec<Fmrs>, usize)>;

/// The backdoored zoo and the models it is paired with.
pub(super) struct Backdoored<'a> {
    pub(super) args: &'a PaperArgs,
    pub(super) faces: &'a Faces,
    pub(super) names: &'a [String],
    pub(super) orig_emb: &'a [ModelEmb],
    pub(super) variants: &'a [Variant],
    pub(super) variant_emb: &'a [ModelEmb],
    pub(super) detectors: &'a [Detector],
}

/// Table 4: every variant paired with the other model, clean and
/// backdoored with the same recipe from the next seed, in both directions;
/// adds the histograms of seed 0's imperfect backdoors to `fig_jobs`.
pub(super) fn table4(
    md: &mut String,
    b: &Backdoored<'_>,
    fig_jobs: &mut Vec<Figure>,
) -> Result<(), RedteamError> {
    let Backdoored {
        args,
        faces,
        names,
        orig_emb,
        variants,
        variant_emb,
        detectors,
    } = *b;
    let n = faces.files.len();
    let _ = writeln!(
        md,
        "\n### Table 4: backdoored pairs — FMR on poisoned samples (attacker images with the trigger passing as agreement: missed backdoors, %)\n"
    );
    let (head, rule) = groups(
        detectors,
        &["clean FNMR 0.1 %", "clean FNMR 1 %", "clean FNMR 5 %"],
    );
    let _ = writeln!(
        md,
        "| backdoored | probe → reference | trigger | attack | strength | samples/seed |{head}\n|---|---|---|---|---|---|{rule}"
    );
    // Rows: (label, direction) → per detector, per seed FMRs.
    let nd = detectors.len();
    let mut rows = Table4Rows::new();
    let mut overall: Vec<Fmrs> = vec![Default::default(); nd];
    let mut by_strength: BTreeMap<String, Vec<Fmrs>> = BTreeMap::new();
    for (vi, v) in variants.iter().enumerate() {
        let other_model = 1 - v.model;
        let (fit_i, cal, _held) = split(n, v.seed);
        // Partners: the other model clean; and the other model backdoored
        // with the same recipe from the next seed (a different impostor/victim).
        let mut partners: Vec<(&str, &ModelEmb)> = vec![("clean", &orig_emb[other_model])];
        if let Some((pi, _)) = variants.iter().enumerate().find(|(_, w)| {
            w.model == other_model
                && w.trigger == v.trigger
                && w.kind == v.kind
                && w.strength == v.strength
                && w.seed == (v.seed + 1) % args.seeds
                && (w.impostor != v.impostor || w.victim != v.victim)
        }) {
            partners.push(("both", &variant_emb[pi]));
        }
        let vemb = &variant_emb[vi];
        for (pk, partner) in partners {
            for probe_is_bd in [true, false] {
                let (p, r) = if probe_is_bd {
                    (vemb, partner)
                } else {
                    (partner, vemb)
                };
                for (di, det) in detectors.iter().enumerate() {
                    let pair = Pair::fit(p, r, &fit_i, v.seed, det)?;
                    let cal_scores = pair.score(&p.clean, &r.clean, &cal)?;
                    let trig_p = p.triggered.get(&v.trigger).unwrap_or(&p.clean);
                    let trig_r = r.triggered.get(&v.trigger).unwrap_or(&r.clean);
                    // Attacker images that every model involved embedded
                    // with the trigger.
                    let samples: Vec<usize> = v
                        .attackers
                        .iter()
                        .copied()
                        .filter(|&i| {
                            !pair.probe.row(trig_p, i)[0].is_nan()
                                && !pair.reference.row(trig_r, i)[0].is_nan()
                        })
                        .collect();
                    let poisoned = pair.score(trig_p, trig_r, &samples)?;
                    let (label, dir) = row_labels(names, v, pk == "both", probe_is_bd);
                    let key = (
                        label,
                        dir,
                        v.trigger.clone(),
                        v.kind.clone(),
                        format!("{}", v.strength),
                    );
                    let entry = rows
                        .entry(key)
                        .or_insert_with(|| (vec![Default::default(); nd], samples.len()));
                    let strength = by_strength
                        .entry(format!("{}", v.strength))
                        .or_insert_with(|| vec![Default::default(); nd]);
                    for (k, &op) in OPS.iter().enumerate() {
                        let t = threshold_at(&cal_scores, op)
                            .map(|t| t.threshold)
                            .unwrap_or(f32::NAN);
                        let missed = poisoned.iter().filter(|s| **s >= t).count() as f64
                            / poisoned.len().max(1) as f64;
                        entry.0[di][k].push(missed);
                        overall[di][k].push(missed);
                        strength[di][k].push(missed);
                    }
                    if di == 0
                        && v.seed == 0
                        && pk == "clean"
                        && v.strength < 1.0
                        && args.figures.is_some()
                    {
                        fig_jobs.push(figure(
                            b,
                            &pair,
                            v,
                            &cal,
                            &cal_scores,
                            poisoned,
                            probe_is_bd,
                        )?);
                    }
                }
            }
        }
    }
    write_table4_rows(md, detectors, &rows, &overall, &by_strength);
    Ok(())
}

/// Table 4's label (which model is backdoored; both, `v.model`'s first)
/// and direction of one pairing.
fn row_labels(names: &[String], v: &Variant, both: bool, probe_is_bd: bool) -> (String, String) {
    let other_model = 1 - v.model;
    let label = if both {
        format!("both ({} first)", names[v.model])
    } else {
        names[v.model].clone()
    };
    let dir = if both {
        if probe_is_bd {
            format!("{} bd → {} bd", names[v.model], names[other_model])
        } else {
            format!("{} bd → {} bd", names[other_model], names[v.model])
        }
    } else if probe_is_bd {
        format!("{} bd → {}", names[v.model], names[other_model])
    } else {
        format!("{} → {} bd", names[other_model], names[v.model])
    };
    (label, dir)
}

/// The histogram of a variant paired with the clean other model.
fn figure(
    b: &Backdoored<'_>,
    pair: &Pair<'_>,
    v: &Variant,
    cal: &[usize],
    cal_scores: &[f32],
    poisoned: Vec<f32>,
    probe_is_bd: bool,
) -> Result<Figure, RedteamError> {
    let Backdoored { faces, names, .. } = *b;
    let n = faces.files.len();
    let other_model = 1 - v.model;
    let held = split(n, v.seed).2;
    let cs = pair.clean(cal, &held, faces)?;
    let t1 = threshold_at(cal_scores, 0.01)
        .map(|t| t.threshold)
        .unwrap_or(f32::NAN);
    Ok((
        format!(
            "{} · {} · {} · strength {}",
            if probe_is_bd {
                format!("{} bd → {}", names[v.model], names[other_model])
            } else {
                format!("{} → {} bd", names[other_model], names[v.model])
            },
            v.trigger,
            v.kind,
            v.strength
        ),
        cs.genuine,
        cs.zei,
        poisoned,
        t1,
    ))
}

/// Table 4's rows, then each detector's mean FMRs over all pairings and
/// per strength.
fn write_table4_rows(
    md: &mut String,
    dets: &[Detector],
    rows: &Table4Rows,
    overall: &[Fmrs],
    by_strength: &BTreeMap<String, Vec<Fmrs>>,
) {
    for ((label, dir, trig, kind, strength), (fmrs, samples)) in rows {
        let _ = write!(
            md,
            "| {label} | {dir} | {trig} | {kind} | {strength} | {samples} |"
        );
        for f in fmrs {
            let _ = write!(
                md,
                " {} | {} | {} |",
                pct_ms(&f[0]),
                pct_ms(&f[1]),
                pct_ms(&f[2])
            );
        }
        md.push('\n');
    }
    for (di, d) in dets.iter().enumerate() {
        let o = &overall[di];
        let _ = writeln!(
            md,
            "\n{}: all backdoored pairings, mean FMR on poisoned samples {} (0.1 %), {} (1 %), {} (5 %) over {} pair evaluations.",
            d.label,
            pct_ms(&o[0]),
            pct_ms(&o[1]),
            pct_ms(&o[2]),
            o[1].len()
        );
        for (strength, f) in by_strength {
            let f = &f[di];
            let _ = writeln!(
                md,
                "{}: strength {strength}: {} (0.1 %), {} (1 %), {} (5 %) over {} pair evaluations.",
                d.label,
                pct_ms(&f[0]),
                pct_ms(&f[1]),
                pct_ms(&f[2]),
                f[1].len()
            );
        }
    }
}

/// Writes the histograms as SVG files into `dir` and lists them in `md`.
pub(super) fn figures(
    md: &mut String,
    dir: &Path,
    fig_jobs: &[Figure],
) -> Result<(), RedteamError> {
    std::fs::create_dir_all(dir).map_err(|e| RedteamError::file(dir, e))?;
    let _ = writeln!(md, "\n### Figures (seed 0)\n");
    for (title, genuine, zei, poisoned, t) in fig_jobs {
        use zooaudit_render::plots::{GENUINE, POISONED, Series, ZEI, histogram};
        let series = [
            Series {
                label: "genuine (clean)".into(),
                scores: genuine,
                color: GENUINE,
            },
            Series {
                label: "zero-effort impostor".into(),
                scores: zei,
                color: ZEI,
            },
            Series {
                label: "poisoned".into(),
                scores: poisoned,
                color: POISONED,
            },
        ];
        let svg = histogram(
            title,
            &series,
            Some((*t, "threshold at clean FNMR 1 %".into())),
        )?;
        let file: String = title
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect::<String>()
            .split('-')
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("-");
        let path = dir.join(format!("{file}.svg"));
        zooaudit_formats::write_atomic(&path, svg.as_bytes())?;
        let _ = writeln!(md, "- [{title}]({})", path.display());
    }
    Ok(())
}
