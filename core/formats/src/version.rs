//! Every persisted format's version, in one place: one `{major, minor}`
//! type, one table of what this build writes, one readable-by rule (a reader
//! reads every minor of its major and refuses another major, saying which
//! side is newer).

use std::fmt;
use std::path::Path;

use crate::ReportError;

/// A `{major}.{minor}` format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FormatVersion {
    pub major: u32,
    pub minor: u32,
}

impl FormatVersion {
    pub const fn new(major: u32, minor: u32) -> FormatVersion {
        FormatVersion { major, minor }
    }

    /// Refuses a file of another major version than `reader`'s.
    pub fn check_readable_by(self, reader: FormatVersion) -> Result<(), String> {
        if self.major == reader.major {
            Ok(())
        } else if self.major > reader.major {
            Err(format!(
                "format_version {self} was written by a newer zooaudit; this one reads {}.x",
                reader.major
            ))
        } else {
            Err(format!(
                "format_version {self} is older than this zooaudit supports ({}.x)",
                reader.major
            ))
        }
    }
}

impl fmt::Display for FormatVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for FormatVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{} is not MAJOR.MINOR", crate::quote(s));
        let (a, b) = s.split_once('.').ok_or_else(bad)?;
        let major = a.trim().parse().map_err(|_| bad())?;
        let minor = b.trim().parse().map_err(|_| bad())?;
        Ok(FormatVersion { major, minor })
    }
}

/// Every file zooaudit writes or reads that carries a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Format {
    /// A model manifest (TOML).
    ModelManifest,
    /// An audit file (TOML).
    AuditFile,
    /// A trigger suite (TOML).
    TriggerSuite,
    /// A zoo file (TOML).
    Zoo,
    /// report.json.
    Report,
    /// The attestation predicate (`formatVersion`, inside a signed statement).
    Predicate,
    /// A pair bundle for the guard (JSON).
    PairBundle,
    /// A red-team attack record (`.attack.json`).
    AttackRecord,
    /// The JSON sidecar beside an embeddings `.npy`.
    EmbeddingsSidecar,
    /// `zooaudit scan --json` output.
    ScanOutput,
}

impl Format {
    /// Every format, in the order docs/ARCHITECTURE.md lists them.
    pub const ALL: [Format; 10] = [
        Format::ModelManifest,
        Format::AuditFile,
        Format::TriggerSuite,
        Format::Zoo,
        Format::Report,
        Format::Predicate,
        Format::PairBundle,
        Format::AttackRecord,
        Format::EmbeddingsSidecar,
        Format::ScanOutput,
    ];

    /// The version this build writes (and the major it reads).
    pub const fn current(self) -> FormatVersion {
        match self {
            // 1.1: `[signature]`, the publisher's model-signing bundle.
            Format::ModelManifest => FormatVersion::new(1, 1),
            Format::AuditFile
            | Format::TriggerSuite
            | Format::EmbeddingsSidecar
            | Format::ScanOutput => FormatVersion::new(1, 0),
            // 1.3: each candidate is also a subject by its model-signing
            // root digest; models carry their publisher signature.
            // 1.2: `staticScan`, each model file's scan.
            Format::Predicate => FormatVersion::new(1, 3),
            // 1.1: `calibration`, `sources` (clean FNMR per face source) and
            // `history` (thresholds replaced by `pair recalibrate`).
            // 2.0: `detector` (plugin, version, sha256, options, exported
            // state) replaces `translator`; 1.x still reads (as pairing).
            Format::PairBundle => FormatVersion::new(2, 0),
            // 1.1: `hiding`, how the injected subgraph hides from the scan.
            Format::AttackRecord => FormatVersion::new(1, 1),
            // 1.1: an entry may watch a hub repository (`watch`, `file`).
            Format::Zoo => FormatVersion::new(1, 1),
            // 1.8: a model behind an inference API has an `endpoint` (and
            // an empty sha256, unpinned).
            // 1.7: each model's `modelSigningRoot` and, when its manifest
            // names one, the publisher `signature` verified.
            // 1.6: `notes`, the diagnostic notes with why the verdict
            // does not follow one. 1.5: `scan`, each model file's scan.
            Format::Report => FormatVersion::new(1, 8),
        }
    }

    /// The largest file of this format a reader accepts, in bytes: a
    /// configuration file (manifest, audit, trigger suite, zoo) 1 MiB;
    /// bundles, attack records, sidecars and scan output 64 MiB (a bundle
    /// holds a translator's weights); a report or predicate 256 MiB. A file
    /// over it is refused before it is read.
    pub const fn max_bytes(self) -> u64 {
        match self {
            Format::ModelManifest | Format::AuditFile | Format::TriggerSuite | Format::Zoo => {
                1 << 20
            }
            Format::PairBundle
            | Format::AttackRecord
            | Format::EmbeddingsSidecar
            | Format::ScanOutput => 64 << 20,
            Format::Report | Format::Predicate => 256 << 20,
        }
    }

    /// Reads a file of this format as text, refusing one over
    /// [`Format::max_bytes`] before reading it (the error says its size and
    /// the limit).
    pub fn read_text(self, path: &Path) -> Result<String, std::io::Error> {
        String::from_utf8(self.read_bytes(path)?)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }

    /// [`Format::read_text`] as bytes.
    pub fn read_bytes(self, path: &Path) -> Result<Vec<u8>, std::io::Error> {
        use std::io::Read;
        let file = std::fs::File::open(path)?;
        let limit = self.max_bytes();
        let too_big = |size: u64| {
            std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "{size} bytes, over the {} limit of {limit} bytes",
                    self.name()
                ),
            )
        };
        let size = file.metadata()?.len();
        if size > limit {
            return Err(too_big(size));
        }
        // The file may grow while it is read: never take more than the limit.
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(limit + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > limit {
            return Err(too_big(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// What the format is, for messages.
    pub const fn name(self) -> &'static str {
        match self {
            Format::ModelManifest => "model manifest",
            Format::AuditFile => "audit file",
            Format::TriggerSuite => "trigger suite",
            Format::Zoo => "zoo file",
            Format::Report => "audit report",
            Format::Predicate => "attestation predicate",
            Format::PairBundle => "pair bundle",
            Format::AttackRecord => "attack record",
            Format::EmbeddingsSidecar => "embeddings sidecar",
            Format::ScanOutput => "scan output",
        }
    }

    /// The `format_version` field of a configuration file (TOML): missing,
    /// malformed or of another major gives the message for that field.
    pub fn check_field(self, found: Option<&str>) -> Result<FormatVersion, String> {
        let current = self.current();
        let text = found
            .ok_or_else(|| format!("missing; add `format_version = \"{current}\"` at the top"))?;
        let v: FormatVersion = text.parse()?;
        v.check_readable_by(current)?;
        Ok(v)
    }

    /// Parses the `format_version` found in `path` and checks that this
    /// build reads it; the error is one line naming the file.
    pub fn check(self, path: &Path, found: &str) -> Result<FormatVersion, ReportError> {
        let v: FormatVersion = found.parse().map_err(|e| {
            ReportError::format(path, format!("format_version: {e} (a {})", self.name()))
        })?;
        v.check_readable_by(self.current())
            .map_err(|e| ReportError::format(path, e))?;
        Ok(v)
    }
}
