//! An opened, verified pair and its decision for aligned face images.

use std::path::{Path, PathBuf};

use image::RgbImage;
use sha2::Digest;
use zooaudit_embed::Embedder;
use zooaudit_host::LoadedDetector;
use zooaudit_host::PluginSet;
use zooaudit_manifest::ModelManifest;
use zooaudit_pairing::Translator;

use crate::GuardError;
use crate::bundle::{PairBundle, Serve};

/// Why one image got no decision.
#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    /// The input is at fault (not an image, too large, wrong size).
    #[error("{0}")]
    BadImage(String),
    /// The image decoded, but it is larger than the limits.
    #[error("{0}")]
    TooLarge(String),
    /// A model failed or returned NaN / all-zero embeddings.
    #[error("{0}")]
    Model(String),
}

/// The pair's verdict on one image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub image_sha256: String,
    pub score: f32,
    pub threshold: f32,
    pub agree: bool,
    /// The served embedding (L2-normalised), per the bundle's `serve`.
    pub embedding: Vec<f32>,
}

/// One of the pair's two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Probe,
    Reference,
}

/// How a decision shares the CPU between the two models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "mode", content = "model")]
pub enum Schedule {
    /// One model after the other.
    Sequential,
    /// Both at the same time, at the same priority (the default of
    /// [`Pair::open`]).
    Concurrent,
    /// Both at the same time; this model, the faster one, on one thread at
    /// idle priority (Linux `SCHED_IDLE`; elsewhere normal priority), so it
    /// runs in the gaps the slower model's threads leave instead of taking
    /// cores from it. Chosen by [`Pair::tune`] when measured to pay.
    Background(Role),
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Schedule::Sequential => f.write_str("one model after the other"),
            Schedule::Concurrent => f.write_str("both models at the same time"),
            Schedule::Background(r) => write!(
                f,
                "both models at the same time, the {} on one thread at idle priority",
                match r {
                    Role::Probe => "probe",
                    Role::Reference => "reference",
                }
            ),
        }
    }
}

/// What [`Pair::tune`] measured (medians of a few runs on one mid-grey face).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Tuning {
    pub probe_ms: f64,
    pub reference_ms: f64,
    /// The faster model's time on one thread, when tried.
    pub single_thread_ms: Option<f64>,
    pub schedule: Schedule,
}

/// Both models of a bundle, opened and checked against its sha256s, and
/// its detector restored through the plugin it was calibrated with.
pub struct Pair {
    pub bundle: PairBundle,
    probe: Embedder,
    reference: Embedder,
    /// Detectors are `Send`, not `Sync` (plugin ABI): one scores at a time;
    /// scoring is microseconds next to the models' milliseconds.
    detector: std::sync::Mutex<LoadedDetector>,
    /// The pairing detector's translator, for `serve = "mean"`.
    translator: Option<Translator>,
    pub limits: zooaudit_imaging::Limits,
    /// How a decision runs the two models (see docs/BENCHMARKS.md for the
    /// measurements behind each).
    pub schedule: Schedule,
    /// Manifests as opened (for [`Pair::tune`], which may reopen one).
    manifests: [ModelManifest; 2],
    fetch: zooaudit_registry::FetchOptions,
}

/// Lowers the calling thread to idle priority (Linux `SCHED_IDLE`: it runs
/// only when a core would otherwise idle). A no-op elsewhere or when refused.
fn idle_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` with pid 0 changes only the calling
        // thread's policy; `param` is a valid, initialised struct for the
        // call's duration. Lowering one's own priority needs no privilege,
        // and a failure leaves the thread as it was.
        unsafe {
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        }
    }
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::MIN_POSITIVE);
    v.iter().map(|x| x / n).collect()
}

impl Pair {
    /// Opens both models; each file's sha256 must be the bundle's.
    pub fn open(
        bundle: PairBundle,
        bundle_path: &Path,
        plugins: &PluginSet,
        fetch: &zooaudit_registry::FetchOptions,
    ) -> Result<Pair, GuardError> {
        let open =
            |m: &crate::bundle::BundleModel| -> Result<(Embedder, ModelManifest), GuardError> {
                let mut manifest = ModelManifest::load(&m.manifest)
                    .map_err(|e| GuardError::file(bundle_path, e.to_string()))?;
                // Two models take turns on the same cores: idle ONNX Runtime
                // threads must not spin (measured: docs/BENCHMARKS.md).
                if manifest.model.adapter == "onnx"
                    && !manifest.model.options.contains_key("spinning")
                {
                    manifest
                        .model
                        .options
                        .insert("spinning".into(), toml::Value::Boolean(false));
                }
                let e = Embedder::open_with(manifest.clone(), plugins, fetch)
                    .map_err(|e| GuardError::file(bundle_path, e.to_string()))?;
                if e.resolved().sha256 != m.sha256 {
                    return Err(GuardError::file(
                        bundle_path,
                        format!(
                            "model '{}' ({}) has sha256 {}, but the bundle was calibrated on {}",
                            m.name,
                            e.resolved().path.display(),
                            e.resolved().sha256,
                            m.sha256
                        ),
                    ));
                }
                if e.dim() != m.dim {
                    return Err(GuardError::file(
                        bundle_path,
                        format!(
                            "model '{}' is {}-d, the bundle says {}-d",
                            m.name,
                            e.dim(),
                            m.dim
                        ),
                    ));
                }
                Ok((e, manifest))
            };
        let detector = open_detector(&bundle, bundle_path, plugins)?;
        let translator = bundle.detector.translator();
        if bundle.serve == Serve::Mean && translator.is_none() {
            return Err(GuardError::file(
                bundle_path,
                format!(
                    "serve = \"mean\" needs a translating detector; the bundle's is '{}'",
                    bundle.detector.plugin
                ),
            ));
        }
        // The restored detector must take the models' dimensions.
        detector
            .score(
                &vec![1.0; bundle.probe.dim],
                bundle.probe.dim,
                &vec![1.0; bundle.reference.dim],
                bundle.reference.dim,
            )
            .map_err(|e| {
                GuardError::file(
                    bundle_path,
                    format!(
                        "detector '{}' cannot score {}-d against {}-d embeddings: {e}",
                        bundle.detector.plugin, bundle.probe.dim, bundle.reference.dim
                    ),
                )
            })?;
        let (probe, probe_manifest) = open(&bundle.probe)?;
        let (reference, reference_manifest) = open(&bundle.reference)?;
        if probe.manifest().input.size != reference.manifest().input.size {
            return Err(GuardError::file(
                bundle_path,
                "the two models expect faces of different sizes",
            ));
        }
        Ok(Pair {
            bundle,
            probe,
            reference,
            detector: std::sync::Mutex::new(detector),
            translator,
            limits: crate::request::IMAGE_LIMITS,
            schedule: Schedule::Concurrent,
            manifests: [probe_manifest, reference_manifest],
            fetch: fetch.clone(),
        })
    }

    /// Measures both models on this machine and picks the schedule: when
    /// the faster model, on one thread, takes well under the slower one's
    /// time, it runs at idle priority beside the slower one (reopened with
    /// `threads = 1` unless its manifest sets `threads`); otherwise both
    /// run at the same time as opened. Measured on 2 cores, SFace and
    /// faceplugin: decision 37.1 → 30.1 ms, SFace alone 30.0 ms.
    pub fn tune(&mut self, plugins: &PluginSet) -> Result<Tuning, GuardError> {
        let [h, w] = self.face_size();
        let grey = [RgbImage::from_pixel(w, h, image::Rgb([128, 128, 128]))];
        let names = [PathBuf::from("mid-grey tuning face")];
        let time = |e: &Embedder| -> Result<f64, GuardError> {
            let mut runs = Vec::new();
            for i in 0..5 {
                let t = std::time::Instant::now();
                e.embed_rgb(&grey, &names)?;
                if i > 0 {
                    runs.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            runs.sort_by(f64::total_cmp);
            Ok(runs[runs.len() / 2])
        };
        let (probe_ms, reference_ms) = (time(&self.probe)?, time(&self.reference)?);
        let (fast, slow_ms) = if reference_ms <= probe_ms {
            (Role::Reference, probe_ms)
        } else {
            (Role::Probe, reference_ms)
        };
        let index = usize::from(fast == Role::Reference);
        let mut single_thread_ms = None;
        let mut schedule = Schedule::Concurrent;
        let manifest = &self.manifests[index];
        if manifest.model.adapter == "onnx" {
            let mut one = manifest.clone();
            one.model
                .options
                .entry("threads".to_string())
                .or_insert(toml::Value::Integer(1));
            let reopened = Embedder::open_with(one.clone(), plugins, &self.fetch)?;
            let ms = time(&reopened)?;
            single_thread_ms = Some(ms);
            // Room for the slower model's own gaps: measured, the faster
            // one on one thread at 36 % of the slower one's time adds
            // nothing to a decision on 2 cores.
            if ms <= 0.6 * slow_ms {
                schedule = Schedule::Background(fast);
                match fast {
                    Role::Probe => self.probe = reopened,
                    Role::Reference => self.reference = reopened,
                }
                self.manifests[index] = one;
            }
        }
        self.schedule = schedule;
        Ok(Tuning {
            probe_ms,
            reference_ms,
            single_thread_ms,
            schedule,
        })
    }

    /// The probe model.
    pub fn probe(&self) -> &Embedder {
        &self.probe
    }

    /// The reference model.
    pub fn reference(&self) -> &Embedder {
        &self.reference
    }

    /// `[height, width]` of the aligned faces the pair expects.
    pub fn face_size(&self) -> [u32; 2] {
        self.probe.manifest().input.size
    }

    /// Decodes an image body within the limits and checks its size.
    pub fn decode(&self, bytes: &[u8], name: &str) -> Result<RgbImage, DecideError> {
        crate::request::decode_face(bytes, name, &self.limits, self.face_size())
    }

    /// Decisions for aligned faces at `threshold`: each model runs once on
    /// the whole batch (both at the same time when `concurrent`).
    pub fn decide(
        &self,
        images: &[RgbImage],
        shas: &[String],
        threshold: f32,
    ) -> Result<Vec<Decision>, DecideError> {
        let names: Vec<PathBuf> = shas.iter().map(PathBuf::from).collect();
        let run = |role: Role| match role {
            Role::Probe => self.probe.embed_rgb(images, &names),
            Role::Reference => self.reference.embed_rgb(images, &names),
        };
        // The second model on its own thread (at idle priority when it is
        // the background one), the first on this one.
        let beside = |role: Role, background: bool| {
            let other = match role {
                Role::Probe => Role::Reference,
                Role::Reference => Role::Probe,
            };
            std::thread::scope(|s| {
                let spawned = s.spawn(|| {
                    if background {
                        idle_priority();
                    }
                    run(role)
                });
                let here = run(other);
                let there = spawned.join().map_err(|_| {
                    DecideError::Model(format!("the {role:?} model's thread panicked"))
                });
                (here, there)
            })
        };
        let (p, r) = match self.schedule {
            Schedule::Sequential => (run(Role::Probe), run(Role::Reference)),
            Schedule::Concurrent => {
                let (p, r) = beside(Role::Reference, false);
                (p, r?)
            }
            Schedule::Background(Role::Reference) => {
                let (p, r) = beside(Role::Reference, true);
                (p, r?)
            }
            Schedule::Background(Role::Probe) => {
                let (r, p) = beside(Role::Probe, true);
                (p?, r)
            }
        };
        let p = p.map_err(|e| DecideError::Model(e.to_string()))?;
        let r = r.map_err(|e| DecideError::Model(e.to_string()))?;
        let (pd, rd) = (self.probe.dim(), self.reference.dim());
        let scores = self
            .detector
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .score(&p, pd, &r, rd)
            .map_err(|e| DecideError::Model(e.to_string()))?;
        if scores.len() != images.len() || scores.iter().any(|s| !s.is_finite()) {
            return Err(DecideError::Model(format!(
                "detector '{}' returned {} scores (non-finite among them: {}) for {} images",
                self.bundle.detector.plugin,
                scores.len(),
                scores.iter().any(|s| !s.is_finite()),
                images.len()
            )));
        }
        Ok((0..images.len())
            .map(|i| {
                let pe = &p[i * pd..(i + 1) * pd];
                let re = &r[i * rd..(i + 1) * rd];
                let score = scores[i];
                let embedding = match (self.bundle.serve, &self.translator) {
                    (Serve::Probe, _) => unit(pe),
                    (Serve::Mean, Some(t)) => {
                        let (a, b) = (unit(&t.apply(pe)), unit(re));
                        unit(&a.iter().zip(&b).map(|(x, y)| x + y).collect::<Vec<_>>())
                    }
                    // `open` refuses mean without a translator.
                    (Serve::Reference | Serve::Mean, _) => unit(re),
                };
                Decision {
                    image_sha256: shas[i].clone(),
                    score,
                    threshold,
                    agree: score >= threshold,
                    embedding,
                }
            })
            .collect())
    }
}

/// The bundle's detector: its plugin found, its file's sha256 the
/// bundle's, restored from the bundle's state.
fn open_detector(
    bundle: &PairBundle,
    bundle_path: &Path,
    plugins: &PluginSet,
) -> Result<LoadedDetector, GuardError> {
    let d = &bundle.detector;
    let fail = |m: String| GuardError::file(bundle_path, format!("detector '{}': {m}", d.plugin));
    let plugin = plugins
        .detector(&d.plugin)
        .map_err(|e| fail(e.to_string()))?;
    let info = plugin.info();
    if let Some(want) = &d.sha256
        && !want.eq_ignore_ascii_case(&info.sha256)
    {
        return Err(fail(format!(
            "the bundle was calibrated with the plugin file of sha256 {want}, but {} has sha256 {} (version {}; the bundle's {})",
            info.path.display(),
            info.sha256,
            info.version,
            d.version
        )));
    }
    let state = d.state.to_bytes().map_err(&fail)?;
    plugin
        .restore_detector(&d.options, &state)
        .map_err(|e| fail(format!("cannot restore its state: {e}")))
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}
