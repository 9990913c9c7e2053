#![no_main]
//! A DSSE envelope and its in-toto statement. The envelope is verified
//! against the key that signed the seed (a real audit's attestation), and
//! its payload is parsed as a statement whatever the signature says, so the
//! statement parser is reached by every mutation.
use libfuzzer_sys::fuzz_target;
use zooaudit_attest::dsse::{Envelope, Policy, decode_b64};
use zooaudit_attest::keys::PublicKey;
use zooaudit_attest::statement::Statement;
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(key) = PublicKey::from_pem(include_str!("../seeds/dsse-key.pub")) else {
        panic!("the seed key is a PEM public key")
    };
    common::one_line(zooaudit_attest::verify_statement(
        data,
        &[key.clone()],
        Policy::AllMustVerify,
    ));
    let Ok(env) = Envelope::parse(data) else {
        return;
    };
    common::one_line(env.verify(&[key], Policy::AnyTrusted));
    if let Ok(payload) = decode_b64(&env.payload) {
        common::one_line(Statement::from_payload(&payload));
    }
});
