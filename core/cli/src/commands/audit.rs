//! `zooaudit audit AUDIT --out DIR`: the audit pipeline
//! ([`zooaudit_audit::run_keeping_exports`]), the report and its human
//! renderings, optional signed attestations and an optional pair bundle made
//! from the audit's own fit.

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::progress::Reporter;
use super::{cache, plugins};

#[derive(clap::Args, Debug)]
pub struct AuditArgs {
    /// The audit file (TOML).
    #[arg(value_name = "AUDIT")]
    audit: PathBuf,
    /// Output directory.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Do not read or write the embedding cache.
    #[arg(long)]
    no_cache: bool,
    /// Embedding cache directory (default: $ZOOAUDIT_CACHE, $XDG_CACHE_HOME/zooaudit, ~/.cache/zooaudit).
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Images per adapter call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Sign the audit: write <out>/attestation.dsse.json with this private key.
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// With --sign-key, also write <out>/test-result.dsse.json (in-toto test-result v0.1).
    #[arg(long, requires = "sign_key")]
    test_result: bool,
    /// Countersign each candidate with no backdoor indicated: an OpenSSF
    /// model-signing bundle over its file, <out>/<candidate>.model.sig,
    /// with this P-256/P-384 key (`keygen --p256`).
    #[arg(long, value_name = "PEM")]
    sign_model: Option<PathBuf>,
    /// A zoo file (overrides the audit file's `zoo`).
    #[arg(long, value_name = "ZOO")]
    zoo: Option<PathBuf>,
    /// The candidate, by model name in the zoo; references are chosen
    /// from the zoo by independence unless named with --reference.
    #[arg(long, value_name = "NAME")]
    candidate: Option<String>,
    /// A reference by model name in the zoo (repeatable); used even when
    /// it is not independent of the candidate (the report says so).
    #[arg(long = "reference", value_name = "NAME", requires = "candidate")]
    references: Vec<String>,
    /// Accept remote models without a sha256 pin; the report records it
    /// (also: ZOOAUDIT_ALLOW_UNPINNED=1).
    #[arg(long)]
    allow_unpinned: bool,
    /// Also write a pair bundle for `zooaudit guard` (first candidate as
    /// probe → first reference): the audit's own translator and thresholds.
    #[arg(long, value_name = "FILE")]
    export_pair: Option<PathBuf>,
    /// Print nothing but warnings and errors (the exit code carries the verdict).
    #[arg(long)]
    quiet: bool,
    /// Print a machine-readable summary on stdout (JSON: verdicts, the
    /// written files, what the cache saved) instead of the tables.
    #[arg(long)]
    json: bool,
}

impl AuditArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        // Read the key first: a bad key fails before an hour of audit.
        let key = self
            .sign_key
            .as_deref()
            .map(zooaudit_attest::SecretKey::read)
            .transpose()?;
        let model_key = self
            .sign_model
            .as_deref()
            .map(zooaudit_modelsign::PrivateKey::read)
            .transpose()?;
        let refs = (!self.references.is_empty()).then_some(self.references.as_slice());
        let spec = zooaudit_audit::AuditSpec::load_with(
            &self.audit,
            self.zoo.clone(),
            self.candidate.as_deref(),
            refs,
        )?;
        for (path, why) in &spec.selection {
            eprintln!("reference {}: {why}", path.display());
        }
        let mut fetch = zooaudit_registry::FetchOptions::from_env();
        fetch.allow_unpinned |= self.allow_unpinned;
        let mut opts = zooaudit_audit::RunOptions {
            cache: cache(self.no_cache, self.cache_dir.clone()),
            batch: self.batch as usize,
            fetch,
        };
        let set = plugins(dirs);
        let mut shown = Reporter::new(self.quiet);
        opts.fetch.progress = !shown.quiet();
        let (report, exports) =
            zooaudit_audit::run_keeping_exports(&spec, &set, &opts, &mut |p| shown.event(p))?;
        let out = &self.out;
        report.write(out)?;
        zooaudit_render::write_human(&report, out)?;
        let mut signed = Vec::new();
        if let Some(key) = &key {
            for p in zooaudit_render::write_attestations(&report, out, key, self.test_result)? {
                if !shown.quiet() {
                    eprintln!("signed: {} (keyid {})", p.display(), key.public().keyid());
                }
                signed.push(p);
            }
        }
        if let Some(key) = &model_key {
            for p in super::modelsign::countersign(&report, out, key)? {
                if !shown.quiet() {
                    eprintln!(
                        "countersigned: {} (model-signing, key sha256 {})",
                        p.display(),
                        key.public().pem_sha256()
                    );
                }
                signed.push(p);
            }
        }
        for w in report.grouped_warnings() {
            eprintln!("warning: {w}");
        }
        if self.json {
            println!("{}", json_summary(&report, out, &signed, &shown)?);
        } else if !self.quiet {
            print!("{}", zooaudit_render::console::audit_text(&report));
        }
        if !shown.quiet() {
            eprintln!("{}", shown.cache_line(report.cache.dir.as_deref()));
            eprintln!(
                "wrote {} and {}",
                out.join("report.json").display(),
                out.join("scores.csv").display()
            );
        }
        if let Some(file) = &self.export_pair {
            let bundle = zooaudit_guard::fit::bundle_from_audit(
                &spec,
                &report,
                &exports,
                zooaudit_guard::bundle::Serve::Reference,
            )?;
            bundle.write(file)?;
            if !self.quiet && !self.json {
                print_bundle(&bundle, file);
            }
        }
        Ok(report.overall().exit_code())
    }
}

/// `audit --json`: the verdicts in the report's own words, the files
/// written (absolute paths), and what the cache saved.
fn json_summary(
    report: &zooaudit_audit::AuditReport,
    out: &Path,
    signed: &[PathBuf],
    shown: &Reporter,
) -> Result<String> {
    let abs = |p: PathBuf| std::path::absolute(&p).unwrap_or(p).display().to_string();
    let (hits, misses, seconds) = shown.cache_use();
    let value = serde_json::json!({
        "verdict": report.overall().as_str(),
        "exit_code": report.overall().exit_code(),
        "verdicts": report.verdicts.iter().map(|v| serde_json::json!({
            "candidate": v.candidate,
            "verdict": v.verdict.as_str(),
            "alarms": v.alarms,
            "attributed": v.attributed,
            "reasons": v.reasons,
        })).collect::<Vec<_>>(),
        "report": abs(out.join("report.json")),
        "scores": abs(out.join("scores.csv")),
        "summary": abs(out.join("summary.md")),
        "html": abs(out.join("report.html")),
        "attestations": signed.iter().cloned().map(abs).collect::<Vec<_>>(),
        "warnings": report.grouped_warnings(),
        "cache": {
            "dir": report.cache.dir,
            "hits": hits,
            "misses": misses,
            "embedding_seconds": seconds,
        },
    });
    Ok(serde_json::to_string_pretty(&value)?)
}

/// One operating point of a bundle; `was` follows the threshold.
pub fn operating_point_line(o: &zooaudit_guard::bundle::OperatingPoint, was: &str) -> String {
    format!(
        "  target FNMR {}: threshold {:.4}{was}, held-out FNMR {:.3} [{:.3}, {:.3}] ({} faces)",
        o.target_fnmr,
        o.threshold,
        o.heldout_fnmr,
        o.heldout_ci95[0],
        o.heldout_ci95[1],
        o.heldout_samples
    )
}

/// The bundle's pair, fidelity and operating points, one line each.
pub fn print_bundle(b: &zooaudit_guard::bundle::PairBundle, out: &Path) {
    println!(
        "pair bundle {}: {} → {} (detector {}), held-out mean cosine {:.3}, top-1 {:.3} ({} faces)",
        out.display(),
        b.probe.name,
        b.reference.name,
        b.detector.plugin,
        b.fidelity.mean_cosine,
        b.fidelity.top1,
        b.fidelity.samples
    );
    for o in &b.thresholds {
        println!("{}", operating_point_line(o, ""));
    }
    if !b.sources.is_empty() {
        println!(
            "  per source, held-out clean FNMR ({} thresholds):",
            b.calibration.as_str()
        );
        for src in &b.sources {
            let cells: Vec<String> = src
                .fnmr
                .iter()
                .map(|r| {
                    format!(
                        "{}: {:.3} [{:.3}, {:.3}]",
                        r.target_fnmr, r.rate, r.ci95[0], r.ci95[1]
                    )
                })
                .collect();
            println!(
                "    {} ({} calibration, {} held-out): {}",
                src.name,
                src.calibration_samples,
                src.heldout_samples,
                cells.join(", ")
            );
        }
    }
    for w in zooaudit_guard::calibrate::source_warnings(b) {
        eprintln!("warning: {w}");
    }
}
