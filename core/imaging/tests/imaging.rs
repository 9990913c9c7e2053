//! Decoding limits and preprocessing layouts.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use image::{ImageBuffer, Luma, LumaA, Rgb, RgbImage, Rgba};
use zooaudit_imaging::{ImageError, Limits, Preprocess, decode, decode_bytes};
use zooaudit_manifest::{Channels, Layout};

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(png: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
    let mut body = kind.to_vec();
    body.extend_from_slice(data);
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(&body);
    png.extend_from_slice(&crc32(&body).to_be_bytes());
}

/// A 60-byte PNG whose header claims `w`×`h` pixels (a decompression bomb's header).
fn bomb_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(
        &mut png,
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    );
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_decompression_bomb_header_is_refused_before_decoding() {
    let err = decode_bytes(
        &bomb_header(20_000, 20_000),
        Path::new("bomb.png"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::TooLarge {
                width: 20_000,
                height: 20_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("bomb.png: image is 20000×20000"),
        "{err}"
    );
}

#[test]
fn sixteen_bit_grey_and_tiny_images_decode_to_rgb8() {
    let dir = tempfile::tempdir().unwrap();
    let p16 = dir.path().join("rgb16.png");
    ImageBuffer::<Rgb<u16>, _>::from_fn(4, 3, |x, _| Rgb([x as u16 * 16384, 65535, 0]))
        .save(&p16)
        .unwrap();
    let img = decode(&p16, &Limits::default()).unwrap();
    assert_eq!(img.dimensions(), (4, 3));
    assert_eq!(img.get_pixel(0, 0).0, [0, 255, 0]);
    assert_eq!(img.get_pixel(2, 0).0, [128, 255, 0]);
    let grey = dir.path().join("grey.png");
    ImageBuffer::<Luma<u8>, _>::from_pixel(1, 1, Luma([77]))
        .save(&grey)
        .unwrap();
    assert_eq!(
        decode(&grey, &Limits::default()).unwrap().get_pixel(0, 0).0,
        [77, 77, 77]
    );
}

#[test]
fn transparent_pixels_composite_over_white() {
    let dir = tempfile::tempdir().unwrap();
    // A cut-out: opaque red, fully transparent black (what such files often
    // hold under alpha 0), half-transparent blue; 8- and 16-bit.
    let p8 = dir.path().join("rgba8.png");
    ImageBuffer::<Rgba<u8>, _>::from_fn(3, 1, |x, _| match x {
        0 => Rgba([255, 0, 0, 255]),
        1 => Rgba([0, 0, 0, 0]),
        _ => Rgba([0, 0, 255, 128]),
    })
    .save(&p8)
    .unwrap();
    let img = decode(&p8, &Limits::default()).unwrap();
    assert_eq!(img.get_pixel(0, 0).0, [255, 0, 0]);
    assert_eq!(img.get_pixel(1, 0).0, [255, 255, 255]);
    assert_eq!(img.get_pixel(2, 0).0, [127, 127, 255]);
    let p16 = dir.path().join("rgba16.png");
    ImageBuffer::<Rgba<u16>, _>::from_pixel(1, 1, Rgba([0, 0, 0, 0]))
        .save(&p16)
        .unwrap();
    assert_eq!(
        decode(&p16, &Limits::default()).unwrap().get_pixel(0, 0).0,
        [255, 255, 255]
    );
    // Grey with alpha too.
    let la = dir.path().join("la.png");
    ImageBuffer::<LumaA<u8>, _>::from_pixel(1, 1, LumaA([0, 0]))
        .save(&la)
        .unwrap();
    assert_eq!(
        decode(&la, &Limits::default()).unwrap().get_pixel(0, 0).0,
        [255, 255, 255]
    );
}

#[test]
fn truncated_and_unknown_files_are_decode_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.png");
    RgbImage::from_pixel(64, 64, Rgb([1, 2, 3]))
        .save(&p)
        .unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let err = decode_bytes(
        &bytes[..bytes.len() / 2],
        Path::new("half.png"),
        &Limits::default(),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("half.png: not a decodable image"),
        "{err}"
    );
    let err = decode_bytes(b"hello", Path::new("t.jpg"), &Limits::default()).unwrap_err();
    assert!(
        err.to_string().contains("t.jpg") && err.to_string().contains("unknown format"),
        "{err}"
    );
}

#[test]
fn preprocessing_orders_channels_normalises_and_lays_out() {
    let mut img = RgbImage::new(2, 1);
    img.put_pixel(0, 0, Rgb([10, 20, 30]));
    img.put_pixel(1, 0, Rgb([40, 50, 60]));
    let mut p = Preprocess {
        height: 1,
        width: 2,
        layout: Layout::NCHW,
        channels: Channels::BGR,
        mean: [0.0, 10.0, 20.0],
        std: [1.0, 2.0, 4.0],
    };
    let mut out = vec![0f32; 6];
    p.write(&img, Path::new("i.png"), &mut out).unwrap();
    // NCHW, model channel 0 = B, 1 = G, 2 = R.
    assert_eq!(out, vec![30.0, 60.0, 5.0, 20.0, -2.5, 5.0]);
    p.layout = Layout::NHWC;
    p.write(&img, Path::new("i.png"), &mut out).unwrap();
    assert_eq!(out, vec![30.0, 5.0, -2.5, 60.0, 20.0, 5.0]);
    p.height = 2;
    let err = p
        .write(&img, Path::new("i.png"), &mut [0f32; 12])
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("i.png: image is 2×1 but the model expects 2×2"),
        "{err}"
    );
}
