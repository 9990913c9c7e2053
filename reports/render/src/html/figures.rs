//! The report's plots: per pair direction a DET curve against every trigger
//! and a score histogram per trigger, as inline SVG.

use std::fmt::Write;

use zooaudit_audit::report::{AuditReport, ScoreRow};

use super::esc;
use crate::direction;
use crate::plots::{self, CONTROL, GENUINE, PALETTE, POISONED, Series, ZEI};

/// The scores of one kind (and trigger) for one pair direction.
fn scores(
    rows: &[ScoreRow],
    probe: &str,
    reference: &str,
    kind: &str,
    trigger: Option<&str>,
) -> Vec<f32> {
    rows.iter()
        .filter(|r| {
            r.probe == probe
                && r.reference == reference
                && r.kind == kind
                && trigger.is_none_or(|t| r.trigger == t)
        })
        .map(|r| r.score)
        .collect()
}

fn figure(out: &mut String, svg: Result<String, plots::PlotError>, caption: &str) {
    match svg {
        Ok(svg) => {
            let _ = write!(
                out,
                "<figure class=\"plot\">{svg}<figcaption>{}</figcaption></figure>",
                esc(caption)
            );
        }
        Err(e) => {
            let _ = write!(out, "<p class=\"plot-error\">{}</p>", esc(&e.to_string()));
        }
    }
}

/// Score distributions and DET curves of every pair direction.
pub(super) fn plots_section(h: &mut String, report: &AuditReport, op: f64) {
    // Plots.
    let _ = write!(h, "<h2>Score distributions and DET curves</h2>");
    for p in &report.pairs {
        let dir = direction(&p.probe, &p.reference);
        let genuine = scores(&report.scores, &p.probe, &p.reference, "genuine", None);
        let zei = scores(&report.scores, &p.probe, &p.reference, "zei", None);
        let threshold = p
            .thresholds
            .iter()
            .find(|t| (t.target_fnmr - op).abs() < 1e-12)
            .map(|t| {
                (
                    t.threshold,
                    format!("threshold at clean FNMR {:.1} %", 100.0 * op),
                )
            });
        let _ = write!(h, "<h3>{}</h3>", esc(&dir));
        let poisoned: Vec<(String, Vec<f32>)> = report
            .triggers
            .triggers
            .iter()
            .map(|t| {
                let s = scores(
                    &report.scores,
                    &p.probe,
                    &p.reference,
                    "poisoned",
                    Some(&t.name),
                );
                (t.name.clone(), s)
            })
            .collect();
        let mut det_series = vec![Series {
            label: "zero-effort impostors".into(),
            scores: &zei,
            color: ZEI,
        }];
        for (i, (name, s)) in poisoned.iter().enumerate() {
            det_series.push(Series {
                label: format!("poisoned: {name}"),
                scores: s,
                color: PALETTE[i % PALETTE.len()],
            });
        }
        figure(
            h,
            plots::det(&format!("DET: {dir}"), &genuine, &det_series),
            &format!(
                "DET curves of {dir}: clean held-out faces against zero-effort impostors and against each trigger's poisoned faces, normal-deviate axes."
            ),
        );
        for (name, s) in &poisoned {
            let control = scores(
                &report.scores,
                &p.probe,
                &p.reference,
                "control",
                Some(name),
            );
            let series = [
                Series {
                    label: "genuine (clean)".into(),
                    scores: &genuine,
                    color: GENUINE,
                },
                Series {
                    label: "zero-effort impostor".into(),
                    scores: &zei,
                    color: ZEI,
                },
                Series {
                    label: format!("poisoned: {name}"),
                    scores: s,
                    color: POISONED,
                },
                Series {
                    label: "matched control".into(),
                    scores: &control,
                    color: CONTROL,
                },
            ];
            figure(
                h,
                plots::histogram(&format!("{dir} · {name}"), &series, threshold.clone()),
                &format!("Pair scores of {dir} with trigger {name}."),
            );
        }
    }
}
