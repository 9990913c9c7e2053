//! Zoo files: a versioned list of model manifests (each with its
//! provenance), and the choice of independent references for a candidate.
//!
//! ```toml
//! format_version = "1.0"
//! name = "face-recognition zoo"
//!
//! [[model]]
//! manifest = "sface.toml"          # relative to this file
//!
//! [[model]]
//! manifest = "faceplugin.toml"
//! watch = "hf://owner/repo"         # format 1.1: audit each new commit
//! file = "model.onnx"               # of this file, with this manifest's
//!                                   # preprocessing and provenance
//! ```
//!
//! A reference is *independent* of the candidate when the publishers differ
//! and the declared training data differ (see
//! [`zooaudit_manifest::Provenance::independence_from`]); among independent
//! ones, another architecture family ranks first, then declared training
//! data. A reference named explicitly is used whatever its relation, and the
//! report says so.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use zooaudit_manifest::{FormatVersion, Independence, ModelManifest, line_of};

/// Format version of zoo files.
pub const ZOO_FORMAT_VERSION: FormatVersion = zooaudit_manifest::Format::Zoo.current();

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ZooError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("{path}: {field}: {message}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A model manifest named directly.
    #[error(transparent)]
    Manifest(#[from] zooaudit_manifest::ManifestError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    manifest: String,
    watch: Option<String>,
    file: Option<String>,
}

/// A hub repository whose new commits the zoo audits (`watch` in format
/// 1.1): the file `file` at each commit (a path, or a glob that must match
/// exactly one file of the commit), as the model `model` (its manifest's
/// preprocessing and provenance, the commit's bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watch {
    pub model: String,
    /// `owner/name` on the hub.
    pub repo: String,
    /// The model file's path in the repository.
    pub file: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawZoo {
    format_version: Option<String>,
    #[serde(default)]
    name: String,
    #[serde(default)]
    model: Vec<RawEntry>,
}

/// A loaded zoo.
#[derive(Debug, Clone)]
pub struct Zoo {
    pub path: PathBuf,
    pub name: String,
    pub models: Vec<ModelManifest>,
    pub watches: Vec<Watch>,
}

/// One chosen reference and why.
#[derive(Debug, Clone)]
pub struct Choice {
    pub manifest: ModelManifest,
    pub independence: Independence,
    /// Named by the user rather than picked.
    pub explicit: bool,
    /// One line for the report.
    pub reason: String,
}

fn family(arch: &str) -> String {
    arch.split(|c: char| !(c.is_alphanumeric() || c == '-'))
        .find(|w| !w.is_empty())
        .unwrap_or_default()
        .to_lowercase()
}

/// Whether `path` (a repository path, `/`-separated) matches the glob
/// `pattern`: `*` any run of characters within one path component, `?` one
/// character, `**` any run of components; everything else literally.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = p[2..].strip_prefix(b"/").unwrap_or(&p[2..]);
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && go(rest, &s[i..]))
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| go(&p[1..], &s[i..])),
            Some(b'?') => s.first().is_some_and(|&c| c != b'/') && go(&p[1..], &s[1..]),
            Some(&c) => s.first() == Some(&c) && go(&p[1..], &s[1..]),
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

/// Whether a watched `file` is a glob rather than one path.
pub fn is_glob(file: &str) -> bool {
    file.contains(['*', '?'])
}

/// Whether TOML `text` is a zoo file (a top-level `[[model]]` array) rather
/// than a model manifest (a `[model]` table).
pub fn looks_like_zoo(text: &str) -> bool {
    toml::from_str::<toml::Table>(text)
        .ok()
        .is_some_and(|t| matches!(t.get("model"), Some(toml::Value::Array(_))))
}

/// The model manifests of `paths`, in order: a zoo file expands to its
/// models, any other file is read as one model manifest.
pub fn manifests_of(paths: &[PathBuf]) -> Result<Vec<ModelManifest>, ZooError> {
    let mut out = Vec::new();
    for path in paths {
        // Either a zoo file or a manifest: both are configuration files
        // with the same size limit.
        let text = zooaudit_formats::Format::Zoo
            .read_text(path)
            .map_err(|e| ZooError::File {
                path: path.clone(),
                message: format!("cannot read: {e}"),
            })?;
        // Parsed from the text already read: each file is read once.
        if looks_like_zoo(&text) {
            out.extend(Zoo::parse(path, &text)?.models);
        } else {
            out.push(ModelManifest::parse(path, &text)?);
        }
    }
    Ok(out)
}

impl Zoo {
    pub fn load(path: &Path) -> Result<Zoo, ZooError> {
        let text = zooaudit_formats::Format::Zoo
            .read_text(path)
            .map_err(|e| ZooError::File {
                path: path.to_path_buf(),
                message: format!("cannot read zoo file: {e}"),
            })?;
        Zoo::parse(path, &text)
    }

    /// A zoo file's text, as read from `path` (relative paths in it are
    /// resolved against `path`'s directory).
    pub fn parse(path: &Path, text: &str) -> Result<Zoo, ZooError> {
        let raw: RawZoo = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
            ZooError::File {
                path: PathBuf::from(format!("{}:{line}", path.display())),
                message: e
                    .message()
                    .lines()
                    .next()
                    .unwrap_or("invalid TOML")
                    .to_string(),
            }
        })?;
        let field = |f: &str, m: String| ZooError::Field {
            path: path.to_path_buf(),
            field: f.to_string(),
            message: m,
        };
        zooaudit_manifest::Format::Zoo
            .check_field(raw.format_version.as_deref())
            .map_err(|e| field("format_version", e))?;
        if raw.model.is_empty() {
            return Err(field("model", "the zoo lists no [[model]]".into()));
        }
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let mut models: Vec<ModelManifest> = Vec::new();
        let mut watches = Vec::new();
        for (i, e) in raw.model.iter().enumerate() {
            let m = ModelManifest::load(&base.join(&e.manifest))
                .map_err(|err| field(&format!("model[{i}].manifest"), err.to_string()))?;
            if m.provenance.publisher.trim().is_empty() {
                return Err(field(
                    &format!("model[{i}].manifest"),
                    format!(
                        "{}: [provenance] publisher is empty; a zoo needs provenance to choose independent references",
                        m.path.display()
                    ),
                ));
            }
            if models.iter().any(|o| o.model.name == m.model.name) {
                return Err(field(
                    &format!("model[{i}].manifest"),
                    format!(
                        "a second model named {}",
                        zooaudit_formats::quote(&m.model.name)
                    ),
                ));
            }
            match (&e.watch, &e.file) {
                (None, None) => {}
                (Some(w), Some(file)) => {
                    let repo = w
                        .strip_prefix("hf://")
                        .filter(|r| r.split('/').count() == 2 && !r.contains(['@', ' ']))
                        .ok_or_else(|| {
                            field(
                                &format!("model[{i}].watch"),
                                format!(
                                    "{}: expected hf://<owner>/<repo>",
                                    zooaudit_formats::quote(w)
                                ),
                            )
                        })?;
                    if file.is_empty()
                        || file.starts_with('/')
                        || file.split('/').any(|c| c == "..")
                    {
                        return Err(field(
                            &format!("model[{i}].file"),
                            format!(
                                "{}: a path inside the repository",
                                zooaudit_formats::quote(file)
                            ),
                        ));
                    }
                    watches.push(Watch {
                        model: m.model.name.clone(),
                        repo: repo.to_string(),
                        file: file.clone(),
                    });
                }
                _ => {
                    return Err(field(
                        &format!("model[{i}]"),
                        "`watch` and `file` go together".into(),
                    ));
                }
            }
            models.push(m);
        }
        Ok(Zoo {
            path: path.to_path_buf(),
            name: raw.name,
            models,
            watches,
        })
    }

    fn names(&self) -> String {
        self.models
            .iter()
            .map(|m| m.model.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Result<&ModelManifest, ZooError> {
        self.models
            .iter()
            .find(|m| m.model.name == name)
            .ok_or_else(|| ZooError::File {
                path: self.path.clone(),
                message: format!(
                    "no model named {} (the zoo has: {})",
                    zooaudit_formats::quote(name),
                    self.names()
                ),
            })
    }

    /// References for `candidate`: the `explicit` names when given (used
    /// whatever their relation), else the independent models of the zoo,
    /// best first, at most `max`. Refuses, naming each model's reason, when
    /// none is independent.
    pub fn choose_references(
        &self,
        candidate: &str,
        explicit: &[String],
        max: usize,
    ) -> Result<Vec<Choice>, ZooError> {
        let cand = self.get(candidate)?.clone();
        self.choose_references_for(&cand, explicit, max)
    }

    /// [`Zoo::choose_references`] for a candidate that need not be in the
    /// zoo (an upload): the same rule, against every zoo model but one of
    /// the candidate's name.
    pub fn choose_references_for(
        &self,
        cand: &ModelManifest,
        explicit: &[String],
        max: usize,
    ) -> Result<Vec<Choice>, ZooError> {
        let err = |m: String| ZooError::File {
            path: self.path.clone(),
            message: m,
        };
        if !explicit.is_empty() {
            return explicit
                .iter()
                .map(|name| {
                    let m = self.get(name)?;
                    if m.model.name == cand.model.name {
                        return Err(err(format!(
                            "{} is the candidate itself",
                            zooaudit_formats::quote(name)
                        )));
                    }
                    let ind = m.provenance.independence_from(&cand.provenance);
                    let reason = if ind.independent {
                        format!("named explicitly; independent: {}", ind.summary())
                    } else {
                        format!(
                            "named explicitly although NOT independent: {}",
                            ind.summary()
                        )
                    };
                    Ok(Choice {
                        manifest: m.clone(),
                        independence: ind,
                        explicit: true,
                        reason,
                    })
                })
                .collect();
        }
        let mut ranked = Vec::new();
        let mut refused = Vec::new();
        for m in self
            .models
            .iter()
            .filter(|m| m.model.name != cand.model.name)
        {
            let ind = m.provenance.independence_from(&cand.provenance);
            if !ind.independent {
                refused.push(format!("{} ({})", m.model.name, ind.summary()));
                continue;
            }
            let other_family = {
                let (a, b) = (
                    family(&m.provenance.architecture),
                    family(&cand.provenance.architecture),
                );
                !a.is_empty() && !b.is_empty() && a != b
            };
            let declared = ind
                .reasons
                .iter()
                .any(|r| r.starts_with("different training data"));
            ranked.push(((!other_family, !declared, m.model.name.clone()), m, ind));
        }
        if ranked.is_empty() {
            let why = if refused.is_empty() {
                "the zoo has no other model".to_string()
            } else {
                refused.join("; ")
            };
            return Err(err(format!(
                "no independent reference for '{}': {why}; name one explicitly to audit anyway",
                cand.model.name
            )));
        }
        ranked.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(ranked
            .into_iter()
            .take(max.max(1))
            .map(|(_, m, ind)| Choice {
                manifest: m.clone(),
                reason: format!("chosen as independent: {}", ind.summary()),
                independence: ind,
                explicit: false,
            })
            .collect())
    }
}
