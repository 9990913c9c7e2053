//! Bare inference time of a pair bundle's two models on one aligned face,
//! next to the guard's whole decision (both models at once, translation,
//! score) — the baseline for the HTTP load benchmark (scripts/bench-guard.sh).
//!
//!     cargo bench -p zooaudit-guard --bench inference -- BUNDLE FACE.png [RUNS]
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::Instant;

use zooaudit_guard::bundle::PairBundle;
use zooaudit_guard::pair::{Pair, Role, Schedule};

fn median_ms(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2] * 1e3, v[(v.len() * 99) / 100] * 1e3)
}

/// Median and p99 of `runs` calls after 20 warm-up calls.
fn time(runs: usize, f: &dyn Fn()) -> (f64, f64) {
    for _ in 0..20 {
        f();
    }
    median_ms(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 2 {
        eprintln!(
            "usage: cargo bench -p zooaudit-guard --bench inference -- BUNDLE FACE.png [RUNS]"
        );
        return;
    }
    let bundle_path = PathBuf::from(&args[0]);
    let face = std::fs::read(&args[1]).unwrap();
    let runs: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(300);
    let set = zooaudit_host::PluginSet::discover(&zooaudit_host::SearchPath::standard(&[]));
    let bundle = PairBundle::read(&bundle_path).unwrap();
    let mut pair = Pair::open(
        bundle,
        &bundle_path,
        &set,
        &zooaudit_registry::FetchOptions::from_env(),
    )
    .unwrap();
    let img = pair.decode(&face, "face").unwrap();
    let names = [PathBuf::from("face")];
    let one = std::slice::from_ref(&img);
    let sha = ["face".to_string()];
    let probe = time(runs, &|| {
        pair.probe().embed_rgb(one, &names).unwrap();
    });
    let reference = time(runs, &|| {
        pair.reference().embed_rgb(one, &names).unwrap();
    });
    let mut rows = vec![
        (format!("probe {} alone", pair.bundle.probe.name), probe),
        (
            format!("reference {} alone", pair.bundle.reference.name),
            reference,
        ),
    ];
    for schedule in [Schedule::Concurrent, Schedule::Sequential] {
        pair.schedule = schedule;
        let t = time(runs, &|| {
            pair.decide(one, &sha, 0.5).unwrap();
        });
        rows.push((format!("guard decision, {schedule}"), t));
    }
    let tuning = pair.tune(&set).unwrap();
    let tuned = time(runs, &|| {
        pair.decide(one, &sha, 0.5).unwrap();
    });
    if let Some(Role::Reference) = match tuning.schedule {
        Schedule::Background(r) => Some(r),
        _ => None,
    } {
        let t = time(runs, &|| {
            pair.reference().embed_rgb(one, &names).unwrap();
        });
        rows.push((
            format!("reference {} alone, one thread", pair.bundle.reference.name),
            t,
        ));
    }
    rows.push((
        format!("**guard decision as tuned** ({})", tuning.schedule),
        tuned,
    ));
    rows.push((
        "decode the PNG body".to_string(),
        time(runs, &|| {
            pair.decode(&face, "face").unwrap();
        }),
    ));
    println!(
        "| step ({runs} runs, one 112×112 face; this machine: {} cores) | median ms | p99 ms |",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
    );
    println!("|---|---|---|");
    for (name, (m, p)) in rows {
        println!("| {name} | {m:.2} | {p:.2} |");
    }
}
