//! File hazards: where a runtime may read something other than what the
//! file seems to hold, or read outside the model's directory.
//!
//! - `external-data`: a tensor whose data lives in another file named by an
//!   absolute path, a path with `..`, a path that resolves (through links)
//!   outside the model's directory, a missing file, or one shorter than the
//!   declared offset + length. The files are only looked up (metadata),
//!   never opened; a location with `..` or an absolute one is not even
//!   looked up.
//! - `dual-storage`: a tensor with typed data fields *and* `raw_data` (or
//!   external data): readers disagree on which one holds the weights.
//! - `size-mismatch`: dims × element size disagree with the stored bytes.
//! - `custom-domain`: operators outside the ONNX standard domains (a note
//!   for ONNX Runtime's own contrib domains, a warning for others, which need
//!   a custom-op library: native code).
//! - `unread-input`: graph inputs no node reads (a note).

use std::collections::{BTreeMap, HashSet};
use std::path::{Component, Path};

use zooaudit_onnx_graph::read::{Graph, Model, Tensor};

use crate::{Finding, Rule, Severity, list, node_label};

/// Standard ONNX operator domains.
const STANDARD_DOMAINS: [&str; 5] = [
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview.training",
];
/// ONNX Runtime's contrib domains: not standard, but shipped with the runtime.
const RUNTIME_DOMAINS: [&str; 4] = [
    "com.microsoft",
    "com.microsoft.nchwc",
    "com.microsoft.experimental",
    "com.ms.internal.nhwc",
];

/// Every file-hazard rule over the model and its subgraphs. `dir`: the
/// model's directory (`None`: external files are not looked up).
pub fn check(model: &Model, dir: Option<&Path>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut domains: BTreeMap<String, Vec<String>> = BTreeMap::new();
    walk(&model.graph, "main", dir, &mut out, &mut domains);
    for o in &model.opsets {
        domains.entry(o.domain.clone()).or_default();
    }
    for (domain, nodes) in domains {
        if STANDARD_DOMAINS.contains(&domain.as_str()) {
            continue;
        }
        let runtime = RUNTIME_DOMAINS.contains(&domain.as_str());
        let why = if nodes.is_empty() {
            "imported by the model but used by no node, so nothing runs from it"
        } else if runtime {
            "ONNX Runtime's own contrib operators: not standard ONNX, but implemented by the runtime itself"
        } else {
            "not a standard ONNX domain: running it needs a custom-operator library (native code) from wherever the model came from"
        };
        out.push(Finding {
            rule: Rule::CustomDomain,
            severity: if runtime || nodes.is_empty() {
                Severity::Note
            } else {
                Severity::Warning
            },
            message: format!(
                "operator domain '{domain}' ({} node(s){}): {why}",
                nodes.len(),
                if nodes.is_empty() {
                    String::from(", imported only")
                } else {
                    format!(": {}", list(&nodes, 8))
                }
            ),
            graph: "main".into(),
            nodes,
            tensors: vec![],
        });
    }
    unread_inputs(&model.graph, &mut out);
    out
}

fn walk(
    g: &Graph,
    where_: &str,
    dir: Option<&Path>,
    out: &mut Vec<Finding>,
    domains: &mut BTreeMap<String, Vec<String>>,
) {
    for t in &g.initializers {
        tensor(t, where_, None, dir, out);
    }
    for (i, n) in g.nodes.iter().enumerate() {
        let label = node_label(n, i);
        domains
            .entry(n.domain.clone())
            .or_default()
            .push(label.clone());
        for (_, t) in &n.tensors {
            tensor(t, where_, Some(&label), dir, out);
        }
        for (attr, sub) in &n.subgraphs {
            walk(sub, &format!("{where_}/{label}/{attr}"), dir, out, domains);
        }
    }
}

fn finding(
    rule: Rule,
    severity: Severity,
    msg: String,
    g: &str,
    node: Option<&str>,
    t: &Tensor,
) -> Finding {
    Finding {
        rule,
        severity,
        message: msg,
        graph: g.to_string(),
        nodes: node.map(|n| vec![n.to_string()]).unwrap_or_default(),
        tensors: vec![t.name.clone()],
    }
}

fn tensor(t: &Tensor, g: &str, node: Option<&str>, dir: Option<&Path>, out: &mut Vec<Finding>) {
    let external = t.data_location == 1 || !t.external.is_empty();
    let typed: Vec<&str> = t.typed.iter().map(|(k, _)| *k).collect();
    if (t.raw_len.is_some() || external) && !typed.is_empty() {
        let other = if external {
            "external data"
        } else {
            "raw_data"
        };
        out.push(finding(
            Rule::DualStorage,
            Severity::Error,
            format!(
                "tensor '{}' stores its data twice, in {} and in {other}: runtimes and readers disagree on which holds the weights, so what is inspected need not be what runs",
                t.name,
                typed.join(", ")
            ),
            g,
            node,
            t,
        ));
    }
    if external {
        external_data(t, g, node, dir, out);
    } else {
        size(t, g, node, out);
    }
}

/// Elements per entry a typed field holds for `data_type`, or `None` when
/// the field's count cannot be checked simply.
fn typed_expected(field: &str, data_type: i32, elements: u64) -> Option<u64> {
    match (field, data_type) {
        ("float_data", 1) | ("int64_data", 7) | ("double_data", 11) | ("uint64_data", 12 | 13) => {
            Some(elements)
        }
        ("float_data", 14) | ("double_data", 15) => elements.checked_mul(2),
        ("int32_data", 2..=6 | 9 | 10 | 16..=20) => Some(elements),
        _ => None,
    }
}

fn size(t: &Tensor, g: &str, node: Option<&str>, out: &mut Vec<Finding>) {
    let Some(elements) = t.declared_elements() else {
        out.push(finding(
            Rule::SizeMismatch,
            Severity::Error,
            format!(
                "tensor '{}' declares dims {:?}: negative, or more elements than can exist",
                t.name, t.dims
            ),
            g,
            node,
            t,
        ));
        return;
    };
    let mismatch = |what: String| {
        finding(
            Rule::SizeMismatch,
            Severity::Error,
            format!(
                "tensor '{}' declares dims {:?} of data type {} but {what}: a reader may take the wrong bytes, or read past them",
                t.name, t.dims, t.data_type
            ),
            g,
            node,
            t,
        )
    };
    if let Some(raw) = t.raw_len {
        if let Some(want) = t.declared_bytes()
            && want != raw
        {
            out.push(mismatch(format!("raw_data holds {raw} bytes, not {want}")));
        }
        return;
    }
    for (field, n) in &t.typed {
        if let Some(want) = typed_expected(field, t.data_type, elements)
            && want != *n
        {
            out.push(mismatch(format!("{field} holds {n} entries, not {want}")));
        }
    }
    if t.typed.is_empty() && elements > 0 && t.element_bits().is_some() {
        out.push(mismatch(String::from("it stores no data at all")));
    }
}

/// Why a location may not be looked up at all, if it may not.
fn unsafe_location(loc: &str) -> Option<&'static str> {
    let p = Path::new(loc);
    if loc.is_empty() {
        return Some("is empty");
    }
    if p.is_absolute()
        || loc.starts_with('/')
        || loc.starts_with('\\')
        || loc.get(1..2) == Some(":")
    {
        return Some("is an absolute path");
    }
    if loc.contains('\0') {
        return Some("contains a NUL byte");
    }
    if p.components().any(|c| matches!(c, Component::ParentDir))
        || loc.split(['/', '\\']).any(|c| c == "..")
    {
        return Some("climbs out with '..'");
    }
    None
}

fn external_data(
    t: &Tensor,
    g: &str,
    node: Option<&str>,
    dir: Option<&Path>,
    out: &mut Vec<Finding>,
) {
    let mut mismatches = Vec::new();
    external_location(t, g, node, dir, out, &mut mismatches);
    out.append(&mut mismatches);
}

fn external_location(
    t: &Tensor,
    g: &str,
    node: Option<&str>,
    dir: Option<&Path>,
    out: &mut Vec<Finding>,
    mismatches: &mut Vec<Finding>,
) {
    let mut bad = |why: String| {
        out.push(finding(
            Rule::ExternalData,
            Severity::Error,
            format!(
                "tensor '{}' keeps its data in another file, whose location {why}",
                t.name
            ),
            g,
            node,
            t,
        ));
    };
    let Some(loc) = t.external("location") else {
        bad(String::from("is not given"));
        return;
    };
    if let Some(why) = unsafe_location(loc) {
        bad(format!(
            "'{loc}' {why}: a runtime would read outside the model's directory"
        ));
        return;
    }
    let num = |k: &str| t.external(k).map(|v| v.trim().parse::<u64>());
    let (offset, length) = match (num("offset"), num("length")) {
        (Some(Err(_)), _) | (_, Some(Err(_))) => {
            bad(format!(
                "'{loc}' comes with an offset or length that is not a number"
            ));
            return;
        }
        (o, l) => (o.and_then(Result::ok).unwrap_or(0), l.and_then(Result::ok)),
    };
    if let (Some(len), Some(want)) = (length, t.declared_bytes())
        && len != want
    {
        mismatches.push(finding(
            Rule::SizeMismatch,
            Severity::Error,
            format!(
                "tensor '{}' declares dims {:?} ({want} bytes) but its external data length is {len}",
                t.name, t.dims
            ),
            g,
            node,
            t,
        ));
    }
    let Some(dir) = dir else { return };
    let path = dir.join(loc);
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(_) => {
            bad(format!(
                "{} does not exist beside the model",
                zooaudit_formats::quote(loc)
            ));
            return;
        }
    };
    let inside = match (path.canonicalize(), dir.canonicalize()) {
        (Ok(p), Ok(d)) => p.starts_with(&d),
        _ => false,
    };
    if !inside {
        bad(format!(
            "'{loc}' resolves (through a link) outside the model's directory"
        ));
        return;
    }
    if meta.file_type().is_symlink() {
        // Inside, but still a link: look at what it points to.
        if std::fs::metadata(&path).is_err() {
            bad(format!(
                "{} is a dangling link",
                zooaudit_formats::quote(loc)
            ));
            return;
        }
    }
    let file_len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let want = length.or(t.declared_bytes()).unwrap_or(0);
    if offset.checked_add(want).is_none_or(|end| end > file_len) {
        bad(format!(
            "'{loc}' is {file_len} bytes, shorter than offset {offset} + length {want}"
        ));
    }
}

fn read_names(g: &Graph, used: &mut HashSet<String>) {
    for n in &g.nodes {
        used.extend(n.inputs.iter().cloned());
        for (_, sub) in &n.subgraphs {
            read_names(sub, used);
            used.extend(sub.outputs.iter().cloned());
        }
    }
}

fn unread_inputs(g: &Graph, out: &mut Vec<Finding>) {
    let mut used = HashSet::new();
    read_names(g, &mut used);
    used.extend(g.outputs.iter().cloned());
    let unread: Vec<String> = g
        .inputs
        .iter()
        .filter(|i| !used.contains(*i))
        .cloned()
        .collect();
    if unread.is_empty() {
        return;
    }
    out.push(Finding {
        rule: Rule::UnreadInput,
        severity: Severity::Note,
        message: format!(
            "{} graph input(s) are read by no node ({}): leftovers (e.g. of quantisation tools); harmless to the output, but ONNX Runtime may demand them at run time",
            unread.len(),
            list(&unread, 6)
        ),
        graph: "main".into(),
        nodes: vec![],
        tensors: unread,
    });
}
