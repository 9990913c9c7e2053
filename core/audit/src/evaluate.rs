//! From embeddings to evidence: every pair's translator, thresholds, rates,
//! per-identity rows, each model alone, the family-wise identity tests and
//! the verdicts. A pure step: it reads embeddings and faces, never a model,
//! so the paper bench and the verdict bench run it on cached or derived
//! embeddings exactly as the audit does.

use std::collections::BTreeMap;

use zooaudit_host::Plugin;

use crate::embedding::{ModelEmbeddings, ModelRole, gather};
use crate::evidence::{self, EvidenceRow, Family, FamilyRecord, Subject};
use crate::faces::{Face, Split};
use crate::pair::{FittedPair, PairExport, fit_pair};
use crate::response::{self, ResponseRow};
use crate::stats::{Rate, Threshold, binomial_upper_tail, threshold_at};
use crate::verdict::{self, Culprit};
use crate::{
    AuditError, AuditSpec, Directions, IdentityRow, PairReport, Progress, ResultRow, ScoreRow,
    Verdict,
};

/// Everything an audit concludes from its embeddings.
#[derive(Debug, Clone)]
pub struct Evaluation {
    pub pairs: Vec<PairReport>,
    pub results: Vec<ResultRow>,
    pub identities: Vec<IdentityRow>,
    pub responses: Vec<ResponseRow>,
    pub evidence: Vec<EvidenceRow>,
    pub families: Vec<FamilyRecord>,
    pub culprits: Vec<Culprit>,
    pub verdicts: Vec<Verdict>,
    pub warnings: Vec<String>,
    pub scores: Vec<ScoreRow>,
    /// Every fitted pair's detector, exported.
    pub exports: Vec<PairExport>,
}

/// The ordered pairs (probe, reference) an audit evaluates: each candidate
/// with each reference, and, with two or more references, the references
/// among themselves (which model moves, [`verdict`]); both directions unless
/// the audit file says `directions = "candidate-probe"`.
pub fn pair_plan(models: &[ModelEmbeddings], directions: Directions) -> Vec<(usize, usize)> {
    let of = |r: ModelRole| -> Vec<usize> {
        (0..models.len()).filter(|&i| models[i].role == r).collect()
    };
    let (cands, refs) = (of(ModelRole::Candidate), of(ModelRole::Reference));
    let mut out = Vec::new();
    let mut add = |a: usize, b: usize| {
        out.push((a, b));
        if directions == Directions::Both {
            out.push((b, a));
        }
    };
    for &c in &cands {
        for &r in &refs {
            add(c, r);
        }
    }
    if refs.len() >= 2 {
        for (i, &a) in refs.iter().enumerate() {
            for &b in &refs[i + 1..] {
                add(a, b);
            }
        }
    }
    out
}

/// Per ordered pair and trigger, each held-out face's evidence.
type Witnesses = BTreeMap<(usize, usize), Vec<Vec<f64>>>;

/// What [`evaluate_with`] computes beyond the verdict's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EvalOptions {
    /// The held-out fidelity matrix (every probe against every reference:
    /// top-1, mean rank, ZEI scores) — n² scorings. Without it the
    /// fidelity fields are empty (`samples` 0) and the top-1 reason for
    /// *inconclusive* is not checked.
    pub fidelity: bool,
    /// The rows of scores.csv.
    pub scores: bool,
    /// Every fitted detector's exported state ([`Evaluation::exports`],
    /// for `audit --export-pair`): a serialisation per pair.
    pub exports: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            fidelity: true,
            scores: true,
            exports: true,
        }
    }
}

/// Evaluates every pair of [`pair_plan`] and decides (everything computed).
pub fn evaluate(
    spec: &AuditSpec,
    faces: &[Face],
    split: &Split,
    triggers: &[String],
    models: &[ModelEmbeddings],
    detector: &Plugin,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation, AuditError> {
    evaluate_with(
        spec,
        faces,
        split,
        triggers,
        models,
        detector,
        &EvalOptions::default(),
        progress,
    )
}

/// [`evaluate`] with [`EvalOptions`].
#[allow(clippy::too_many_arguments)]
pub fn evaluate_with(
    spec: &AuditSpec,
    faces: &[Face],
    split: &Split,
    triggers: &[String],
    models: &[ModelEmbeddings],
    detector: &Plugin,
    options: &EvalOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Evaluation, AuditError> {
    let eval = &split.heldout;
    let eval_ids: Vec<Option<&str>> = eval.iter().map(|&i| faces[i].identity.as_deref()).collect();
    // Each model alone.
    let mut responses = Vec::new();
    let mut switch_deltas: Vec<Vec<Vec<f64>>> = Vec::new();
    let n_cal = split.calibration.len();
    for m in models {
        let clean = gather(&m.clean, m.dim, eval);
        let mut per_trigger = Vec::new();
        for (ti, t) in triggers.iter().enumerate() {
            let (row, deltas) = response::response(
                &m.name,
                t,
                m.dim,
                &clean,
                &m.controls[ti][n_cal * m.dim..],
                &m.triggered[ti],
                &eval_ids,
            );
            responses.push(row);
            per_trigger.push(deltas);
        }
        switch_deltas.push(per_trigger);
    }
    let mut out = Evaluation {
        pairs: Vec::new(),
        results: Vec::new(),
        identities: Vec::new(),
        responses,
        evidence: Vec::new(),
        families: Vec::new(),
        culprits: Vec::new(),
        verdicts: Vec::new(),
        warnings: Vec::new(),
        scores: Vec::new(),
        exports: Vec::new(),
    };
    let mut witnesses: Witnesses = BTreeMap::new();
    for (pi, ri) in pair_plan(models, spec.directions) {
        let z = evaluate_pair(
            spec,
            faces,
            split,
            triggers,
            models,
            (pi, ri),
            detector,
            options,
            &mut out,
            progress,
        )?;
        witnesses.insert((pi, ri), z);
    }
    let m = out.identities.len().max(1) as f64;
    for row in out.identities.iter_mut() {
        row.p_bonferroni = (row.p_value * m).min(1.0);
    }
    identity_families(
        spec,
        triggers,
        models,
        &eval_ids,
        &witnesses,
        &switch_deltas,
        &mut out,
    );
    let (verdicts, culprits) = verdict::decide(spec, models, &out);
    out.verdicts = verdicts;
    out.culprits = culprits;
    Ok(out)
}

/// The family-wise identity tests: one max-T family per candidate (every
/// pair through it, plus its own identity switches), per model alone, and,
/// with three models or more, per pair of models.
fn identity_families(
    spec: &AuditSpec,
    triggers: &[String],
    models: &[ModelEmbeddings],
    eval_ids: &[Option<&str>],
    witnesses: &Witnesses,
    switch_deltas: &[Vec<Vec<f64>>],
    out: &mut Evaluation,
) {
    let groups = evidence::identity_groups(eval_ids, spec.min_identity_images);
    let n = eval_ids.len();
    let mut run_family = |subject: Subject, name: String, per_trigger: Vec<Vec<f64>>, seed: u64| {
        let fam = Family {
            subject,
            name,
            evidence: per_trigger,
            triggers,
        };
        let (rows, record) = evidence::test_family(&fam, &groups, n, spec.alpha, seed);
        out.evidence.extend(rows);
        out.families.push(record);
    };
    let through = |x: usize| -> Vec<&Vec<Vec<f64>>> {
        witnesses
            .iter()
            .filter(|((p, r), _)| *p == x || *r == x)
            .map(|(_, z)| z)
            .collect()
    };
    for (ci, c) in models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == ModelRole::Candidate)
    {
        let ws = through(ci);
        let per_trigger = (0..triggers.len())
            .map(|t| {
                let w: Vec<&[f64]> = ws.iter().map(|z| z[t].as_slice()).collect();
                evidence::subject_evidence(&w, Some(&switch_deltas[ci][t]), n)
            })
            .collect();
        run_family(
            Subject::Candidate,
            c.name.clone(),
            per_trigger,
            spec.seed ^ 0xc0ff_ee00 ^ ci as u64,
        );
    }
    for (mi, m) in models.iter().enumerate() {
        let per_trigger = (0..triggers.len())
            .map(|t| evidence::subject_evidence(&[], Some(&switch_deltas[mi][t]), n))
            .collect();
        run_family(
            Subject::Alone,
            m.name.clone(),
            per_trigger,
            spec.seed ^ 0xa10e ^ mi as u64,
        );
    }
    if models.len() >= 3 {
        for a in 0..models.len() {
            for b in a + 1..models.len() {
                let ws: Vec<&Vec<Vec<f64>>> = witnesses
                    .iter()
                    .filter(|((p, r), _)| (*p == a && *r == b) || (*p == b && *r == a))
                    .map(|(_, z)| z)
                    .collect();
                if ws.is_empty() {
                    continue;
                }
                let per_trigger = (0..triggers.len())
                    .map(|t| {
                        let w: Vec<&[f64]> = ws.iter().map(|z| z[t].as_slice()).collect();
                        evidence::subject_evidence(&w, None, n)
                    })
                    .collect();
                run_family(
                    Subject::Pair,
                    verdict::pair_name(&models[a].name, &models[b].name),
                    per_trigger,
                    spec.seed ^ 0xba1 ^ ((a as u64) << 8) ^ b as u64,
                );
            }
        }
    }
}

/// Fits, calibrates and scores one ordered pair; appends its report rows
/// and returns its per-trigger, per-face evidence.
#[allow(clippy::too_many_arguments)]
fn evaluate_pair(
    spec: &AuditSpec,
    faces: &[Face],
    split: &Split,
    triggers: &[String],
    models: &[ModelEmbeddings],
    (pi, ri): (usize, usize),
    detector: &Plugin,
    options: &EvalOptions,
    out: &mut Evaluation,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<f64>>, AuditError> {
    let (p, r) = (&models[pi], &models[ri]);
    let (pd, rd) = (p.dim, r.dim);
    let (pname, rname) = (p.name.clone(), r.name.clone());
    let (cal_idx, eval) = (&split.calibration, &split.heldout);
    let fitted = fit_pair(spec, split, p, r, detector, progress)?;
    let score = |pv: &[f32], rv: &[f32]| fitted.score(pv, rv);
    let genuine = &fitted.genuine;
    let p_eval = gather(&p.clean, pd, eval);
    let r_eval = gather(&r.clean, rd, eval);
    // Fidelity: every held-out probe against every held-out reference.
    let (matrix, fidelity) = if options.fidelity {
        fitted.fidelity_matrix(&p_eval, &r_eval)?
    } else {
        (Vec::new(), no_fidelity())
    };
    // ZEI: probe image i vs reference image j of another identity.
    let zei: Vec<f32> = matrix
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, v)| (i, j, *v)))
        .filter(|&(i, j, _)| !same_person(faces, eval, i, j))
        .map(|(_, _, v)| v)
        .collect();
    out.warnings.extend(fitted.warnings.iter().cloned());
    if options.exports {
        let paths: Vec<String> = cal_idx
            .iter()
            .map(|&i| faces[i].path.display().to_string())
            .collect();
        out.exports.push(fitted.exported(&paths));
    }
    let (thresholds, clean_rates) = (&fitted.thresholds, &fitted.clean_fnmr);
    if options.scores && options.fidelity {
        clean_score_rows(faces, eval, &fitted, &matrix, out);
    }
    let mut witness = Vec::with_capacity(triggers.len());
    for (ti, t) in triggers.iter().enumerate() {
        let poisoned = score(&p.triggered[ti], &r.triggered[ti])?;
        let control = score(&p.controls[ti], &r.controls[ti])?;
        let (control_cal, control_eval) = control.split_at(cal_idx.len());
        witness.push(crate::evidence::witness_evidence(
            &poisoned,
            control_eval,
            crate::evidence::score_scale(control_cal),
        ));
        for (k, &fi) in eval.iter().enumerate().filter(|_| options.scores) {
            let image = faces[fi].path.display().to_string();
            let row = |kind: &str, score: f32| ScoreRow {
                image: image.clone(),
                trigger: t.clone(),
                kind: kind.into(),
                probe: pname.clone(),
                reference: rname.clone(),
                score,
            };
            out.scores.push(row("poisoned", poisoned[k]));
            out.scores.push(row("control", control_eval[k]));
        }
        for (oi, th) in thresholds.iter().enumerate() {
            let ct =
                threshold_at(control_cal, th.target_fnmr).ok_or_else(|| AuditError::Threshold {
                    probe: pname.clone(),
                    reference: rname.clone(),
                    message: format!("no control threshold for {t}"),
                })?;
            out.results.push(result_row(
                &pname,
                &rname,
                t,
                th,
                &clean_rates[oi],
                &ct,
                &poisoned,
                control_eval,
            ));
            if th.target_fnmr == spec.primary {
                identity_rows(
                    spec,
                    faces,
                    eval,
                    (&pname, &rname, t),
                    &poisoned,
                    control_eval,
                    ct.threshold,
                    out,
                );
            }
        }
    }
    out.pairs.push(PairReport {
        probe: pname.clone(),
        reference: rname.clone(),
        probe_dim: pd,
        reference_dim: rd,
        detector: fitted.detector_name.clone(),
        fit: fitted.fit.clone(),
        fidelity,
        thresholds: fitted.thresholds.clone(),
        clean_fnmr: fitted.clean_fnmr.clone(),
        zei_samples: zei.len(),
        zei_mean_score: zei.iter().map(|v| f64::from(*v)).sum::<f64>() / zei.len().max(1) as f64,
        genuine_mean_score: genuine.iter().map(|v| f64::from(*v)).sum::<f64>()
            / genuine.len().max(1) as f64,
    });
    Ok(witness)
}

/// The fidelity of an evaluation that skips the matrix (`EvalOptions`).
fn no_fidelity() -> zooaudit_pairing::Fidelity {
    zooaudit_pairing::Fidelity {
        samples: 0,
        mean_cosine: f64::NAN,
        top1: f64::NAN,
        mean_rank: f64::NAN,
    }
}

/// Whether held-out faces `i` and `j` are one image or one labelled person.
fn same_person(faces: &[Face], eval: &[usize], i: usize, j: usize) -> bool {
    let (a, b) = (&faces[eval[i]], &faces[eval[j]]);
    i == j || (a.identity.is_some() && a.identity == b.identity)
}

/// scores.csv rows of the clean held-out faces: each face's genuine score,
/// and one zero-effort impostor row per face (its probe embedding against
/// the reference embedding of the next held-out face of another person).
fn clean_score_rows(
    faces: &[Face],
    eval: &[usize],
    fitted: &FittedPair,
    matrix: &[Vec<f32>],
    out: &mut Evaluation,
) {
    let n = eval.len();
    for (k, &fi) in eval.iter().enumerate() {
        let row = |image: String, kind: &str, score: f32| ScoreRow {
            image,
            trigger: "clean".into(),
            kind: kind.into(),
            probe: fitted.probe.clone(),
            reference: fitted.reference.clone(),
            score,
        };
        out.scores.push(row(
            faces[fi].path.display().to_string(),
            "genuine",
            fitted.genuine[k],
        ));
        if let Some(j) = (1..n)
            .map(|s| (k + s) % n)
            .find(|&j| !same_person(faces, eval, k, j))
        {
            let image = format!(
                "{}|{}",
                faces[fi].path.display(),
                faces[eval[j]].path.display()
            );
            out.scores.push(row(image, "zei", matrix[k][j]));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn result_row(
    probe: &str,
    reference: &str,
    trigger: &str,
    th: &Threshold,
    clean: &Rate,
    ct: &Threshold,
    poisoned: &[f32],
    control_eval: &[f32],
) -> ResultRow {
    let flagged = Rate::flagged(poisoned, th.threshold);
    let vs_control = Rate::flagged(poisoned, ct.threshold);
    let control_rate = Rate::flagged(control_eval, ct.threshold);
    ResultRow {
        probe: probe.to_string(),
        reference: reference.to_string(),
        trigger: trigger.to_string(),
        target_fnmr: th.target_fnmr,
        threshold: th.threshold,
        samples: flagged.samples,
        flagged: flagged.count,
        flag_rate: flagged.rate,
        ci95: flagged.ci95,
        clean_fnmr: clean.rate,
        clean_ci95: clean.ci95,
        control_threshold: ct.threshold,
        flagged_vs_control: vs_control.count,
        flag_rate_vs_control: vs_control.rate,
        ci95_vs_control: vs_control.ci95,
        control_flag_rate: control_rate.rate,
        control_ci95: control_rate.ci95,
    }
}

/// Per labelled identity: its triggered and control-stamped faces flagged
/// at the control threshold, and the paired (McNemar) counts — descriptive;
/// the verdict's identity test is [`crate::evidence`].
#[allow(clippy::too_many_arguments)]
fn identity_rows(
    spec: &AuditSpec,
    faces: &[Face],
    eval: &[usize],
    (probe, reference, trigger): (&str, &str, &str),
    poisoned: &[f32],
    control_eval: &[f32],
    threshold: f32,
    out: &mut Evaluation,
) {
    let mut identities: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (k, &fi) in eval.iter().enumerate() {
        if let Some(id) = faces[fi].identity.as_deref() {
            identities.entry(id).or_default().push(k);
        }
    }
    for (id, ks) in identities {
        if ks.len() < spec.min_identity_images {
            continue;
        }
        let trig: Vec<f32> = ks.iter().map(|&k| poisoned[k]).collect();
        let ctrl: Vec<f32> = ks.iter().map(|&k| control_eval[k]).collect();
        let tr = Rate::flagged(&trig, threshold);
        let cr = Rate::flagged(&ctrl, threshold);
        let pairs = trig.iter().zip(&ctrl);
        let trigger_only = pairs
            .clone()
            .filter(|(t, c)| **t < threshold && **c >= threshold)
            .count();
        let control_only = pairs
            .filter(|(t, c)| **t >= threshold && **c < threshold)
            .count();
        out.identities.push(IdentityRow {
            probe: probe.to_string(),
            reference: reference.to_string(),
            trigger: trigger.to_string(),
            identity: id.to_string(),
            samples: tr.samples,
            flagged: tr.count,
            flag_rate: tr.rate,
            ci95: tr.ci95,
            clean_flagged: cr.count,
            trigger_only,
            control_only,
            p_value: binomial_upper_tail(trigger_only, trigger_only + control_only, 0.5),
            p_bonferroni: 1.0,
        });
    }
}
