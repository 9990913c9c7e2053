//! `zooaudit init MODEL_OR_SOURCE`: fetches (pinned), inspects, and writes
//! a manifest whose preprocessing is measured on labeled faces
//! ([`zooaudit_embed::infer`]), refusing to guess when two candidates are
//! too close to tell apart.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use zooaudit_embed::infer::{self, Inference};
use zooaudit_manifest::{Channels, ModelManifest};

use super::plugins;

#[derive(clap::Args, Debug)]
pub struct InitArgs {
    /// A model file, or a source (`hf://…`, `https://…`, `pypi:…`, `npm:…`),
    /// or a model behind the Open Inference Protocol (`oip+http://HOST/v2/models/NAME`).
    #[arg(value_name = "MODEL_OR_SOURCE")]
    source: String,
    /// Labeled faces: one directory per identity, aligned to the model's
    /// input size (default: ../shared/zoo/faces/aligned112/labeled, or
    /// $ZOOAUDIT_SHARED/zoo/faces/aligned112/labeled, when present).
    #[arg(long, value_name = "LABELED_DIR")]
    faces: Option<PathBuf>,
    /// Where to write the manifest.
    #[arg(long, value_name = "FILE", default_value = "model.toml")]
    out: PathBuf,
    /// The model's name (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// The adapter plugin that opens it (default: `http` for an
    /// `oip+http(s)://` source, else `onnx`).
    #[arg(long)]
    adapter: Option<String>,
    /// The sha256 the source must have (otherwise the fetched file's digest
    /// is written as the pin).
    #[arg(long)]
    sha256: Option<String>,
    /// Only this channel order (when you know it).
    #[arg(long, value_parser = ["RGB", "BGR"])]
    channels: Option<String>,
    /// Only this normalisation (one of the names `init` prints).
    #[arg(long)]
    normalisation: Option<String>,
    /// Replace an existing manifest.
    #[arg(long)]
    force: bool,
}

impl InitArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        if let Some(n) = &self.normalisation
            && !infer::NORMALISATIONS.iter().any(|x| x.name == n)
        {
            let names: Vec<&str> = infer::NORMALISATIONS.iter().map(|x| x.name).collect();
            bail!("--normalisation {n:?}: not one of {}", names.join(", "));
        }
        if self.out.exists() && !self.force {
            bail!("{}: exists (use --force to replace it)", self.out.display());
        }
        let faces_dir = match &self.faces {
            Some(d) => d.clone(),
            None => default_faces()
                .context("no labeled faces: give --faces DIR (one directory per identity)")?,
        };
        let mut fetch = zooaudit_registry::FetchOptions::from_env();
        fetch.allow_unpinned = true;
        let here = std::env::current_dir()?;
        let resolved = zooaudit_registry::resolve_with(
            Path::new("<command line>"),
            &self.source,
            &here,
            self.sha256.as_deref(),
            &fetch,
        )?;
        let remote = resolved.endpoint.is_some();
        let adapter_name = self
            .adapter
            .clone()
            .unwrap_or_else(|| if remote { "http" } else { "onnx" }.to_string());
        let set = plugins(dirs);
        let adapter = set.model_adapter(&adapter_name)?;
        let model = adapter
            .open_model(&resolved.path, &serde_json::json!({}))
            .map_err(|e| anyhow::anyhow!("{}: {e}", resolved.path.display()))?;
        let summary = model.summary().clone();
        drop(model);
        let input = summary.input().context("the model has no input")?;
        let output = summary.output().context("the model has no output")?;
        let (layout, size) = layout_of(&input.shape).with_context(|| {
            format!(
                "{}: input '{}' has shape {:?}: not an image batch [N,3,H,W] or [N,H,W,3] with a fixed size",
                resolved.path.display(),
                input.name,
                input.shape
            )
        })?;
        let name = self.name.clone().unwrap_or_else(|| {
            resolved
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        let source = if Path::new(&self.source).exists() {
            std::path::absolute(&self.source)?.display().to_string()
        } else {
            self.source.clone()
        };
        let text = |channels: &str, mean: [f32; 3], std: [f32; 3], comment: &str| {
            format!(
                "format_version = \"1.1\"\n\n[model]\nname = {name:?}\nsource = {source:?}\n{sha}adapter = {adapter:?}\n\n{comment}[input]\nname = {iname:?}\nsize = [{h}, {w}]\nlayout = \"{layout}\"\nchannels = \"{channels}\"\nmean = {mean:?}\nstd = {std:?}\n\n[output]\nname = {oname:?}\n\n[provenance]\npublisher = \"\"\narchitecture = \"\"\ntraining_data = \"\"\nlicense = \"\"\npublished_in = {source:?}\n",
                sha = if remote {
                    String::new()
                } else {
                    format!("sha256 = \"{}\"\n", resolved.sha256)
                },
                adapter = adapter_name,
                iname = input.name,
                oname = output.name,
                h = size[0],
                w = size[1],
            )
        };
        let provisional = text("RGB", [0.0; 3], [1.0; 3], "");
        let manifest = ModelManifest::parse(&self.out, &provisional)?;
        let vetted = zooaudit_embed::Vetted {
            resolved: resolved.clone(),
            signature: None,
        };
        let mut embedder = zooaudit_embed::Embedder::open_resolved(manifest, vetted, &set)?;
        let faces = labeled_faces(&faces_dir)?;
        let opts = self.options();
        let inference = infer::infer(&mut embedder, &faces, &opts, &mut |done, total| {
            eprintln!("init: preprocessing {done}/{total}");
        })?;
        print!("{}", table(&inference));
        let Some(best) = inference.chosen() else {
            return Err(refusal(&inference));
        };
        let chosen = best.candidate.input(&embedder.manifest().input);
        let comment = comment(&inference);
        let channels = format!("{:?}", chosen.channels);
        let final_text = text(&channels, chosen.mean, chosen.std, &comment);
        ModelManifest::parse(&self.out, &final_text)?;
        zooaudit_formats::write_atomic(&self.out, final_text.as_bytes())?;
        println!(
            "wrote {} ({}, {}): fill in [provenance] before auditing",
            self.out.display(),
            best.candidate.label(),
            if remote {
                "remote: no sha256 pin; pin the server's model_version in [model.options]"
                    .to_string()
            } else {
                format!("sha256 {}", resolved.sha256)
            }
        );
        Ok(0)
    }
}

impl InitArgs {
    /// What `--channels` and `--normalisation` fix.
    fn options(&self) -> infer::Options {
        infer::Options {
            channels: self.channels.as_deref().map(|c| {
                if c == "BGR" {
                    Channels::BGR
                } else {
                    Channels::RGB
                }
            }),
            normalisation: self.normalisation.clone(),
            ..Default::default()
        }
    }
}

/// Why `init` will not pick between the two best candidates.
fn refusal(inference: &infer::Inference) -> anyhow::Error {
    let (a, b) = (
        &inference.scored[inference.classes[0][0]],
        inference.runner_up(),
    );
    anyhow::anyhow!(
        "refusing to guess: {} (d' {:.2}) and {} (d' {:.2}) are too close on {} faces of {} identities (difference {:.2}, 95% interval [{:.2}, {:.2}], identity bootstrap); give --channels or --normalisation, or more labeled identities with --faces",
        a.candidate.label(),
        a.separation.dprime,
        b.map(|b| b.candidate.label()).unwrap_or_default(),
        b.map(|b| b.separation.dprime).unwrap_or(f64::NAN),
        inference.images,
        inference.identities,
        inference.difference,
        inference.ci95[0],
        inference.ci95[1]
    )
}

/// `(layout, [height, width])` of an image-batch input shape.
fn layout_of(shape: &[i64]) -> Option<(&'static str, [i64; 2])> {
    match shape {
        [_, 3, h, w] if *h > 0 && *w > 0 => Some(("NCHW", [*h, *w])),
        [_, h, w, 3] if *h > 0 && *w > 0 => Some(("NHWC", [*h, *w])),
        _ => None,
    }
}

fn default_faces() -> Option<PathBuf> {
    let shared = std::env::var_os("ZOOAUDIT_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("../shared"));
    let d = shared.join("zoo/faces/aligned112/labeled");
    d.is_dir().then_some(d)
}

/// (image, identity) for every image under `dir/<identity>/`.
fn labeled_faces(dir: &Path) -> Result<Vec<(PathBuf, String)>> {
    let images = zooaudit_imaging::collect_images(&[dir.to_path_buf()])?;
    Ok(images
        .into_iter()
        .filter_map(|p| {
            let rel = p.strip_prefix(dir).ok()?;
            let id = rel
                .components()
                .next()?
                .as_os_str()
                .to_string_lossy()
                .into_owned();
            (rel.components().count() >= 2).then_some((p, id))
        })
        .collect())
}

/// The measurements, one candidate per line, best first.
fn table(inf: &Inference) -> String {
    let mut s = format!(
        "{:<26} {:>7} {:>9} {:>9}  CLASS\n",
        "PREPROCESSING", "d'", "GENUINE", "IMPOSTOR"
    );
    for sc in &inf.scored {
        s.push_str(&format!(
            "{:<26} {:>7.3} {:>9.3} {:>9.3}  {}\n",
            sc.candidate.label(),
            sc.separation.dprime,
            sc.separation.genuine_mean,
            sc.separation.impostor_mean,
            sc.class + 1
        ));
    }
    s
}

/// The manifest comment: how the winner was chosen.
fn comment(inf: &Inference) -> String {
    let win = &inf.scored[inf.classes[0][0]];
    let same: Vec<String> = inf.classes[0][1..]
        .iter()
        .map(|&i| inf.scored[i].candidate.label())
        .collect();
    let mut c = format!(
        "# Preprocessing inferred by `zooaudit init` on {} labeled faces of {} identities:\n# {} separates genuine from impostor pairs best (d' {:.3}: genuine cosine {:.3}, impostor {:.3}).\n",
        inf.images,
        inf.identities,
        win.candidate.label(),
        win.separation.dprime,
        win.separation.genuine_mean,
        win.separation.impostor_mean
    );
    if let Some(r) = inf.runner_up() {
        c.push_str(&format!(
            "# Runner-up: {} (d' {:.3}); difference {:.3}, 95% interval [{:.3}, {:.3}] ({} identity-bootstrap resamples).\n",
            r.candidate.label(),
            r.separation.dprime,
            inf.difference,
            inf.ci95[0],
            inf.ci95[1],
            inf.resamples
        ));
    }
    if !same.is_empty() {
        c.push_str(&format!(
            "# Equivalent (embeddings agree, mean cosine >= 0.999): {}.\n",
            same.join(", ")
        ));
    }
    c
}
