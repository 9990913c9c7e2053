//! The bench's report: Markdown tables of the outcomes, and the audits a
//! larger audit overturned.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use zooaudit_audit::VerdictKind;

use super::{Outcome, VerdictBench};

/// Audits whose verdict a larger audit overturned: the same backdoor,
/// seed and impostor size indicated with fewer references or a suite
/// that is a prefix of another's triggers, but not with more.
pub fn monotonicity_violations(b: &VerdictBench, suite_order: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let indicated = |o: &Outcome| o.verdict == VerdictKind::BackdoorIndicated;
    let key = |o: &Outcome| {
        (
            o.seed,
            o.case.clone(),
            o.backdoored.clone(),
            o.trigger.clone(),
            o.strength.map(f32::to_bits),
            o.impostor_faces,
        )
    };
    let rank = |o: &Outcome| suite_order.iter().position(|s| *s == o.suite).unwrap_or(0);
    let backdoored: Vec<&Outcome> = b
        .outcomes
        .iter()
        .filter(|o| o.case == "one-to-one" || o.case == "all-to-one")
        .collect();
    for small in backdoored.iter().filter(|o| indicated(o)) {
        for large in backdoored.iter().filter(|o| key(o) == key(small)) {
            if rank(large) >= rank(small)
                && large.references >= small.references
                && !indicated(large)
            {
                out.push(format!(
                    "seed {} {} {:?} {:?} strength {:?} faces {:?}: indicated with {} ({} reference(s)) but not with {} ({} reference(s))",
                    small.seed,
                    small.case,
                    small.backdoored,
                    small.trigger,
                    small.strength,
                    small.impostor_faces,
                    small.suite,
                    small.references,
                    large.suite,
                    large.references
                ));
            }
        }
    }
    out
}

/// Markdown tables of the outcomes.
pub fn tables(b: &VerdictBench) -> String {
    let mut s = String::new();
    let share = |o: &[&Outcome]| {
        let k = o
            .iter()
            .filter(|x| x.verdict == VerdictKind::BackdoorIndicated)
            .count();
        format!("{k}/{}", o.len())
    };
    let _ = writeln!(
        s,
        "### Clean pairs: audits falsely flagged (family-wise α = {})\n",
        b.alpha
    );
    let _ = writeln!(s, "| suite | audits | backdoor indicated | inconclusive |");
    let _ = writeln!(s, "|---|---|---|---|");
    let mut by_suite: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
    for o in b.outcomes.iter().filter(|o| o.case == "clean") {
        by_suite.entry(&o.suite).or_default().push(o);
    }
    for (suite, o) in &by_suite {
        let inc = o
            .iter()
            .filter(|x| x.verdict == VerdictKind::Inconclusive)
            .count();
        let _ = writeln!(s, "| {suite} | {} | {} | {inc} |", o.len(), share(o));
    }
    let _ = writeln!(
        s,
        "\n### One-to-one backdoors: audits flagged (culprit named right)\n"
    );
    let _ = writeln!(
        s,
        "| suite | references | impostor faces | {} |",
        fmt_strengths(b)
    );
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(strengths(b).len()));
    let mut groups: BTreeMap<(String, usize, usize), Vec<&Outcome>> = BTreeMap::new();
    for o in b.outcomes.iter().filter(|o| o.case == "one-to-one") {
        groups
            .entry((o.suite.clone(), o.references, o.impostor_faces.unwrap_or(0)))
            .or_default()
            .push(o);
    }
    for ((suite, refs, size), o) in &groups {
        let _ = writeln!(s, "| {suite} | {refs} | {size} | {} |", by_strength(b, o));
    }
    let _ = writeln!(
        s,
        "\n### All-to-one backdoors, and clean candidates next to a backdoored reference\n"
    );
    let _ = writeln!(s, "| case | suite | references | {} |", fmt_strengths(b));
    let _ = writeln!(s, "|---|---|---|{}", "---|".repeat(strengths(b).len()));
    let mut groups: BTreeMap<(String, String, usize), Vec<&Outcome>> = BTreeMap::new();
    for o in b
        .outcomes
        .iter()
        .filter(|o| o.case != "one-to-one" && o.case != "clean")
    {
        groups
            .entry((o.case.clone(), o.suite.clone(), o.references))
            .or_default()
            .push(o);
    }
    for ((case, suite, refs), o) in &groups {
        let _ = writeln!(s, "| {case} | {suite} | {refs} | {} |", by_strength(b, o));
    }
    let suites: Vec<String> = {
        let mut v: Vec<String> = Vec::new();
        for o in &b.outcomes {
            if !v.contains(&o.suite) {
                v.push(o.suite.clone());
            }
        }
        v
    };
    let bad = monotonicity_violations(b, &suites);
    let _ = writeln!(
        s,
        "\nMonotonicity (more references, or a later suite in the order given): {} violations",
        bad.len()
    );
    for v in bad {
        let _ = writeln!(s, "- {v}");
    }
    s
}

fn strengths(b: &VerdictBench) -> Vec<f32> {
    let mut v: Vec<f32> = b.outcomes.iter().filter_map(|o| o.strength).collect();
    v.sort_by(f32::total_cmp);
    v.dedup();
    v
}

fn fmt_strengths(b: &VerdictBench) -> String {
    strengths(b)
        .iter()
        .map(|s| format!("strength {s}"))
        .collect::<Vec<_>>()
        .join(" | ")
}

fn by_strength(b: &VerdictBench, o: &[&Outcome]) -> String {
    strengths(b)
        .iter()
        .map(|st| {
            let here: Vec<&&Outcome> = o.iter().filter(|x| x.strength == Some(*st)).collect();
            let flagged = here
                .iter()
                .filter(|x| x.verdict == VerdictKind::BackdoorIndicated)
                .count();
            let right = here.iter().filter(|x| x.named_right).count();
            if here.is_empty() {
                "–".to_string()
            } else {
                format!("{flagged}/{} ({right})", here.len())
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
