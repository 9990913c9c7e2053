#![no_main]
//! An OpenSSF model-signing bundle (Sigstore bundle v0.3): the bundle's
//! structure, its signature against the key that signed the key-mode seeds
//! (bundles made by the real `model-signing` package), the statement
//! whatever the signature says, and a certificate-mode chain checked with
//! its own certificates trusted, so the path checks are reached.
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use zooaudit_modelsign::PublicKey;
use zooaudit_modelsign::bundle::{Bundle, Material, Statement};
use zooaudit_modelsign::x509::{Cert, verify_chain};
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = PublicKey::from_pem(include_str!("../seeds/model_signature-key.pub")) else {
        panic!("the seed key is a PEM public key")
    };
    let path = Path::new("fuzz.sig");
    let parsed = Bundle::parse(path, data);
    let Ok(b) = parsed else {
        return common::one_line(parsed);
    };
    common::one_line(b.verify_signature(path, &key));
    common::one_line(Statement::parse(path, &b.payload));
    if let Material::Chain(ders) = &b.material {
        let trusted: Vec<Cert> = ders
            .iter()
            .filter_map(|d| Cert::from_der(d.clone()).ok())
            .collect();
        common::one_line(verify_chain(ders, &trusted));
        common::one_line(verify_chain(ders, &[]));
    }
});
