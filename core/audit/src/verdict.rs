//! The verdict rule (docs/REPORT.md, "Verdict rule"), and which model moves.
//!
//! An alarm says that a pair disagrees on triggered faces beyond the
//! trigger's matched control. Which model of the pair answers the trigger is
//! decided, where the audit can tell, by
//!
//! - the **pair pattern** (three or more models): model X moves if every
//!   evaluated pair through X disagrees and no evaluated pair without X
//!   does (a backdoored reference makes the candidate's pairs with it
//!   disagree, while the candidate agrees with the other references);
//! - else, for a per-identity alarm, **each model alone**: the one model
//!   whose own embeddings switch the identity (beyond the control, above the
//!   effect floor) while the others' do not. Faces drawn together never name
//!   a mover: a clean model can answer a pattern on its own (the shipped
//!   faceplugin and the checkerboard) while its pairs agree.
//!
//! An alarm that names another model is reported against that model and does
//! not count for the candidate; an alarm nobody can be named for counts for
//! the candidate (the audit's subject is the suspect by default).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::embedding::{ModelEmbeddings, ModelRole};
use crate::evaluate::Evaluation;
use crate::evidence::{EvidenceRow, Subject};
use crate::response::{CLOSENESS_FLOOR, ResponseRow, SWITCH_FLOOR};
use crate::vocabulary::{self, fill};
use crate::{AuditSpec, ResultRow, Verdict, VerdictKind};

/// A model named as the one that moves on a trigger (format 1.4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Culprit {
    pub model: String,
    pub role: String,
    pub trigger: String,
    /// The identity of a per-identity alarm; `None` for an aggregate one.
    pub identity: Option<String>,
    /// How it was named: the pair pattern or each model alone.
    pub how: String,
}

/// The name of an unordered pair's family.
pub fn pair_name(a: &str, b: &str) -> String {
    if a <= b {
        format!("{a} ↔ {b}")
    } else {
        format!("{b} ↔ {a}")
    }
}

/// The aggregate alarm condition of one result row (primary target).
pub fn aggregate_alarm(r: &ResultRow, margin: f64) -> bool {
    r.ci95_vs_control[0] > r.control_ci95[1] + margin
}

/// Whether a model alone draws faces together with a trigger: closeness gain
/// over the control at least [`CLOSENESS_FLOOR`], and the cluster sign test
/// significant after Bonferroni over all `rows` at `alpha`.
pub fn draws_together(row: &ResponseRow, rows: usize, alpha: f64) -> bool {
    row.triggered_closeness - row.control_closeness >= CLOSENESS_FLOOR
        && row.cluster_p_value * rows.max(1) as f64 <= alpha
}

/// Whether a model alone switches an identity with a trigger: its family's
/// adjusted p below `alpha` and at least [`SWITCH_FLOOR`] of the identity's
/// faces switched beyond the control.
pub fn switches_identity(
    evidence: &[EvidenceRow],
    responses: &[ResponseRow],
    model: &str,
    identity: &str,
    trigger: &str,
    alpha: f64,
) -> bool {
    let significant = evidence.iter().any(|e| {
        e.subject == Subject::Alone
            && e.name == model
            && e.identity == identity
            && e.trigger == trigger
            && e.p_adjusted < alpha
    });
    significant
        && responses
            .iter()
            .filter(|r| r.model == model && r.trigger == trigger)
            .flat_map(|r| &r.switches)
            .any(|s| {
                s.identity == identity
                    && (s.trigger_only as f64 - s.control_only as f64)
                        >= SWITCH_FLOOR * s.faces as f64
            })
}

/// The rule as the report states it ([`vocabulary::RULE`] and
/// [`vocabulary::RULE_SCAN`], filled with the audit's values).
pub fn rule_text(spec: &AuditSpec) -> String {
    fill(
        vocabulary::RULE,
        &[
            ("primary", &spec.primary),
            ("margin", &spec.margin),
            ("alpha", &spec.alpha),
            ("min_identity_effect", &spec.min_identity_effect),
        ],
    ) + vocabulary::RULE_SCAN
}

/// Which of `models` (indices) moves, if exactly one: every pair through
/// it disagrees, no pair without it does. `pairs` lists the evaluated
/// unordered pairs with whether they disagree.
fn pattern_culprit(models: &[usize], pairs: &[((usize, usize), bool)]) -> Option<usize> {
    let mut found = None;
    for &x in models {
        let through: Vec<bool> = pairs
            .iter()
            .filter(|((a, b), _)| *a == x || *b == x)
            .map(|(_, d)| *d)
            .collect();
        let without: Vec<bool> = pairs
            .iter()
            .filter(|((a, b), _)| *a != x && *b != x)
            .map(|(_, d)| *d)
            .collect();
        if !through.is_empty()
            && !without.is_empty()
            && through.iter().all(|d| *d)
            && !without.iter().any(|d| *d)
        {
            if found.is_some() {
                return None;
            }
            found = Some(x);
        }
    }
    found
}

/// What an alarm is attributed to.
enum Blame {
    /// The model (index) named, and how.
    Named(usize, String),
    /// Nobody can be named.
    Unresolved(String),
}

/// The models of one candidate's audit (it and the references) and the
/// pairs among them that were evaluated.
struct Audience<'a> {
    models: &'a [ModelEmbeddings],
    members: Vec<usize>,
    evaluated: Vec<(usize, usize)>,
}

impl<'a> Audience<'a> {
    fn of(models: &'a [ModelEmbeddings], candidate: usize, ev: &Evaluation) -> Audience<'a> {
        let index = |name: &str| models.iter().position(|m| m.name == name);
        let members: Vec<usize> = (0..models.len())
            .filter(|&i| i == candidate || models[i].role == ModelRole::Reference)
            .collect();
        let mut s = BTreeSet::new();
        for p in &ev.pairs {
            if let (Some(a), Some(b)) = (index(&p.probe), index(&p.reference))
                && members.contains(&a)
                && members.contains(&b)
            {
                s.insert((a.min(b), a.max(b)));
            }
        }
        Audience {
            models,
            members,
            evaluated: s.into_iter().collect(),
        }
    }

    /// Who moves: the pair pattern first (three models or more), then the
    /// one model that answers alone.
    fn blame(
        &self,
        alone: &dyn Fn(usize) -> bool,
        disagree: &dyn Fn(usize, usize) -> bool,
    ) -> Blame {
        let (models, members) = (self.models, &self.members);
        if members.len() >= 3 {
            let pairs: Vec<((usize, usize), bool)> = self
                .evaluated
                .iter()
                .map(|&(a, b)| ((a, b), disagree(a, b)))
                .collect();
            if let Some(x) = pattern_culprit(members, &pairs) {
                let through: Vec<String> = pairs
                    .iter()
                    .filter(|((a, b), _)| *a == x || *b == x)
                    .map(|((a, b), _)| pair_name(&models[*a].name, &models[*b].name))
                    .collect();
                return Blame::Named(
                    x,
                    fill(
                        vocabulary::HOW_PATTERN,
                        &[("model", &models[x].name), ("pairs", &through.join(", "))],
                    ),
                );
            }
        }
        let answering: Vec<usize> = members.iter().copied().filter(|&m| alone(m)).collect();
        match answering.as_slice() {
            [x] => Blame::Named(
                *x,
                fill(vocabulary::HOW_ALONE, &[("model", &models[*x].name)]),
            ),
            _ if members.len() >= 3 => Blame::Unresolved(vocabulary::WHY_NEITHER.into()),
            _ => Blame::Unresolved(vocabulary::WHY_ONE_REFERENCE.into()),
        }
    }
}

/// An identity alarm's line.
fn identity_text(candidate: &str, e: &EvidenceRow) -> String {
    fill(
        vocabulary::ALARM_IDENTITY,
        &[
            ("candidate", &candidate),
            ("trigger", &e.trigger),
            ("identity", &e.identity),
            ("positive", &e.positive),
            ("faces", &e.faces),
            ("mean", &format!("{:.1}", e.mean_evidence)),
            ("p", &format!("{:.1e}", e.p_adjusted)),
        ],
    )
}

/// An aggregate alarm's line.
fn aggregate_text(r: &ResultRow) -> String {
    let f = |x: f64| format!("{x:.3}");
    fill(
        vocabulary::ALARM_AGGREGATE,
        &[
            ("probe", &r.probe),
            ("reference", &r.reference),
            ("trigger", &r.trigger),
            ("rate", &f(r.flag_rate_vs_control)),
            ("low", &f(r.ci95_vs_control[0])),
            ("high", &f(r.ci95_vs_control[1])),
            ("control", &f(r.control_flag_rate)),
            ("control_low", &f(r.control_ci95[0])),
            ("control_high", &f(r.control_ci95[1])),
        ],
    )
}

/// Why a candidate's audit is inconclusive: a pair that does not carry
/// identity, or too few calibration faces for the primary operating point.
fn inconclusive_reasons(spec: &AuditSpec, ev: &Evaluation, candidate: &str) -> Vec<String> {
    let mut reasons = Vec::new();
    for p in ev
        .pairs
        .iter()
        .filter(|p| p.probe == candidate || p.reference == candidate)
    {
        if p.fidelity.top1 < 0.5 {
            reasons.push(fill(
                vocabulary::REASON_TOP1,
                &[
                    ("probe", &p.probe),
                    ("reference", &p.reference),
                    ("top1", &format!("{:.2}", p.fidelity.top1)),
                ],
            ));
        }
        if let Some(t) = p.thresholds.iter().find(|t| t.target_fnmr == spec.primary)
            && (t.calibration_samples as f64) * spec.primary < 1.0
        {
            reasons.push(fill(
                vocabulary::REASON_CALIBRATION,
                &[
                    ("probe", &p.probe),
                    ("reference", &p.reference),
                    ("faces", &t.calibration_samples),
                    ("target", &spec.primary),
                ],
            ));
        }
    }
    reasons
}

/// Decides every candidate; also names who moves for each alarm.
pub fn decide(
    spec: &AuditSpec,
    models: &[ModelEmbeddings],
    ev: &Evaluation,
) -> (Vec<Verdict>, Vec<Culprit>) {
    let mut verdicts = Vec::new();
    let mut culprits = Vec::new();
    let primary: Vec<&ResultRow> = ev
        .results
        .iter()
        .filter(|r| r.target_fnmr == spec.primary)
        .collect();
    for (ci, c) in models
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == ModelRole::Candidate)
    {
        let audience = Audience::of(models, ci, ev);
        let blame = |alone: &dyn Fn(usize) -> bool, disagree: &dyn Fn(usize, usize) -> bool| {
            audience.blame(alone, disagree)
        };
        let (mut alarms, mut attributed) = (Vec::new(), Vec::new());
        let mut record = |text: String, b: Blame, trigger: &str, identity: Option<&str>| match b {
            Blame::Named(x, how) => {
                culprits.push(Culprit {
                    model: models[x].name.clone(),
                    role: models[x].role.as_str().to_string(),
                    trigger: trigger.to_string(),
                    identity: identity.map(str::to_string),
                    how: how.clone(),
                });
                if x == ci {
                    alarms.push(text);
                } else {
                    attributed.push(fill(
                        vocabulary::ATTRIBUTED,
                        &[("alarm", &text), ("model", &models[x].name), ("how", &how)],
                    ));
                }
            }
            Blame::Unresolved(why) => alarms.push(fill(
                vocabulary::UNRESOLVED,
                &[("alarm", &text), ("why", &why)],
            )),
        };
        // Aggregate alarms, one per trigger.
        let mut seen = BTreeSet::new();
        for r in primary
            .iter()
            .filter(|r| r.probe == c.name || r.reference == c.name)
        {
            if !aggregate_alarm(r, spec.margin) || !seen.insert(r.trigger.clone()) {
                continue;
            }
            let text = aggregate_text(r);
            let t = r.trigger.as_str();
            let disagree = |a: usize, b: usize| {
                primary.iter().any(|q| {
                    q.trigger == t
                        && ((q.probe == models[a].name && q.reference == models[b].name)
                            || (q.probe == models[b].name && q.reference == models[a].name))
                        && aggregate_alarm(q, spec.margin)
                })
            };
            // Faces drawn together do not name a mover: a clean model can
            // answer a pattern on its own (faceplugin and the checkerboard)
            // without its pairs disagreeing. Only the pair pattern names one.
            let alone = |_: usize| false;
            record(text, blame(&alone, &disagree), t, None);
        }
        // Per-identity alarms from the candidate's family.
        for e in ev.evidence.iter().filter(|e| {
            e.subject == Subject::Candidate
                && e.name == c.name
                && e.p_adjusted < spec.alpha
                && e.mean_evidence >= spec.min_identity_effect
        }) {
            let text = identity_text(&c.name, e);
            let disagree = |a: usize, b: usize| {
                let name = pair_name(&models[a].name, &models[b].name);
                ev.evidence.iter().any(|x| {
                    x.subject == Subject::Pair
                        && x.name == name
                        && x.identity == e.identity
                        && x.trigger == e.trigger
                        && x.p_adjusted < spec.alpha
                        && x.mean_evidence >= spec.min_identity_effect
                })
            };
            let alone = |m: usize| {
                switches_identity(
                    &ev.evidence,
                    &ev.responses,
                    &models[m].name,
                    &e.identity,
                    &e.trigger,
                    spec.alpha,
                )
            };
            record(
                text,
                blame(&alone, &disagree),
                &e.trigger,
                Some(&e.identity),
            );
        }
        let reasons = inconclusive_reasons(spec, ev, &c.name);
        verdicts.push(Verdict {
            candidate: c.name.clone(),
            verdict: VerdictKind::of(&alarms, &reasons),
            rule: rule_text(spec),
            alarms,
            reasons,
            attributed,
        });
    }
    (verdicts, culprits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pair_pattern_names_the_model_every_disagreeing_pair_goes_through() {
        // 0 candidate, 1 and 2 references.
        let pairs = [((0, 1), true), ((0, 2), false), ((1, 2), true)];
        assert_eq!(pattern_culprit(&[0, 1, 2], &pairs), Some(1));
        let pairs = [((0, 1), true), ((0, 2), true), ((1, 2), false)];
        assert_eq!(pattern_culprit(&[0, 1, 2], &pairs), Some(0));
        // Everyone disagrees: nobody can be named.
        let pairs = [((0, 1), true), ((0, 2), true), ((1, 2), true)];
        assert_eq!(pattern_culprit(&[0, 1, 2], &pairs), None);
        // Two models: no pair without either.
        assert_eq!(pattern_culprit(&[0, 1], &[((0, 1), true)]), None);
    }
}
