//! Static scan of ONNX model files for architectural (graph) backdoors and
//! file hazards, before any face is embedded.
//!
//! Why a static scan beside pairing: pairing sees a backdoor only when a
//! trigger wakes it. A backdoor spliced into the graph (a side branch that
//! reads the raw input, computes a trigger score, and gates a stored vector
//! into the output) also leaves a mark in the file itself, and finding it
//! needs no reference model and no faces. A backdoor trained into the
//! weights leaves no such mark: that is what pairing is for.
//!
//! The scan decodes the whole model with the wire-level reader of
//! `zooaudit-onnx-graph` ([`zooaudit_onnx_graph::read`]) within [`Limits`],
//! never reads a byte outside the model file (external-data files are only
//! looked up, never opened), and reports [`Finding`]s: a rule, a
//! [`Severity`], the nodes and tensors involved, and why. The rules are in
//! [`structure`] (graph shape) and [`hazards`] (file hazards); docs/SCAN.md
//! describes each, with what it cannot catch. The decision never looks at
//! names: a node is judged by what it computes and where it sits.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use zooaudit_onnx_graph::GraphError;
pub use zooaudit_onnx_graph::read::Limits;

pub mod hazards;
mod ops;
pub mod output;
pub mod structure;

/// Version of the JSON output (`zooaudit scan --json`).
pub const FORMAT_VERSION: zooaudit_formats::FormatVersion =
    zooaudit_formats::Format::ScanOutput.current();

/// How serious a finding is. Ordered: `Note < Warning < Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing, not an alarm (e.g. graph inputs no node reads).
    Note,
    /// A structure a backdoor would need, or a file a runtime may read
    /// differently from what it seems.
    Warning,
    /// A backdoor's signature or a file hazard that must be refused.
    Error,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// The rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Rule {
    #[serde(rename = "trunk-bypass")]
    TrunkBypass,
    #[serde(rename = "input-pattern-gate")]
    InputPatternGate,
    #[serde(rename = "stored-output-constant")]
    StoredOutputConstant,
    #[serde(rename = "control-flow-on-output")]
    ControlFlowOnOutput,
    #[serde(rename = "graph-cycle")]
    GraphCycle,
    #[serde(rename = "too-large-to-analyse")]
    TooLarge,
    #[serde(rename = "external-data")]
    ExternalData,
    #[serde(rename = "dual-storage")]
    DualStorage,
    #[serde(rename = "size-mismatch")]
    SizeMismatch,
    #[serde(rename = "custom-domain")]
    CustomDomain,
    #[serde(rename = "unread-input")]
    UnreadInput,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::TrunkBypass,
        Rule::InputPatternGate,
        Rule::StoredOutputConstant,
        Rule::ControlFlowOnOutput,
        Rule::GraphCycle,
        Rule::TooLarge,
        Rule::ExternalData,
        Rule::DualStorage,
        Rule::SizeMismatch,
        Rule::CustomDomain,
        Rule::UnreadInput,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Rule::TrunkBypass => "trunk-bypass",
            Rule::InputPatternGate => "input-pattern-gate",
            Rule::StoredOutputConstant => "stored-output-constant",
            Rule::ControlFlowOnOutput => "control-flow-on-output",
            Rule::GraphCycle => "graph-cycle",
            Rule::TooLarge => "too-large-to-analyse",
            Rule::ExternalData => "external-data",
            Rule::DualStorage => "dual-storage",
            Rule::SizeMismatch => "size-mismatch",
            Rule::CustomDomain => "custom-domain",
            Rule::UnreadInput => "unread-input",
        }
    }

    /// One line: what the rule looks for.
    pub fn summary(self) -> &'static str {
        match self {
            Rule::TrunkBypass => {
                "A path from a graph input to a graph output that passes through almost none of the model's weights"
            }
            Rule::InputPatternGate => {
                "A side branch compares the raw input with a stored pattern and gates its score into the output"
            }
            Rule::StoredOutputConstant => {
                "A stored constant shaped like one output row is mixed into the output"
            }
            Rule::ControlFlowOnOutput => "Control flow (If/Loop/Scan) on the path to an output",
            Rule::GraphCycle => "The graph is not acyclic",
            Rule::TooLarge => "A graph too large for the structural rules (not analysed)",
            Rule::ExternalData => {
                "External data that is absolute, escapes the model's directory, or is missing"
            }
            Rule::DualStorage => "A tensor stores its data twice (typed fields and raw_data)",
            Rule::SizeMismatch => "A tensor's declared size and its stored bytes disagree",
            Rule::CustomDomain => "Operators from a domain outside the ONNX standard",
            Rule::UnreadInput => "Graph inputs that no node reads",
        }
    }

    /// The severity the rule reports at most (SARIF default level).
    pub fn default_severity(self) -> Severity {
        match self {
            Rule::UnreadInput => Severity::Note,
            Rule::TrunkBypass
            | Rule::StoredOutputConstant
            | Rule::ControlFlowOnOutput
            | Rule::GraphCycle
            | Rule::TooLarge
            | Rule::CustomDomain => Severity::Warning,
            _ => Severity::Error,
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub rule: Rule,
    pub severity: Severity,
    /// Why, in one paragraph.
    pub message: String,
    /// The graph it is in: `main`, or `<node>/<attribute>` for subgraphs.
    pub graph: String,
    /// Nodes involved (names; `<op>#<index>` for unnamed nodes).
    pub nodes: Vec<String>,
    /// Tensors involved.
    pub tensors: Vec<String>,
}

/// Thresholds of the structural rules.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub limits: Limits,
    /// Largest file read, in bytes.
    pub max_file_bytes: u64,
    /// A path bypasses the trunk when it passes through less than this
    /// fraction of the weight bytes behind the output.
    pub bypass_fraction: f64,
    /// Outputs with fewer weight bytes behind them than this have no trunk
    /// to bypass.
    pub min_trunk_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            limits: Limits::default(),
            max_file_bytes: 4 << 30,
            bypass_fraction: 0.01,
            min_trunk_bytes: 64 << 10,
        }
    }
}

/// A scan that could not be done. One line, naming the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is more than the scan reads ({limit})")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("{path}: {source}")]
    Graph { path: PathBuf, source: GraphError },
}

/// What a scan found in one model.
#[derive(Debug, Clone, Serialize)]
pub struct ScanReport {
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: u64,
    pub ir_version: u64,
    pub producer: String,
    pub nodes: usize,
    pub initializers: usize,
    /// Ordered by severity (highest first), then rule.
    pub findings: Vec<Finding>,
    /// Time to decode the model and run the rules (not reading the file,
    /// not hashing it).
    #[serde(skip)]
    pub elapsed: Duration,
}

impl ScanReport {
    /// The highest severity found, if any.
    pub fn worst(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// Whether any finding is above a note.
    pub fn flagged(&self) -> bool {
        self.worst().is_some_and(|s| s > Severity::Note)
    }
}

/// Reads and scans the model at `path`. External-data locations are
/// resolved against its directory.
pub fn scan_file(path: &Path, opts: &Options) -> Result<ScanReport, ScanError> {
    let io = |source| ScanError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        // A directory, FIFO or device: reading it could fail or block.
        return Err(io(std::io::Error::other("not a regular file")));
    }
    let size = meta.len();
    if size > opts.max_file_bytes {
        return Err(ScanError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit: opts.max_file_bytes,
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    scan_bytes(path, &bytes, Some(&dir), opts)
}

/// Scans a model held in memory. `path` names it in messages; `dir` is
/// where its external data would be (`None`: not looked up).
pub fn scan_bytes(
    path: &Path,
    bytes: &[u8],
    dir: Option<&Path>,
    opts: &Options,
) -> Result<ScanReport, ScanError> {
    let start = Instant::now();
    let graph_err = |source| ScanError::Graph {
        path: path.to_path_buf(),
        source,
    };
    let model = zooaudit_onnx_graph::read::read_model(bytes, &opts.limits).map_err(graph_err)?;
    let mut findings = hazards::check(&model, dir);
    findings.extend(structure::check(&model.graph, opts));
    findings.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| a.rule.id().cmp(b.rule.id()))
    });
    let elapsed = start.elapsed();
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };
    Ok(ScanReport {
        path: path.to_path_buf(),
        sha256,
        bytes: bytes.len() as u64,
        ir_version: model.ir_version,
        producer: model.producer.clone(),
        nodes: model.graph.nodes.len(),
        initializers: model.graph.initializers.len(),
        findings,
        elapsed,
    })
}

/// A node's display name: its name, else `<op>#<index>`.
pub(crate) fn node_label(node: &zooaudit_onnx_graph::read::Node, index: usize) -> String {
    if node.name.is_empty() {
        format!("{}#{index}", node.op_type)
    } else {
        node.name.clone()
    }
}

/// At most `max` names, then "… and N more".
pub(crate) fn list(names: &[String], max: usize) -> String {
    if names.len() <= max {
        names.join(", ")
    } else {
        format!(
            "{}, … and {} more",
            names[..max].join(", "),
            names.len() - max
        )
    }
}
