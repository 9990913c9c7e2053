//! What the guard makes of a request body before any model runs: the
//! batch endpoint's JSON (`{"images": ["<base64>", ...]}`) split into image
//! bytes, and an image body decoded within the limits and checked against
//! the pair's face size. Pure functions of the bytes, so they are fuzzed
//! without the models (`tests/fuzz`, target `guard_request`).

use std::path::PathBuf;

use base64::Engine;
use image::RgbImage;

use crate::pair::DecideError;

/// The limits the guard decodes request images with: aligned faces are
/// small, so a body that decodes to more than 4096×4096 or needs more than
/// 128 MiB is refused before it is decoded.
pub const IMAGE_LIMITS: zooaudit_imaging::Limits = zooaudit_imaging::Limits {
    max_width: 4096,
    max_height: 4096,
    max_alloc: 128 << 20,
};

/// The images of a batch body: each slot holds the decoded base64 bytes or
/// why that one is bad (`images[i]: not base64: …`); the whole body is
/// refused when it is not `{"images": [strings]}` or holds no image or more
/// than `max_batch`.
pub fn batch_images(body: &[u8], max_batch: usize) -> Result<Vec<Result<Vec<u8>, String>>, String> {
    let list: Vec<String> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("images").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| "expected {\"images\": [\"<base64>\", ...]}".to_string())?;
    if list.is_empty() || list.len() > max_batch {
        return Err(format!("a batch holds 1 to {max_batch} images"));
    }
    Ok(list
        .iter()
        .enumerate()
        .map(|(i, b64)| {
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| format!("images[{i}]: not base64: {e}"))
        })
        .collect())
}

/// Decodes an image body within `limits` and checks that it is an aligned
/// face of `[height, width]`; `name` names it in the error.
pub fn decode_face(
    bytes: &[u8],
    name: &str,
    limits: &zooaudit_imaging::Limits,
    [h, w]: [u32; 2],
) -> Result<RgbImage, DecideError> {
    let img =
        zooaudit_imaging::decode_bytes(bytes, &PathBuf::from(name), limits).map_err(
            |e| match e {
                zooaudit_imaging::ImageError::TooLarge { .. } => {
                    DecideError::TooLarge(e.to_string())
                }
                other => DecideError::BadImage(other.to_string()),
            },
        )?;
    if (img.height(), img.width()) != (h, w) {
        return Err(DecideError::BadImage(format!(
            "{name}: image is {}×{}, but the pair expects aligned {w}×{h} faces",
            img.width(),
            img.height()
        )));
    }
    Ok(img)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_body_splits_into_slots_and_bad_bodies_are_refused() {
        let slots = batch_images(br#"{"images": ["AAEC", "%%"]}"#, 4).unwrap();
        assert_eq!(slots[0].as_deref(), Ok(&[0u8, 1, 2][..]));
        assert!(
            slots[1]
                .as_ref()
                .unwrap_err()
                .starts_with("images[1]: not base64")
        );
        for body in [&b"{}"[..], b"[1]", br#"{"images": [1]}"#, b"\xff"] {
            assert!(batch_images(body, 4).unwrap_err().starts_with("expected"));
        }
        assert!(batch_images(br#"{"images": []}"#, 4).is_err());
        assert!(batch_images(br#"{"images": ["", "", ""]}"#, 2).is_err());
    }

    #[test]
    fn a_face_of_the_wrong_size_or_not_an_image_is_a_bad_image() {
        let mut png = Vec::new();
        image::RgbImage::new(3, 2)
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        assert_eq!(
            decode_face(&png, "x", &IMAGE_LIMITS, [2, 3])
                .unwrap()
                .dimensions(),
            (3, 2)
        );
        let e = decode_face(&png, "body", &IMAGE_LIMITS, [112, 112]).unwrap_err();
        assert!(
            matches!(e, DecideError::BadImage(ref m) if m.contains("3×2")),
            "{e}"
        );
        let e = decode_face(b"not an image", "body", &IMAGE_LIMITS, [2, 3]).unwrap_err();
        assert!(matches!(e, DecideError::BadImage(_)), "{e}");
    }
}
