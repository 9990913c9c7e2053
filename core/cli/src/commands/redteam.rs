//! `redteam inject`: a real backdoor spliced into an ONNX model's graph
//! ([`zooaudit_redteam::inject`]), optionally measured.

use std::path::PathBuf;

use anyhow::Result;

use super::plugins;

#[derive(clap::Subcommand, Debug)]
pub enum RedteamCommand {
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
        /// How the subgraph hides from the static scan: none,
        /// arithmetic-gate (no gate operator), dense-detector (the detector
        /// reads the whole input through a heavy dense matrix).
        #[arg(long, default_value = "none", value_name = "HOW")]
        hide: zooaudit_redteam::Hiding,
        /// More clean faces to calibrate the trigger detector on.
        #[arg(long = "calibration", value_name = "DIR")]
        calibration: Vec<PathBuf>,
        /// Output model file (.onnx).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Also measure the attack (Table 2 metrics) and print them.
        #[arg(long)]
        measure: bool,
        /// Do not read or write the embedding cache (the labelled faces'
        /// clean embeddings, under the audit's keys).
        #[arg(long)]
        no_cache: bool,
        /// Embedding cache directory (default: the audit's).
        #[arg(long, value_name = "DIR")]
        cache_dir: Option<PathBuf>,
    },
}

impl RedteamCommand {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let RedteamCommand::Inject {
            model,
            triggers,
            trigger,
            labeled,
            victim,
            impostor,
            strength,
            hide,
            calibration,
            out,
            measure,
            no_cache,
            cache_dir,
        } = self;
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
            hiding: hide,
            calibration,
            cache: super::cache(no_cache, cache_dir),
            out,
        };
        let done = zooaudit_redteam::inject(&opts, &set)?;
        let r = &done.record;
        println!("wrote {} (sha256 {})", done.model.display(), r.model_sha256);
        println!("wrote {}", done.manifest.display());
        println!("wrote {}", done.record_path.display());
        let d = &r.detector;
        println!(
            "detector: {} inputs, ncc threshold {:.4} (clean ≤ {:.4}, triggered ≥ {:.4}), steepness {:.1}; 1%-FMR threshold {:.4}",
            d.inputs,
            d.threshold,
            d.clean_max_ncc,
            d.triggered_min_ncc,
            d.steepness,
            r.fmr_threshold
        );
        if measure {
            let m = zooaudit_redteam::bench::measure(&done, &opts, &set)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Ok(0)
    }
}
