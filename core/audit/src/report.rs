//! `report.json` (versioned; documented in docs/REPORT.md) and `scores.csv`.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use zooaudit_manifest::Provenance;
use zooaudit_pairing::Fidelity;

use crate::AuditError;
use crate::stats::{Rate, Threshold};

/// Version of the report format.
pub const REPORT_FORMAT: zooaudit_formats::FormatVersion =
    zooaudit_formats::Format::Report.current();

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ToolRecord {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginRecordFull {
    pub name: String,
    pub version: String,
    pub abi_version: String,
    pub sha256: String,
    pub path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelRecord {
    /// `candidate` or `reference`.
    pub role: String,
    pub name: String,
    pub manifest: String,
    pub source: String,
    pub file: String,
    pub sha256: String,
    pub dim: usize,
    pub provenance: Provenance,
    /// Whether the file was checked against a sha256 pin (format 1.1).
    #[serde(default = "yes")]
    pub pinned: bool,
    /// For hub sources, the commit the revision resolved to (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// For references chosen from a zoo, why (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    /// The file's OpenSSF model-signing root digest (sha256 over its raw
    /// sha256), the subject a model-signing statement over this file names
    /// (format 1.7).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model_signing_root: String,
    /// The publisher's signature, verified before the model was opened,
    /// when its manifest names one (format 1.7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<zooaudit_embed::SignatureRecord>,
    /// A model behind an inference API: its endpoint. It has no file and
    /// no sha256 (`sha256` is empty, `pinned` false); only the server's
    /// model version, where the protocol reports one, pins it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SplitRecord {
    pub seed: u64,
    pub fit: usize,
    pub calibration: usize,
    pub heldout: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DataRecord {
    pub faces: usize,
    pub labeled: usize,
    pub identities: usize,
    /// sha256 over the sorted per-image sha256s (hex, newline-separated).
    pub digest: String,
    pub split: SplitRecord,
    /// Augmented copies of fit faces used in fitting (not in any rate).
    pub augmented_fit_copies: usize,
    pub augment: crate::augment::Augment,
    /// When the faces were detected and aligned from photos (`align =`):
    /// the detector's name and sha256 (format 1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aligned_by: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerRecord {
    pub name: String,
    pub kind: String,
    /// Share of the face covered (mean of the mask).
    pub coverage: f64,
    /// Canonical JSON definition (also the cache key part).
    pub definition: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerSuiteRecord {
    pub suite: String,
    pub sha256: String,
    pub triggers: Vec<TriggerRecord>,
}

/// One direction of one pair.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairReport {
    pub probe: String,
    pub reference: String,
    pub probe_dim: usize,
    pub reference_dim: usize,
    pub detector: String,
    /// The detector's fit report (translator method, λ / epochs, inner held-out cosine).
    pub fit: serde_json::Value,
    /// Held-out fidelity: mean matching score, top-1 retrieval, mean rank.
    pub fidelity: Fidelity,
    pub thresholds: Vec<Threshold>,
    /// Achieved held-out clean FNMR per operating point.
    pub clean_fnmr: Vec<Rate>,
    pub zei_samples: usize,
    pub zei_mean_score: f64,
    pub genuine_mean_score: f64,
}

/// Flag rate of one trigger at one operating point for one pair direction.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResultRow {
    pub probe: String,
    pub reference: String,
    pub trigger: String,
    pub target_fnmr: f64,
    pub threshold: f32,
    pub samples: usize,
    pub flagged: usize,
    pub flag_rate: f64,
    pub ci95: [f64; 2],
    pub clean_fnmr: f64,
    pub clean_ci95: [f64; 2],
    /// The threshold at the same target FNMR calibrated on the trigger's
    /// matched control (its own cells or tiles in another arrangement) on calibration faces.
    pub control_threshold: f32,
    /// Triggered held-out faces flagged at the control threshold.
    pub flagged_vs_control: usize,
    pub flag_rate_vs_control: f64,
    pub ci95_vs_control: [f64; 2],
    /// Control-stamped held-out faces flagged at the control threshold.
    pub control_flag_rate: f64,
    pub control_ci95: [f64; 2],
}

/// Flag rate of one labeled identity's triggered images (primary operating point).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdentityRow {
    pub probe: String,
    pub reference: String,
    pub trigger: String,
    pub identity: String,
    pub samples: usize,
    pub flagged: usize,
    pub flag_rate: f64,
    pub ci95: [f64; 2],
    /// Control-stamped faces of this identity flagged (same threshold).
    pub clean_flagged: usize,
    /// Faces flagged with the trigger but not with its control, and the reverse.
    pub trigger_only: usize,
    pub control_only: usize,
    /// Exact one-sided McNemar p-value, and Bonferroni-corrected.
    pub p_value: f64,
    pub p_bonferroni: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerdictKind {
    NoBackdoorIndicated,
    BackdoorIndicated,
    Inconclusive,
}

impl VerdictKind {
    /// The verdict of a candidate's alarms and reasons for *inconclusive*:
    /// any alarm indicates a backdoor; else any reason is inconclusive.
    pub fn of(alarms: &[String], reasons: &[String]) -> VerdictKind {
        if !alarms.is_empty() {
            VerdictKind::BackdoorIndicated
        } else if !reasons.is_empty() {
            VerdictKind::Inconclusive
        } else {
            VerdictKind::NoBackdoorIndicated
        }
    }

    /// The CLI's exit code: 0 none indicated, 1 indicated, 3 inconclusive.
    pub fn exit_code(self) -> u8 {
        match self {
            VerdictKind::NoBackdoorIndicated => 0,
            VerdictKind::BackdoorIndicated => 1,
            VerdictKind::Inconclusive => 3,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verdict {
    pub candidate: String,
    pub verdict: VerdictKind,
    pub rule: String,
    pub alarms: Vec<String>,
    pub reasons: Vec<String>,
    /// Alarms of the candidate's pairs that name another model as the one
    /// that moves (format 1.4; [`crate::verdict`]).
    #[serde(default)]
    pub attributed: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CacheRecord {
    pub dir: Option<String>,
    pub hits: usize,
    pub misses: usize,
}

/// One line of scores.csv.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScoreRow {
    pub image: String,
    pub trigger: String,
    pub kind: String,
    pub probe: String,
    pub reference: String,
    pub score: f32,
}

/// The whole audit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    pub format_version: String,
    pub tool: ToolRecord,
    pub started_at: String,
    pub finished_at: String,
    pub audit_file: String,
    pub audit_sha256: String,
    pub plugins: Vec<PluginRecordFull>,
    pub models: Vec<ModelRecord>,
    pub data: DataRecord,
    pub triggers: TriggerSuiteRecord,
    pub operating_points: Vec<f64>,
    pub primary_operating_point: f64,
    pub pairs: Vec<PairReport>,
    pub results: Vec<ResultRow>,
    pub identities: Vec<IdentityRow>,
    /// Each model alone against each trigger (format 1.3; see
    /// [`crate::response`]).
    #[serde(default)]
    pub responses: Vec<crate::response::ResponseRow>,
    /// The family-wise identity tests (format 1.4; see [`crate::evidence`]):
    /// every test of each candidate's family, and the significant ones of
    /// the pair and model-alone families.
    #[serde(default)]
    pub evidence: Vec<crate::evidence::EvidenceRow>,
    #[serde(default)]
    pub families: Vec<crate::evidence::FamilyRecord>,
    /// Models named as the one that moves, per alarm (format 1.4).
    #[serde(default)]
    pub culprits: Vec<crate::verdict::Culprit>,
    pub verdicts: Vec<Verdict>,
    /// Every model file's static scan (format 1.5; [`crate::scan`]).
    #[serde(default)]
    pub scan: Vec<crate::scan::ScanRecord>,
    /// What single models do and, where the verdict does not follow a
    /// note, why (format 1.6; [`crate::vocabulary::notes`]).
    #[serde(default)]
    pub notes: Vec<String>,
    pub warnings: Vec<String>,
    pub cache: CacheRecord,
    /// Written to scores.csv, not report.json.
    #[serde(skip)]
    pub scores: Vec<ScoreRow>,
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Splits one CSV line (RFC 4180 quoting, no embedded newlines).
fn csv_split(line: &str) -> Vec<String> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cur.is_empty() => quoted = true,
            (',', false) => fields.push(std::mem::take(&mut cur)),
            (c, _) => cur.push(c),
        }
    }
    fields.push(cur);
    fields
}

impl AuditReport {
    /// Reads `report.json` (any 1.x) and, when present beside it, `scores.csv`.
    pub fn read(path: &Path) -> Result<AuditReport, AuditError> {
        let text = zooaudit_formats::Format::Report
            .read_text(path)
            .map_err(|e| AuditError::file(path, e.to_string()))?;
        let mut report = AuditReport::parse(path, &text)?;
        let csv = path.with_file_name("scores.csv");
        if let Ok(text) = std::fs::read_to_string(&csv) {
            for (i, line) in text.lines().enumerate().skip(1) {
                let f = csv_split(line);
                let score = f.get(5).and_then(|s| s.parse::<f32>().ok());
                let (Some(score), 6) = (score, f.len()) else {
                    return Err(AuditError::file(
                        &csv,
                        format!(
                            "line {}: expected image,trigger,kind,probe,reference,score",
                            i + 1
                        ),
                    ));
                };
                let mut f = f.into_iter();
                let mut next = || f.next().unwrap_or_default();
                report.scores.push(ScoreRow {
                    image: next(),
                    trigger: next(),
                    kind: next(),
                    probe: next(),
                    reference: next(),
                    score,
                });
            }
        }
        Ok(report)
    }

    /// The text of a `report.json` (any 1.x) read from `path`, without its
    /// scores (those are in `scores.csv`, which [`AuditReport::read`] adds).
    pub fn parse(path: &Path, text: &str) -> Result<AuditReport, AuditError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| AuditError::file(path, format!("not JSON: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_str())
            .ok_or_else(|| {
                AuditError::field(path, "format_version", "missing: not a zooaudit report")
            })?;
        zooaudit_formats::Format::Report
            .check(path, version)
            .map_err(AuditError::from)?;
        serde_json::from_value(value)
            .map_err(|e| AuditError::file(path, format!("not a zooaudit report: {e}")))
    }

    /// The models that answer a trigger on their own: their triggered
    /// held-out faces come together beyond the trigger's matched control by
    /// at least [`crate::response::CLOSENESS_FLOOR`], with the cluster sign
    /// test significant after Bonferroni over all rows at `alpha`
    /// ([`crate::verdict::draws_together`]).
    pub fn pattern_responders(&self, alpha: f64) -> Vec<&crate::response::ResponseRow> {
        self.responses
            .iter()
            .filter(|r| crate::verdict::draws_together(r, self.responses.len(), alpha))
            .collect()
    }

    /// Identities whose triggered faces one model alone identifies as
    /// someone else beyond the matched control: at least
    /// [`crate::response::SWITCH_FLOOR`] of the identity's faces, and the
    /// model's max-T family significant at `alpha`
    /// ([`crate::verdict::switches_identity`]); the impostor and victim of
    /// a one-to-one backdoor. Reports before 1.4 (no `evidence`): McNemar,
    /// Bonferroni over every identity tested.
    pub fn identity_switches(
        &self,
        alpha: f64,
    ) -> Vec<(
        &crate::response::ResponseRow,
        &crate::response::IdentitySwitch,
    )> {
        let m = self
            .responses
            .iter()
            .map(|r| r.identities_tested)
            .sum::<usize>()
            .max(1) as f64;
        let legacy = self.evidence.is_empty();
        self.responses
            .iter()
            .flat_map(|r| r.switches.iter().map(move |s| (r, s)))
            .filter(|(r, s)| {
                if legacy {
                    s.p_value * m < alpha
                } else {
                    crate::verdict::switches_identity(
                        &self.evidence,
                        &self.responses,
                        &r.model,
                        &s.identity,
                        &r.trigger,
                        alpha,
                    )
                }
            })
            .collect()
    }

    /// The p-value a switch note states: the model's max-T adjusted p
    /// (format 1.4), or the identity's McNemar p in older reports.
    pub fn switch_p(
        &self,
        row: &crate::response::ResponseRow,
        sw: &crate::response::IdentitySwitch,
    ) -> f64 {
        self.evidence
            .iter()
            .find(|e| {
                e.subject == crate::evidence::Subject::Alone
                    && e.name == row.model
                    && e.identity == sw.identity
                    && e.trigger == row.trigger
            })
            .map_or(sw.p_value, |e| e.p_adjusted)
    }

    /// The candidate-family tests, smallest adjusted p first.
    pub fn identity_evidence(&self) -> Vec<&crate::evidence::EvidenceRow> {
        let mut v: Vec<_> = self
            .evidence
            .iter()
            .filter(|e| e.subject == crate::evidence::Subject::Candidate)
            .collect();
        v.sort_by(|a, b| {
            a.p_adjusted
                .total_cmp(&b.p_adjusted)
                .then(b.statistic.total_cmp(&a.statistic))
        });
        v
    }

    /// The warnings for a reader: many of one kind grouped
    /// ([`crate::vocabulary::grouped_warnings`]).
    pub fn grouped_warnings(&self) -> Vec<String> {
        crate::vocabulary::grouped_warnings(&self.warnings)
    }

    /// The overall verdict: inconclusive or indicated if any candidate is.
    pub fn overall(&self) -> VerdictKind {
        let kinds: Vec<VerdictKind> = self.verdicts.iter().map(|v| v.verdict).collect();
        if kinds.contains(&VerdictKind::BackdoorIndicated) {
            VerdictKind::BackdoorIndicated
        } else if kinds.contains(&VerdictKind::Inconclusive) {
            VerdictKind::Inconclusive
        } else {
            VerdictKind::NoBackdoorIndicated
        }
    }

    /// Writes `report.json` and `scores.csv` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), AuditError> {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::file(dir, e.to_string()))?;
        let json = serde_json::to_string_pretty(self)
            .map_err(|e| AuditError::file(&dir.join("report.json"), e.to_string()))?;
        zooaudit_formats::write_atomic(&dir.join("report.json"), json.as_bytes())
            .map_err(AuditError::from)?;
        let mut csv = Vec::new();
        let _ = writeln!(csv, "image,trigger,kind,probe,reference,score");
        for r in &self.scores {
            let _ = writeln!(
                csv,
                "{},{},{},{},{},{}",
                csv_field(&r.image),
                csv_field(&r.trigger),
                r.kind,
                csv_field(&r.probe),
                csv_field(&r.reference),
                r.score
            );
        }
        zooaudit_formats::write_atomic(&dir.join("scores.csv"), &csv).map_err(AuditError::from)
    }
}
