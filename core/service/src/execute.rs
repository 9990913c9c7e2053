//! One job through the audit pipeline, exactly as `zooaudit audit` runs it
//! (the same library steps and writers), into a scratch directory whose
//! files become the audit's artifacts.

use std::path::{Path, PathBuf};

use zooaudit_audit::progress::{LINE_EVERY, ProgressLines};
use zooaudit_audit::{AuditSpec, Cache, RunOptions};
use zooaudit_auditdb::queue::Artifact;
use zooaudit_auditdb::{Completed, ModelRow};
use zooaudit_host::{PluginSet, SearchPath};
use zooaudit_manifest::ModelManifest;
use zooaudit_registry::FetchOptions;

use crate::ZooConfig;
use crate::intake::{Candidate, Job, parse_upload};

/// How this worker runs audits.
#[derive(Debug)]
pub struct Runner {
    pub config: ZooConfig,
    pub plugin_dirs: Vec<PathBuf>,
    /// The embedding cache directory (`None`: no cache).
    pub cache: Option<PathBuf>,
    pub sign_key: Option<zooaudit_attest::SecretKey>,
    pub test_result: bool,
    pub fetch: FetchOptions,
    pub batch: usize,
}

/// A finished job: what the registry stores.
#[derive(Debug)]
pub struct Executed {
    pub completed: Completed,
    pub models: Vec<ModelRow>,
}

/// Checks a fetched revision against the registry: `Err` when the file at
/// that commit changed since it was first fetched.
pub type RevisionCheck<'a> = &'a mut dyn FnMut(&str, &str, &str) -> Result<(), String>;

/// The media type of an artifact, by its name.
pub fn media_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "json" => "application/json",
        "csv" => "text/csv",
        "html" => "text/html; charset=utf-8",
        "md" => "text/markdown; charset=utf-8",
        _ => "application/octet-stream",
    }
}

impl Runner {
    /// Runs `job` in `scratch` (an empty directory of its own).
    pub fn run(
        &self,
        job: &Job,
        scratch: &Path,
        check_revision: RevisionCheck<'_>,
    ) -> Result<Executed, String> {
        let spec = self.spec(job, scratch, check_revision)?;
        let names: Vec<String> = spec
            .references
            .iter()
            .map(|p| {
                ModelManifest::load(p)
                    .map(|m| m.model.name)
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<_, _>>()?;
        if !job.chosen.is_empty() && names != job.chosen {
            return Err(format!(
                "the zoo changed since this audit was queued: its references are now {names:?}, were {:?}; submit it again",
                job.chosen
            ));
        }
        let plugins = PluginSet::discover(&SearchPath::standard(&self.plugin_dirs));
        let opts = RunOptions {
            cache: Cache::new(self.cache.clone()),
            batch: self.batch.max(1),
            fetch: self.fetch.clone(),
        };
        // The worker's log gets the audit's progress as lines (a running
        // stage at most every few seconds), named by the candidate.
        let mut lines = ProgressLines::new(LINE_EVERY);
        let who = spec
            .candidates
            .first()
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let report = zooaudit_audit::run(&spec, &plugins, &opts, &mut |p| {
            if let Some(l) = lines.line(&p) {
                eprintln!("audit {who}: {l}");
            }
        })
        .map_err(|e| e.to_string())?;
        let out = scratch.join("out");
        std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
        // The same writers, in the same order, as `zooaudit audit`.
        report.write(&out).map_err(|e| e.to_string())?;
        zooaudit_render::write_human(&report, &out).map_err(|e| e.to_string())?;
        if let Some(key) = &self.sign_key {
            zooaudit_render::write_attestations(&report, &out, key, self.test_result)
                .map_err(|e| e.to_string())?;
        }
        let mut artifacts = Vec::new();
        let mut names: Vec<_> = std::fs::read_dir(&out)
            .map_err(|e| format!("{}: {e}", out.display()))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for p in names {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let bytes = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            artifacts.push(Artifact {
                media_type: media_type(&name).to_string(),
                name,
                bytes,
            });
        }
        let verdict = report.overall();
        let candidate = report.models.iter().find(|m| m.role == "candidate");
        let completed = Completed {
            verdict: verdict.as_str().to_string(),
            rule: report
                .verdicts
                .first()
                .map(|v| v.rule.clone())
                .unwrap_or_default(),
            plugins: serde_json::to_string(&report.plugins).unwrap_or_default(),
            candidate_sha256: candidate.map(|m| m.sha256.clone()).unwrap_or_default(),
            candidate_source: candidate.map(|m| m.source.clone()).unwrap_or_default(),
            artifacts,
        };
        let models = report
            .models
            .iter()
            .map(|m| ModelRow {
                sha256: m.sha256.clone(),
                name: m.name.clone(),
                source: m.source.clone(),
                revision: m.revision.clone(),
                provenance: serde_json::to_string(&m.provenance).unwrap_or_default(),
                first_seen: 0,
            })
            .collect();
        Ok(Executed { completed, models })
    }

    /// The audit spec for `job`: the zoo's audit file with the job's
    /// candidate and references.
    fn spec(
        &self,
        job: &Job,
        scratch: &Path,
        check_revision: RevisionCheck<'_>,
    ) -> Result<AuditSpec, String> {
        let refs = (!job.references.is_empty()).then_some(job.references.as_slice());
        if let Candidate::Zoo { name } = &job.candidate {
            return AuditSpec::load_with(
                &self.config.audit,
                self.config.zoo.clone(),
                Some(name),
                refs,
            )
            .map_err(|e| e.to_string());
        }
        let text = std::fs::read_to_string(&self.config.audit).map_err(|e| {
            format!(
                "{}: cannot read audit file: {e}",
                self.config.audit.display()
            )
        })?;
        let mut spec = AuditSpec::parse(&self.config.audit, &text).map_err(|e| e.to_string())?;
        if let Some(z) = &self.config.zoo {
            spec.zoo = Some(z.clone());
        }
        let manifest = match &job.candidate {
            Candidate::Manifest { text } => {
                parse_upload(text).map_err(|e| e.to_string())?;
                let path = scratch.join("candidate.toml");
                std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
                ModelManifest::load(&path).map_err(|e| e.to_string())?
            }
            Candidate::Watched {
                model,
                repo,
                commit,
                file,
            } => self.watched(&spec, model, repo, commit, file, scratch, check_revision)?,
            Candidate::Zoo { .. } => unreachable!("handled above"),
        };
        spec.select_manifest(&manifest, refs)
            .map_err(|e| e.to_string())?;
        Ok(spec)
    }

    /// Fetches the watched file at `commit`, checks its sha256 against the
    /// registry's record for that commit, and pins it.
    #[allow(clippy::too_many_arguments)]
    fn watched(
        &self,
        spec: &AuditSpec,
        model: &str,
        repo: &str,
        commit: &str,
        file: &str,
        scratch: &Path,
        check_revision: RevisionCheck<'_>,
    ) -> Result<ModelManifest, String> {
        let zoo = spec.load_zoo().map_err(|e| e.to_string())?;
        let mut m = zoo.get(model).map_err(|e| e.to_string())?.clone();
        let file = if zooaudit_registry::zoo::is_glob(file) {
            let (_, files) = zooaudit_registry::hf::list_files(repo, commit, &self.fetch)?;
            let hits: Vec<&String> = files
                .iter()
                .filter(|f| zooaudit_registry::zoo::glob_match(file, f))
                .collect();
            match hits.as_slice() {
                [one] => one.to_string(),
                [] => {
                    return Err(format!(
                        "{repo}@{commit}: no file matches {}",
                        zooaudit_formats::quote(file)
                    ));
                }
                many => {
                    return Err(format!(
                        "{repo}@{commit}: '{file}' matches {} files ({}); make the watch's file pattern match one",
                        many.len(),
                        many.iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
            }
        } else {
            file.to_string()
        };
        let source = format!("hf://{repo}@{commit}/{file}");
        let mut fetch = self.fetch.clone();
        fetch.allow_unpinned = true;
        let resolved =
            zooaudit_registry::resolve_with(&m.path, &source, Path::new("/"), None, &fetch)
                .map_err(|e| e.to_string())?;
        check_revision(&format!("hf://{repo}/{file}"), commit, &resolved.sha256)?;
        m.model.source = source;
        m.model.sha256 = Some(resolved.sha256);
        self.write_manifest(&m, scratch)
    }

    /// Writes `m` as a manifest file in `scratch` (the pipeline opens
    /// models by manifest path) and reads it back.
    fn write_manifest(&self, m: &ModelManifest, scratch: &Path) -> Result<ModelManifest, String> {
        let path = scratch.join("candidate.toml");
        let text = toml::to_string(m).map_err(|e| format!("candidate manifest: {e}"))?;
        std::fs::write(&path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        ModelManifest::load(&path).map_err(|e| e.to_string())
    }
}
