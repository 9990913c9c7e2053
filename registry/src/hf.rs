//! `hf://<owner>/<repo>[@<revision>]/<path>`: a file in a Hugging Face hub
//! model repository, fetched through the `hf-hub` crate.
//!
//! `HF_ENDPOINT` (another hub or a mirror), `HF_HOME` (the hub's own cache,
//! `$HF_HOME/hub`) and `HF_TOKEN` (else the token file in that cache) are
//! honoured, through [`crate::FetchOptions::from_env`]. The revision (default `main`) is first resolved to its commit
//! through `/api/models/<repo>/revision/<rev>`, and the file is then fetched
//! at that commit, so the bytes and the recorded commit belong together.
//! Before hf-hub downloads, a one-byte probe (with the redirect limit) checks
//! that the file exists, that the hub serves it from the same commit, and
//! that it is within the size limit. hf-hub keeps a broken-off download as a
//! part file and resumes it on the next fetch. The file is then copied
//! through sha256 into zooaudit's content-addressed cache.
//!
//! Offline, a pinned file is taken from zooaudit's cache, else from the
//! hub's own cache (`refs/<revision>` → `snapshots/<commit>/<path>`).

use std::path::{Component, Path};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use crate::progress::Bar;
use crate::{Fetch, RegistryError, Resolved, extension_of, stream_to_temp};

/// A parsed `hf://` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HfSource {
    /// `owner/name`.
    pub repo: String,
    /// Branch, tag or commit; `None` means `main`.
    pub revision: Option<String>,
    /// Path of the file inside the repository.
    pub path: String,
}

impl HfSource {
    pub fn parse(text: &str) -> Result<HfSource, String> {
        let rest = text
            .trim()
            .strip_prefix("hf://")
            .ok_or("not an hf:// source")?;
        let mut parts = rest.splitn(3, '/');
        let owner = parts.next().unwrap_or_default();
        let name_rev = parts.next().unwrap_or_default();
        let path = parts.next().unwrap_or_default();
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(r.to_string())),
            None => (name_rev, None),
        };
        let ident = |s: &str| {
            !s.is_empty()
                && !s.starts_with(['.', '-'])
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !ident(owner) || !ident(name) {
            return Err("expected hf://<owner>/<repo>[@<revision>]/<path>".into());
        }
        if let Some(r) = &revision
            && (r.is_empty()
                || !r
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)))
        {
            return Err(format!(
                "{} is not a revision (branch, tag or commit)",
                zooaudit_formats::quote(r)
            ));
        }
        let p = Path::new(path);
        if path.is_empty()
            || path.ends_with('/')
            || p.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(format!(
                "{} is not a file path inside the repository",
                zooaudit_formats::quote(path)
            ));
        }
        Ok(HfSource {
            repo: format!("{owner}/{name}"),
            revision,
            path: path.to_string(),
        })
    }

    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// The hub's own cache: `<hf_home>/hub`, else hf-hub's default.
fn hub_cache(opts: &crate::FetchOptions) -> Cache {
    match &opts.hf_home {
        Some(home) => Cache::new(home.join("hub")),
        None => Cache::default(),
    }
}

/// hf-hub's error, with its innermost cause.
fn describe(e: &hf_hub::api::sync::ApiError) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(&format!(": {t}"));
        }
        src = s.source();
    }
    msg
}

pub(crate) fn fetch(f: &Fetch) -> Result<Resolved, RegistryError> {
    let src = HfSource::parse(f.source_text).map_err(|m| f.bad(m))?;
    let models = f.models_dir()?;
    let ext = extension_of(&src.path);
    if let Some(hit) = f.cached(&models, &ext)? {
        return Ok(hit);
    }
    let cache = hub_cache(f.opts);
    let copy_in = |path: &Path, commit: String| -> Result<Resolved, RegistryError> {
        let file =
            std::fs::File::open(path).map_err(|e| f.bad(format!("{}: {e}", path.display())))?;
        let (tmp, sha, size) = stream_to_temp(file, &models, f.opts.max_bytes, &mut |_| {})
            .map_err(|m| f.bad(format!("{}: {m}", path.display())))?;
        f.store(&models, &ext, tmp, sha, size, Some(commit))
    };
    if f.opts.offline {
        let repo = Repo::with_revision(src.repo.clone(), RepoType::Model, src.revision().into());
        if let Some(p) = cache.repo(repo).get(&src.path) {
            let commit = snapshot_commit(&p).unwrap_or_else(|| src.revision().to_string());
            return copy_in(&p, commit);
        }
        return Err(f.offline_miss());
    }
    let token = f.opts.hf_token.clone().or_else(|| cache.token());
    let hub = f
        .opts
        .hf_endpoint
        .clone()
        .unwrap_or_else(|| "https://huggingface.co".to_string())
        .trim_end_matches('/')
        .to_string();
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(hub.clone())
        .with_progress(false)
        .with_token(token.clone())
        .with_user_agent("zooaudit", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| f.bad(format!("hub client: {}", describe(&e))))?;
    let at_rev = api.repo(Repo::with_revision(
        src.repo.clone(),
        RepoType::Model,
        src.revision().to_string(),
    ));
    let info = at_rev.info().map_err(|e| {
        f.bad(format!(
            "{hub}: cannot resolve revision '{}' of {}: {}",
            src.revision(),
            src.repo,
            describe(&e)
        ))
    })?;
    let commit = info.sha.clone();
    if !info.siblings.iter().any(|s| s.rfilename == src.path) {
        return Err(f.bad(format!(
            "{hub}: {} at commit {commit} has no file '{}'",
            src.repo, src.path
        )));
    }
    let at_commit = api.repo(Repo::with_revision(
        src.repo.clone(),
        RepoType::Model,
        commit.clone(),
    ));
    let url = at_commit.url(&src.path);
    let client = crate::http::client(f.opts, hub.starts_with("https://")).map_err(|m| f.bad(m))?;
    let probe = crate::http::probe(&client, &url, token.as_deref())
        .map_err(|m| f.bad(format!("{url}: {m}")))?;
    if let Some(c) = &probe.commit
        && c != &commit
    {
        return Err(f.bad(format!(
            "{url}: the hub serves the file from commit {c}, but the revision resolved to {commit}"
        )));
    }
    let size = probe
        .size
        .ok_or_else(|| f.bad(format!("{url}: the hub did not say how large the file is")))?;
    if size > f.opts.max_bytes {
        return Err(f.bad(format!(
            "{url}: the file is {size} bytes, over the limit of {} bytes",
            f.opts.max_bytes
        )));
    }
    let bar = Bar::new(f.opts.progress, Some(size), &src.path);
    let local = at_commit
        .download_with_progress(&src.path, bar)
        .map_err(|e| {
            f.bad(format!(
                "{url}: the download failed ({}); fetch again to resume",
                describe(&e)
            ))
        })?;
    // Let offline runs find the file by the revision named in the source.
    let _ = hub_cache(f.opts)
        .repo(Repo::with_revision(
            src.repo.clone(),
            RepoType::Model,
            src.revision().to_string(),
        ))
        .create_ref(&commit);
    let got = std::fs::metadata(&local).map(|m| m.len()).unwrap_or(0);
    if got != size {
        // hf-hub took a short body for the whole file: drop it from the
        // hub's cache so that it is not served again.
        remove_snapshot(&local);
        return Err(f.bad(format!("{url}: truncated: got {got} of {size} bytes")));
    }
    copy_in(&local, commit)
}

/// `…/snapshots/<commit>/<path>` → the commit.
fn snapshot_commit(p: &Path) -> Option<String> {
    let comps: Vec<_> = p
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let i = comps.iter().rposition(|c| c == "snapshots")?;
    comps.get(i + 1).cloned()
}

fn remove_snapshot(pointer: &Path) {
    if let Ok(blob) = std::fs::canonicalize(pointer) {
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(pointer);
}

/// The files of the hub repository `repo` at `revision`, and the commit the
/// revision resolved to (for a watched file given as a glob).
pub fn list_files(
    repo: &str,
    revision: &str,
    opts: &crate::FetchOptions,
) -> Result<(String, Vec<String>), String> {
    let cache = hub_cache(opts);
    let token = opts.hf_token.clone().or_else(|| cache.token());
    let hub = opts
        .hf_endpoint
        .clone()
        .unwrap_or_else(|| "https://huggingface.co".to_string())
        .trim_end_matches('/')
        .to_string();
    let api = ApiBuilder::from_cache(cache)
        .with_endpoint(hub.clone())
        .with_progress(false)
        .with_token(token)
        .with_user_agent("zooaudit", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| format!("hub client: {}", describe(&e)))?;
    let info = api
        .repo(Repo::with_revision(
            repo.to_string(),
            RepoType::Model,
            revision.to_string(),
        ))
        .info()
        .map_err(|e| {
            format!(
                "{hub}: cannot resolve revision '{revision}' of {repo}: {}",
                describe(&e)
            )
        })?;
    Ok((
        info.sha,
        info.siblings.into_iter().map(|s| s.rfilename).collect(),
    ))
}
