//! The root module and detector trait of plugin ABI **1.0**, frozen.
//!
//! abi_stable lets a host load a plugin built for a *newer* minor (its
//! prefix types may have more fields than the host knows), but not an
//! *older* one: a 1.0 plugin's detector vtable has fewer methods than 1.1's,
//! and the layout check refuses it. So the host keeps every earlier
//! minor's interface and loads a plugin through the newest one whose layout
//! it matches: 1.1 first, then this. The types here have the same names,
//! fields and order as 1.0 shipped them (abi_stable compares type names,
//! package names and fields, not module paths); everything they share with
//! 1.1 unchanged is taken from the crate root. Never edit this module.
#![allow(non_local_definitions)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RBox, RResult, RString, RVec},
};

use super::{EmbeddingsRef, ModelBox, OpenRequest, PluginDescriptor, PluginError};

/// The 1.0 detector: fit and score, no export.
#[sabi_trait]
pub trait Detector: Send {
    /// Fits on clean paired embeddings; returns a JSON fit report.
    fn fit(
        &mut self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RString, PluginError>;

    /// One agreement score per row.
    #[sabi(last_prefix_field)]
    fn score(
        &self,
        probe: EmbeddingsRef<'_>,
        reference: EmbeddingsRef<'_>,
    ) -> RResult<RVec<f32>, PluginError>;
}

/// An owned 1.0 detector.
pub type DetectorBox = Detector_TO<'static, RBox<()>>;

/// The 1.0 root module.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(option))]
pub struct PluginMod {
    pub describe: extern "C" fn() -> PluginDescriptor,
    pub open_model: extern "C" fn(request: OpenRequest) -> RResult<ModelBox, PluginError>,
    #[sabi(last_prefix_field)]
    pub new_detector: extern "C" fn(options_json: RString) -> RResult<DetectorBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "zooaudit_plugin";
    const NAME: &'static str = "zooaudit_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
