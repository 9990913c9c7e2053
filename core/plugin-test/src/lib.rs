//! A test harness for zooaudit plugin authors: load the plugin file your
//! crate built exactly as the host does (sha256, ABI version, layout), and
//! run it on real embeddings with the checks the host relies on.
//!
//! ```ignore
//! // tests/harness.rs of your plugin crate (dev-dependency: zooaudit-plugin-test)
//! use zooaudit_plugin_test::{Harness, PairData};
//!
//! #[test]
//! fn my_detector_keeps_the_contract() {
//!     let h = Harness::built().unwrap();
//!     let data = PairData::from_npy("sface.npy".as_ref(), "faceplugin.npy".as_ref()).unwrap();
//!     let check = h.check_detector(&serde_json::json!({}), &data).unwrap();
//!     println!("{check}");
//! }
//! ```
//!
//! [`Harness::check_detector`] fits on half the rows and, on the other
//! half, checks that the plugin
//! - returns a JSON fit report and one finite score per row;
//! - scores genuine pairs (the same image through both models) above
//!   mismatched ones (another identity's image), AUC > 0.5;
//! - exports its state, and a fresh detector restored from it scores the
//!   same (≤ 1e-6): what the run-time guard does with a pair bundle;
//! - refuses an empty and a truncated state, scores of the wrong
//!   dimension, and survives NaN input — with errors, never a panic (the
//!   SDK turns a panic into an error; the harness treats one as a failure).
//!
//! Embeddings come from `zooaudit embed --out x.npy` (the `.npy` and its
//! JSON sidecar, rows aligned by image path).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use zooaudit_host::{HostError, Kind, LoadedDetector, Plugin, PluginInfo};

/// Why a plugin failed the harness, in one line.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Loading or calling the plugin failed where it must not.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The embeddings given to the harness are unusable.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// The plugin broke a rule the host relies on.
    #[error("plugin '{plugin}': {message}")]
    Contract { plugin: String, message: String },
}

/// Row-aligned embeddings of the same images by a probe and a reference
/// model, with each row's image (its parent folder is its identity).
#[derive(Debug, Clone)]
pub struct PairData {
    pub probe: Vec<f32>,
    pub probe_dim: usize,
    pub reference: Vec<f32>,
    pub reference_dim: usize,
    pub images: Vec<String>,
}

fn data_error(path: &Path, message: impl Into<String>) -> CheckError {
    CheckError::Data {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl PairData {
    /// Validates shapes (rows × dim each, one image per row, ≥ 4 rows) and
    /// that every value is finite.
    pub fn new(
        probe: Vec<f32>,
        probe_dim: usize,
        reference: Vec<f32>,
        reference_dim: usize,
        images: Vec<String>,
    ) -> Result<PairData, CheckError> {
        let here = Path::new("<embeddings>");
        let rows = images.len();
        if probe_dim == 0 || reference_dim == 0 {
            return Err(data_error(here, "a dimension is zero"));
        }
        if probe.len() != rows * probe_dim || reference.len() != rows * reference_dim {
            return Err(data_error(
                here,
                format!(
                    "{rows} images but {} probe and {} reference values ({probe_dim}-d, {reference_dim}-d)",
                    probe.len(),
                    reference.len()
                ),
            ));
        }
        if rows < 4 {
            return Err(data_error(
                here,
                format!("{rows} rows; the harness needs ≥ 4"),
            ));
        }
        if probe.iter().chain(&reference).any(|x| !x.is_finite()) {
            return Err(data_error(here, "non-finite values"));
        }
        Ok(PairData {
            probe,
            probe_dim,
            reference,
            reference_dim,
            images,
        })
    }

    /// Reads two `zooaudit embed` outputs and keeps the images both hold,
    /// in the probe's order.
    pub fn from_npy(probe: &Path, reference: &Path) -> Result<PairData, CheckError> {
        let read = |p: &Path| -> Result<(zooaudit_formats::npy::Matrix, Vec<String>), CheckError> {
            let m = zooaudit_formats::npy::read(p).map_err(|e| data_error(p, e.to_string()))?;
            let sidecar = zooaudit_formats::sidecar_path(p);
            let s = zooaudit_formats::EmbeddingsSidecar::read(&sidecar)
                .map_err(|e| data_error(&sidecar, e.to_string()))?;
            if s.images.len() != m.rows {
                return Err(data_error(
                    &sidecar,
                    format!("{} images for {} rows", s.images.len(), m.rows),
                ));
            }
            Ok((m, s.images))
        };
        let (p, p_images) = read(probe)?;
        let (r, r_images) = read(reference)?;
        let index: std::collections::HashMap<&str, usize> = r_images
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let (mut pv, mut rv, mut images) = (Vec::new(), Vec::new(), Vec::new());
        for (i, img) in p_images.iter().enumerate() {
            if let Some(&j) = index.get(img.as_str()) {
                pv.extend_from_slice(&p.data[i * p.cols..(i + 1) * p.cols]);
                rv.extend_from_slice(&r.data[j * r.cols..(j + 1) * r.cols]);
                images.push(img.clone());
            }
        }
        PairData::new(pv, p.cols, rv, r.cols, images)
            .map_err(|e| data_error(probe, format!("with {}: {e}", reference.display())))
    }

    pub fn rows(&self) -> usize {
        self.images.len()
    }

    fn gather(&self, idx: &[usize]) -> (Vec<f32>, Vec<f32>) {
        let (pd, rd) = (self.probe_dim, self.reference_dim);
        let mut p = Vec::with_capacity(idx.len() * pd);
        let mut r = Vec::with_capacity(idx.len() * rd);
        for &i in idx {
            p.extend_from_slice(&self.probe[i * pd..(i + 1) * pd]);
            r.extend_from_slice(&self.reference[i * rd..(i + 1) * rd]);
        }
        (p, r)
    }

    fn identity(&self, i: usize) -> &str {
        Path::new(&self.images[i])
            .parent()
            .and_then(|p| p.file_name())
            .and_then(|n| n.to_str())
            .unwrap_or("")
    }
}

/// What [`Harness::check_detector`] measured.
#[derive(Debug, Clone)]
pub struct DetectorCheck {
    pub fit_rows: usize,
    pub heldout_rows: usize,
    /// The detector's fit report.
    pub fit_report: serde_json::Value,
    /// Size of the exported state.
    pub state_bytes: usize,
    /// Mean held-out score of genuine pairs and of mismatched ones.
    pub genuine_mean: f64,
    pub mismatched_mean: f64,
    /// P(a genuine pair scores above a mismatched one), ties half.
    pub auc: f64,
    pub fit_seconds: f64,
    /// Seconds to score the held-out genuine pairs.
    pub score_seconds: f64,
}

impl fmt::Display for DetectorCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fit on {} rows in {:.3} s; {} held-out rows scored in {:.4} s: genuine mean {:.3}, mismatched mean {:.3}, AUC {:.3}; state {} bytes, restored scores identical",
            self.fit_rows,
            self.fit_seconds,
            self.heldout_rows,
            self.score_seconds,
            self.genuine_mean,
            self.mismatched_mean,
            self.auc,
            self.state_bytes
        )
    }
}

/// A plugin file, loaded as the host loads it.
#[derive(Debug, Clone)]
pub struct Harness {
    plugin: Plugin,
}

impl Harness {
    /// Loads a plugin file (sha256 computed, ABI version and layout checked).
    pub fn load(path: &Path) -> Result<Harness, CheckError> {
        Ok(Harness {
            plugin: Plugin::load(path, None)?,
        })
    }

    /// The plugin the calling test's own package built: the newest
    /// `libzooaudit_plugin_*.so` (`.dylib`, `zooaudit_plugin_*.dll`: the
    /// names the host discovers) beside the running test binary or in the
    /// profile directory above it. The package needs `crate-type =
    /// ["cdylib", "rlib"]` for `cargo test` to build the file.
    pub fn built() -> Result<Harness, CheckError> {
        let prefix = format!("{}zooaudit_plugin_", std::env::consts::DLL_PREFIX);
        let suffix = std::env::consts::DLL_SUFFIX;
        let exe = std::env::current_exe()
            .map_err(|e| data_error(Path::new("<test binary>"), e.to_string()))?;
        // The test binary is target/<profile>/deps/<test>; `cargo test`
        // leaves the cdylib in deps/, `cargo build` in target/<profile>/.
        let deps = exe
            .parent()
            .ok_or_else(|| data_error(&exe, "no directory above the test binary"))?;
        let newest = [deps.to_path_buf(), deps.join("..")]
            .iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with(&prefix) && name.ends_with(suffix)
            })
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .max_by_key(|(t, _)| *t);
        let Some((_, path)) = newest else {
            return Err(data_error(
                deps,
                format!(
                    "no {prefix}*{suffix} built: name the library `zooaudit_plugin_…` and give it `crate-type = [\"cdylib\", \"rlib\"]`"
                ),
            ));
        };
        Harness::load(&path)
    }

    pub fn info(&self) -> &PluginInfo {
        self.plugin.info()
    }

    pub fn plugin(&self) -> &Plugin {
        &self.plugin
    }

    fn broke(&self, message: impl Into<String>) -> CheckError {
        CheckError::Contract {
            plugin: self.info().name.clone(),
            message: message.into(),
        }
    }

    /// `r` must be an error, and not a panic.
    fn must_refuse<T>(&self, what: &str, r: Result<T, HostError>) -> Result<(), CheckError> {
        match r {
            Ok(_) => Err(self.broke(format!("accepted {what}; it must refuse it"))),
            Err(e) if e.is_panic() => Err(self.broke(format!("panicked on {what}: {e}"))),
            Err(_) => Ok(()),
        }
    }

    /// Fits and scores a detector-strategy plugin on `data`; see the crate
    /// docs for every check.
    pub fn check_detector(
        &self,
        options: &serde_json::Value,
        data: &PairData,
    ) -> Result<DetectorCheck, CheckError> {
        if self.info().kind != Kind::DetectorStrategy {
            return Err(self.broke(format!(
                "is a {}, not a detector-strategy plugin",
                self.info().kind
            )));
        }
        let (pd, rd) = (data.probe_dim, data.reference_dim);
        let fit_idx: Vec<usize> = (0..data.rows()).step_by(2).collect();
        let held: Vec<usize> = (1..data.rows()).step_by(2).collect();
        let mut det = self.plugin.new_detector(options)?;
        let (fp, fr) = data.gather(&fit_idx);
        let t = Instant::now();
        let fit_report = det.fit(&fp, pd, &fr, rd)?;
        let fit_seconds = t.elapsed().as_secs_f64();
        let (hp, hr) = data.gather(&held);
        let t = Instant::now();
        let genuine = self.scores(&det, &hp, pd, &hr, rd, held.len())?;
        let score_seconds = t.elapsed().as_secs_f64();
        // Mismatched: probe of held-out face k, reference of the next
        // held-out face of another identity.
        let other: Vec<usize> = (0..held.len())
            .filter_map(|k| {
                (1..held.len())
                    .map(|s| held[(k + s) % held.len()])
                    .find(|&j| data.identity(j) != data.identity(held[k]))
            })
            .collect();
        if other.len() != held.len() {
            return Err(data_error(
                Path::new("<embeddings>"),
                "the held-out rows need ≥ 2 identities (parent folders)",
            ));
        }
        let (_, or) = data.gather(&other);
        let mismatched = self.scores(&det, &hp, pd, &or, rd, held.len())?;
        let state = det.export_state()?;
        let restored = self.plugin.restore_detector(options, &state)?;
        let again = self.scores(&restored, &hp, pd, &hr, rd, held.len())?;
        if let Some((i, (a, b))) = genuine
            .iter()
            .zip(&again)
            .enumerate()
            .find(|(_, (a, b))| (*a - *b).abs() > 1e-6)
        {
            return Err(self.broke(format!(
                "a detector restored from its exported state scores held-out row {i} {b}, the fitted one {a}"
            )));
        }
        let auc = auc(&genuine, &mismatched);
        let mean = |v: &[f32]| v.iter().map(|&x| f64::from(x)).sum::<f64>() / v.len() as f64;
        if auc <= 0.5 {
            return Err(self.broke(format!(
                "does not score genuine pairs above mismatched ones (AUC {auc:.3}, means {:.3} vs {:.3})",
                mean(&genuine),
                mean(&mismatched)
            )));
        }
        self.must_refuse("an empty state", self.plugin.restore_detector(options, &[]))?;
        self.must_refuse(
            "a truncated state",
            self.plugin
                .restore_detector(options, &state[..state.len() / 2]),
        )?;
        self.must_refuse(
            "probe embeddings of another dimension",
            det.score(&hp[..pd + 1], pd + 1, &hr[..rd], rd),
        )?;
        let mut nan = hp[..pd].to_vec();
        nan[0] = f32::NAN;
        if let Err(e) = det.score(&nan, pd, &hr[..rd], rd)
            && e.is_panic()
        {
            return Err(self.broke(format!("panicked on a NaN embedding: {e}")));
        }
        Ok(DetectorCheck {
            fit_rows: fit_idx.len(),
            heldout_rows: held.len(),
            fit_report,
            state_bytes: state.len(),
            genuine_mean: mean(&genuine),
            mismatched_mean: mean(&mismatched),
            auc,
            fit_seconds,
            score_seconds,
        })
    }

    /// Scores, which must be `n` finite values.
    fn scores(
        &self,
        det: &LoadedDetector,
        p: &[f32],
        pd: usize,
        r: &[f32],
        rd: usize,
        n: usize,
    ) -> Result<Vec<f32>, CheckError> {
        let s = det.score(p, pd, r, rd)?;
        if s.len() != n {
            return Err(self.broke(format!("returned {} scores for {n} rows", s.len())));
        }
        if let Some(i) = s.iter().position(|x| !x.is_finite()) {
            return Err(self.broke(format!("score of row {i} is {}", s[i])));
        }
        Ok(s)
    }
}

/// P(genuine > mismatched) over all pairs, ties counted half.
fn auc(genuine: &[f32], mismatched: &[f32]) -> f64 {
    let mut wins = 0.0;
    for g in genuine {
        for m in mismatched {
            wins += if g > m {
                1.0
            } else if g == m {
                0.5
            } else {
                0.0
            };
        }
    }
    wins / (genuine.len() * mismatched.len()) as f64
}
