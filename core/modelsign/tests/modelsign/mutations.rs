//! Mutations, as the DSSE envelope's property tests do them: no one-byte
//! change to a bundle, to the signed statement (re-signed, so only the
//! statement's checks stand between it and acceptance), to a certificate,
//! or to the model makes a signature vouch for anything else; arbitrary
//! bytes never verify; nothing panics; every refusal is one line.

use std::path::PathBuf;
use std::sync::OnceLock;

use proptest::prelude::*;
use zooaudit_modelsign::{
    PrivateKey, SignError, Trust, Verified, bundle, hash_model, sign_key, verify,
};

struct Fixture {
    _dir: tempfile::TempDir,
    model: PathBuf,
    key: PrivateKey,
    bundle: Vec<u8>,
    good: Verified,
}

/// A directory model, a deterministic P-256 key and our bundle over it.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("m");
        std::fs::create_dir_all(model.join("sub")).unwrap();
        std::fs::write(model.join("a.txt"), b"A").unwrap();
        std::fs::write(model.join("sub/w.bin"), [1u8, 2, 3, 4, 5, 6, 7, 8]).unwrap();
        let key = PrivateKey::generate_p256();
        let sig = dir.path().join("m.sig");
        let bundle = sign_key(&model, &sig, &key).unwrap();
        std::fs::write(&sig, &bundle).unwrap();
        let good = verify(&model, &sig, &Trust::Key(key.public())).unwrap();
        Fixture {
            _dir: dir,
            model,
            key,
            bundle: bundle.into_bytes(),
            good,
        }
    })
}

/// Verifies `bytes` as the signature over the fixture's model.
fn check(f: &Fixture, bytes: &[u8], name: &str) -> Result<Verified, SignError> {
    let p = f.model.parent().unwrap().join(format!("{name}.sig"));
    std::fs::write(&p, bytes).unwrap();
    verify(&f.model, &p, &Trust::Key(f.key.public()))
}

fn same(v: &Verified, good: &Verified) -> bool {
    v.root_sha256 == good.root_sha256 && v.resources == good.resources && v.files == good.files
}

fn one_line(e: &SignError) -> bool {
    !e.to_string().contains('\n')
}

/// The fixture's statement, one byte changed, re-signed with its key.
fn resigned(f: &Fixture, pos: usize, byte: u8) -> Vec<u8> {
    let digest = hash_model(&f.model, &[]).unwrap();
    let mut payload = bundle::statement_json(&digest, &[]);
    let i = pos % payload.len();
    payload[i] = byte;
    bundle::key_bundle(&payload, &f.key).into_bytes()
}

fn thread_name() -> String {
    format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_alphanumeric(), "")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    /// One byte of the bundle's JSON replaced: it still vouches for exactly
    /// the same model (JSON whitespace, an escape that decodes the same,
    /// the unauthenticated hint or keyid) or it is refused in one line.
    #[test]
    fn mutated_bundles_never_vouch_for_anything_else(pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let f = fixture();
        let mut b = f.bundle.clone();
        let i = pos.index(b.len());
        b[i] = byte;
        match check(f, &b, &format!("b{}", thread_name())) {
            Ok(v) => prop_assert!(same(&v, &f.good)),
            Err(e) => prop_assert!(one_line(&e), "{}", e),
        }
    }

    /// One byte of the signed statement changed and signed again: the
    /// statement's own checks (types, one subject, the resources hashing
    /// to it, the files on disk) accept only what still means this model.
    #[test]
    fn mutated_statements_signed_again_never_vouch_for_anything_else(pos in any::<usize>(), byte in any::<u8>()) {
        let f = fixture();
        let b = resigned(f, pos, byte);
        match check(f, &b, &format!("s{}", thread_name())) {
            Ok(v) => prop_assert!(same(&v, &f.good)),
            Err(e) => prop_assert!(one_line(&e), "{}", e),
        }
    }

    /// Arbitrary bytes never verify.
    #[test]
    fn arbitrary_bytes_never_verify(input in proptest::collection::vec(any::<u8>(), 0..800)) {
        let f = fixture();
        let r = check(f, &input, &format!("r{}", thread_name()));
        prop_assert!(r.is_err());
        prop_assert!(one_line(&r.unwrap_err()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// One byte of one model file changed: always refused.
    #[test]
    fn a_changed_model_byte_is_always_refused(file in 0usize..2, pos in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let f = fixture();
        let copy = tempfile::tempdir().unwrap();
        let m = copy.path().join("m");
        std::fs::create_dir_all(m.join("sub")).unwrap();
        for rel in ["a.txt", "sub/w.bin"] {
            std::fs::copy(f.model.join(rel), m.join(rel)).unwrap();
        }
        let target = m.join(["a.txt", "sub/w.bin"][file]);
        let mut bytes = std::fs::read(&target).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] ^= flip;
        std::fs::write(&target, &bytes).unwrap();
        let sig = copy.path().join("m.sig");
        std::fs::write(&sig, &f.bundle).unwrap();
        let e = verify(&m, &sig, &Trust::Key(f.key.public())).unwrap_err().to_string();
        prop_assert!(e.contains("changed since they were signed"), "{}", e);
        prop_assert!(e.contains(target.to_str().unwrap()), "{}", e);
    }
}

/// Certificate mode: a chain bundle (signed by the real package in the
/// certificate test's PKI) with one byte of one certificate changed is
/// refused, or (a change DER and the checks cannot see) names the same
/// signer for the same model.
#[test]
fn mutated_certificates_never_vouch_for_anything_else() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let tmp = tempfile::tempdir().unwrap();
    let (model, _) = super::models(tmp.path());
    let pki = super::certificate::pki(tmp.path());
    let sig = tmp.path().join("leaf.sig");
    super::certificate::sign(&model, &pki, "leaf", "int", &sig);
    let trust = Trust::chain_files(&[pki.join("root.pem")]).unwrap();
    let good = verify(&model, &sig, &trust).unwrap();
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(&sig).unwrap()).unwrap();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(600));
    let out = tmp.path().join("mutated.sig");
    runner
        .run(
            &(0usize..2, any::<prop::sample::Index>(), 1u8..=255),
            |(which, pos, flip)| {
                let mut b = bundle.clone();
                let cert = &mut b["verificationMaterial"]["x509CertificateChain"]["certificates"]
                    [which]["rawBytes"];
                let mut der = b64.decode(cert.as_str().unwrap()).unwrap();
                let i = pos.index(der.len());
                der[i] ^= flip;
                *cert = b64.encode(&der).into();
                std::fs::write(&out, serde_json::to_vec(&b).unwrap()).unwrap();
                match verify(&model, &out, &trust) {
                    Ok(v) => {
                        prop_assert_eq!(&v.signer, &good.signer);
                        prop_assert_eq!(&v.root_sha256, &good.root_sha256);
                    }
                    Err(e) => prop_assert!(one_line(&e), "{}", e),
                }
                Ok(())
            },
        )
        .unwrap();
}
