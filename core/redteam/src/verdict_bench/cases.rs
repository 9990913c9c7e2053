//! The backdoored audits of one seed (every backdoored base, trigger,
//! attack, strength, impostor size and number of references, and the clean
//! candidate next to the backdoored reference), and their outcomes.

use std::path::PathBuf;

use zooaudit_audit::{Evaluation, ModelEmbeddings, ModelRole, Split, SuiteStamps};

use super::derive::{backdoored, detections, renamed, subset};
use super::{Base, Ctx, Outcome, VerdictArgs};
use crate::inject::{InjectOptions, calibrate};
use crate::{AttackKind, RedteamError};

#[allow(clippy::too_many_arguments)]
pub(super) fn outcome(
    ev: &Evaluation,
    suite: &str,
    seed: u64,
    case: &str,
    backdoored: Option<&str>,
    trigger: Option<&str>,
    strength: Option<f32>,
    impostor_faces: Option<usize>,
    references: usize,
    impostor: Option<&str>,
) -> Outcome {
    let v = &ev.verdicts[0];
    let mut cand: Vec<&zooaudit_audit::evidence::EvidenceRow> = ev
        .evidence
        .iter()
        .filter(|e| {
            e.subject == zooaudit_audit::evidence::Subject::Candidate && e.name == v.candidate
        })
        .collect();
    cand.sort_by(|a, b| {
        a.p_adjusted
            .total_cmp(&b.p_adjusted)
            .then(b.statistic.total_cmp(&a.statistic))
    });
    let impostor_evidence = impostor.and_then(|i| {
        cand.iter()
            .find(|e| e.identity == i && Some(e.trigger.as_str()) == trigger)
            .map(|e| (*e).clone())
    });
    let mut named: Vec<String> = ev.culprits.iter().map(|c| c.model.clone()).collect();
    named.sort();
    named.dedup();
    let named_right = match backdoored {
        Some(b) => named.iter().all(|n| n == b),
        None => named.is_empty(),
    };
    Outcome {
        suite: suite.to_string(),
        seed,
        case: case.to_string(),
        candidate: v.candidate.clone(),
        backdoored: backdoored.map(str::to_string),
        trigger: trigger.map(str::to_string),
        strength,
        impostor_faces,
        references,
        verdict: v.verdict,
        named,
        named_right,
        alarms: v.alarms.len(),
        top_evidence: cand.first().map(|e| (*e).clone()),
        impostor_evidence,
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn backdoored_cases(
    args: &VerdictArgs,
    ctx: &Ctx<'_>,
    bases: &[Base],
    labeled: &std::path::Path,
    (impostor, victim): (&str, &str),
    stamps: &SuiteStamps,
    seed: u64,
    suite_name: &str,
) -> Result<Vec<Outcome>, RedteamError> {
    let mut out = Vec::new();
    for (b, o) in [(0usize, 1usize), (1, 0)] {
        if !args.backdoored.contains(&b) {
            continue;
        }
        let base = &bases[b];
        for trigger in &args.backdoor_triggers {
            for kind in [
                AttackKind::OneToOne {
                    impostor: impostor.to_string(),
                },
                AttackKind::AllToOne,
            ] {
                let inject = InjectOptions {
                    manifest: base.embedder.manifest().path.clone(),
                    suite: args.backdoor_suite.clone(),
                    trigger: trigger.clone(),
                    labeled: labeled.to_path_buf(),
                    victim: victim.to_string(),
                    kind: kind.clone(),
                    strength: 1.0,
                    hiding: Default::default(),
                    calibration: Vec::new(),
                    cache: ctx.cache.clone(),
                    out: PathBuf::new(),
                };
                let cal = calibrate(&inject, &base.embedder)?;
                let det = detections(&cal.backdoor, &base.embedder, ctx.faces, ctx.split, stamps)?;
                let bd_name = format!("{}-bd", base.name);
                let other_name = bases[o].name.clone();
                for &strength in &args.strengths {
                    let mut bd = cal.backdoor.clone();
                    bd.strength = strength;
                    let cand = backdoored(&bd, &base.embeddings, &det, &bd_name);
                    let sizes: Vec<Option<usize>> = match kind {
                        AttackKind::OneToOne { .. } => {
                            args.impostor_faces.iter().map(|s| Some(*s)).collect()
                        }
                        AttackKind::AllToOne => vec![None],
                    };
                    for size in sizes {
                        for refs in [1usize, 2] {
                            let mut models = vec![
                                cand.clone(),
                                renamed(&bases[o].embeddings, &other_name, ModelRole::Reference),
                            ];
                            if refs == 2 {
                                models.push(renamed(
                                    &bases[o].embeddings,
                                    &format!("{other_name}-copy"),
                                    ModelRole::Reference,
                                ));
                            }
                            let (split, models) = cut(ctx, &models, impostor, size);
                            let ev = ctx.run(&split, &models)?;
                            out.push(outcome(
                                &ev,
                                suite_name,
                                seed,
                                kind.label(),
                                Some(&bd_name),
                                Some(trigger),
                                Some(strength),
                                size,
                                refs,
                                match &kind {
                                    AttackKind::OneToOne { impostor } => Some(impostor.as_str()),
                                    AttackKind::AllToOne => None,
                                },
                            ));
                        }
                    }
                    // A clean candidate next to the backdoored model and a
                    // duplicate of the candidate: the reference must be named.
                    {
                        let models = vec![
                            renamed(&bases[o].embeddings, &other_name, ModelRole::Candidate),
                            renamed(&cand, &bd_name, ModelRole::Reference),
                            renamed(
                                &bases[o].embeddings,
                                &format!("{other_name}-copy"),
                                ModelRole::Reference,
                            ),
                        ];
                        let ev = ctx.run(ctx.split, &models)?;
                        out.push(outcome(
                            &ev,
                            suite_name,
                            seed,
                            &format!("clean-next-to-{}", kind.label()),
                            Some(&bd_name),
                            Some(trigger),
                            Some(strength),
                            None,
                            2,
                            None,
                        ));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// The audit with the impostor's held-out faces cut to `size`.
fn cut(
    ctx: &Ctx<'_>,
    models: &[ModelEmbeddings],
    impostor: &str,
    size: Option<usize>,
) -> (Split, Vec<ModelEmbeddings>) {
    let Some(size) = size else {
        return (ctx.split.clone(), models.to_vec());
    };
    let mine: Vec<usize> = ctx
        .split
        .heldout
        .iter()
        .copied()
        .filter(|&i| ctx.faces[i].identity.as_deref() == Some(impostor))
        .collect();
    let drop: Vec<usize> = mine.iter().skip(size).copied().collect();
    subset(ctx.split, models, &|i| !drop.contains(&i))
}
