//! `plugins`, `inspect`, `embed` and `fetch`: models and the plugins that
//! open them.

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use zooaudit_embed::Embedder;
use zooaudit_manifest::ModelManifest;

use super::plugins;

fn open(dirs: &[PathBuf], manifest: &Path) -> Result<Embedder> {
    let manifest = ModelManifest::load(manifest)?;
    let set = plugins(dirs);
    Ok(Embedder::open(manifest, &set)?)
}

#[derive(clap::Args, Debug)]
pub struct PluginsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

impl PluginsArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let set = plugins(dirs);
        if self.json {
            let infos: Vec<_> = set.plugins.iter().map(|p| p.info()).collect();
            println!("{}", serde_json::to_string_pretty(&infos)?);
            return Ok(0);
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
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// Model manifest (TOML).
    #[arg(long, value_name = "MANIFEST")]
    model: PathBuf,
}

impl InspectArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let e = open(dirs, &self.model)?;
        let s = e.model().summary();
        println!(
            "model     {} ({})",
            e.manifest().model.name,
            e.resolved().path.display()
        );
        match &e.resolved().endpoint {
            Some(url) => println!("sha256    none (remote at {url}: cannot be pinned by sha256)"),
            None => println!("sha256    {}", e.resolved().sha256),
        }
        let plugin = e.model().plugin();
        println!(
            "adapter   {} {} (ABI {})",
            plugin.name, plugin.version, plugin.abi_version
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
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct EmbedArgs {
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
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,
    /// Image files or directories (walked recursively, sorted by path).
    #[arg(required = true, value_name = "IMAGES")]
    inputs: Vec<PathBuf>,
}

impl EmbedArgs {
    pub fn run(self, dirs: &[PathBuf]) -> Result<u8> {
        let mut e = open(dirs, &self.model)?;
        e.batch = self.batch as usize;
        let files = zooaudit_imaging::collect_images(&self.inputs)?;
        if files.is_empty() {
            let inputs: Vec<String> = self
                .inputs
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            bail!("no images (.png/.jpg/.jpeg) found in {}", inputs.join(", "));
        }
        let bar = indicatif::ProgressBar::new(files.len() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {pos}/{len} images ({per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(e.manifest().model.name.clone());
        let result = e.embed_images(&files, self.skip_bad, &mut |done, _| {
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
        let sidecar = emb.write_npy(&e, &self.out)?;
        let skipped = if emb.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {}", emb.skipped.len())
        };
        eprintln!(
            "wrote {} ({} × {}) and {}{skipped}",
            self.out.display(),
            emb.rows,
            emb.dim,
            sidecar.display(),
        );
        Ok(0)
    }
}

#[derive(clap::Args, Debug)]
pub struct FetchArgs {
    /// Model manifests or zoo files (TOML).
    #[arg(required = true, value_name = "MANIFEST|ZOO")]
    manifests: Vec<PathBuf>,
    /// Fetch sources that have no sha256 pin and print their digests
    /// (also: ZOOAUDIT_ALLOW_UNPINNED=1).
    #[arg(long)]
    allow_unpinned: bool,
}

impl FetchArgs {
    pub fn run(self) -> Result<u8> {
        let mut opts = zooaudit_registry::FetchOptions::from_env();
        opts.allow_unpinned |= self.allow_unpinned;
        opts.progress = true;
        let mut rows = Vec::new();
        for m in zooaudit_registry::zoo::manifests_of(&self.manifests)? {
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
            if let Some(sig) = zooaudit_embed::signature::check(&m, &r, &opts)? {
                let v = &sig.verified;
                eprintln!(
                    "  publisher signature verified ({} mode, {}): {}, root digest {}",
                    serde_json::to_value(v.mode)?.as_str().unwrap_or("?"),
                    sig.covers,
                    v.signer,
                    v.root_sha256
                );
                for i in &v.ignored {
                    eprintln!("  warning: the signer left {i} out of the signature");
                }
            }
            let pin = if r.pinned {
                ", sha256 pin verified"
            } else {
                ", NOT PINNED: add the sha256 below to the manifest"
            };
            eprintln!(
                "  {} bytes in {secs:.1} s ({:.1} MB/s){pin}",
                r.size,
                r.size as f64 / secs.max(1e-3) / 1e6,
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
        Ok(0)
    }
}
