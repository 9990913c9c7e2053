//! The report's records of what the audit ran on: plugins, models, faces
//! and split, trigger suite.

use zooaudit_embed::Embedder;
use zooaudit_host::Plugin;
use zooaudit_triggers::Suite;

use crate::embedding::{ModelRole, SuiteStamps};
use crate::faces::{self, Face, Role};
use crate::report::{
    DataRecord, ModelRecord, PluginRecordFull, SplitRecord, TriggerRecord, TriggerSuiteRecord,
};
use crate::spec::AuditSpec;

fn plugin_record(p: &zooaudit_host::PluginInfo) -> PluginRecordFull {
    PluginRecordFull {
        name: p.name.clone(),
        version: p.version.clone(),
        abi_version: p.abi_version.clone(),
        sha256: p.sha256.clone(),
        path: p.path.display().to_string(),
    }
}

/// Every adapter plugin the models opened with (once each), then the detector.
pub(crate) fn plugins(
    opened: &[(Embedder, ModelRole)],
    detector: &Plugin,
) -> Vec<PluginRecordFull> {
    let mut out: Vec<PluginRecordFull> = Vec::new();
    for (e, _) in opened {
        let p = e.model().plugin();
        if !out.iter().any(|r| r.sha256 == p.sha256) {
            out.push(plugin_record(p));
        }
    }
    out.push(plugin_record(detector.info()));
    out
}

/// Every model, with its role, file, pin, provenance and why it was chosen.
pub(crate) fn models(spec: &AuditSpec, opened: &[(Embedder, ModelRole)]) -> Vec<ModelRecord> {
    opened
        .iter()
        .map(|(e, role)| ModelRecord {
            role: role.as_str().to_string(),
            name: e.manifest().model.name.clone(),
            manifest: e.manifest().path.display().to_string(),
            source: e.manifest().model.source.clone(),
            file: e.resolved().path.display().to_string(),
            sha256: e.resolved().sha256.clone(),
            dim: e.dim(),
            provenance: e.manifest().provenance.clone(),
            pinned: e.resolved().pinned,
            revision: e.resolved().revision.clone(),
            selection: spec
                .selection
                .iter()
                .find(|(p, _)| p == &e.manifest().path)
                .map(|(_, r)| r.clone()),
            model_signing_root: zooaudit_modelsign::file_root(&e.resolved().sha256)
                .unwrap_or_default(),
            endpoint: e.resolved().endpoint.clone(),
            signature: e.signature().cloned(),
        })
        .collect()
}

/// The faces (`faces`: the originals, without augmented copies), their
/// digest and split.
pub(crate) fn data(
    spec: &AuditSpec,
    faces: &[Face],
    augmented_fit_copies: usize,
    identities: usize,
    aligner: Option<&zooaudit_faces::FaceDetector<'_>>,
) -> DataRecord {
    let count = |r: Role| faces.iter().filter(|f| f.role == r).count();
    let mut digests: Vec<&str> = faces.iter().map(|f| f.sha256.as_str()).collect();
    digests.sort_unstable();
    DataRecord {
        aligned_by: aligner.map(|d| {
            format!(
                "{} (sha256 {}), 5-point similarity onto the 112×112 template",
                d.manifest().model.name,
                d.model_sha256()
            )
        }),
        faces: faces.len(),
        labeled: faces.iter().filter(|f| f.identity.is_some()).count(),
        identities,
        digest: faces::sha256_bytes(digests.join("\n").as_bytes()),
        split: SplitRecord {
            seed: spec.split_seed,
            fit: count(Role::Fit),
            calibration: count(Role::Calibration),
            heldout: count(Role::Heldout),
        },
        augmented_fit_copies,
        augment: spec.augment.clone(),
    }
}

/// The trigger suite file and every trigger's definition and coverage.
pub(crate) fn triggers(
    spec: &AuditSpec,
    suite: &Suite,
    stamps: &SuiteStamps,
) -> TriggerSuiteRecord {
    TriggerSuiteRecord {
        suite: spec.triggers.display().to_string(),
        sha256: zooaudit_registry::sha256_file(&spec.triggers).unwrap_or_default(),
        triggers: suite
            .triggers
            .iter()
            .zip(&stamps.triggers)
            .map(|(t, s)| TriggerRecord {
                name: t.name.clone(),
                kind: format!("{:?}", t.kind).to_lowercase(),
                coverage: s.coverage(),
                definition: t.key(),
            })
            .collect(),
    }
}
