#![no_main]
//! The guard's request handling up to the models: a body as `/v1/embed`
//! takes it (one image) and as `/v1/embed/batch` takes it (JSON of base64
//! images), decoded within the guard's limits and checked against the
//! pair's face size.
use libfuzzer_sys::fuzz_target;
use zooaudit_guard::request::{IMAGE_LIMITS, batch_images, decode_face};
mod common;

fuzz_target!(|data: &[u8]| {
    common::one_line(decode_face(data, "request body", &IMAGE_LIMITS, [112, 112]));
    let Ok(slots) = batch_images(data, 64) else {
        return;
    };
    for (i, slot) in slots.into_iter().enumerate() {
        if let Ok(bytes) = slot {
            common::one_line(decode_face(
                &bytes,
                &format!("images[{i}]"),
                &IMAGE_LIMITS,
                [112, 112],
            ));
        }
    }
});
