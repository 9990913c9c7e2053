//! Trigger suites: parsing, sweeps, stamping, controls, and bad input.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use zooaudit_triggers::{Kind, Suite};

fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../triggers")
        .join(name)
}

fn grey() -> RgbImage {
    RgbImage::from_pixel(112, 112, Rgb([128, 128, 128]))
}

/// The pixels a stamp changed on [`grey`].
fn footprint(img: &RgbImage) -> Vec<(u32, u32)> {
    img.enumerate_pixels()
        .filter(|(_, _, p)| p.0 != [128, 128, 128])
        .map(|(x, y, _)| (x, y))
        .collect()
}

/// Black pixels.
fn ink(img: &RgbImage) -> usize {
    img.pixels().filter(|p| p.0 == [0, 0, 0]).count()
}

#[test]
fn the_paper_suite_places_its_triggers_where_the_paper_says() {
    let suite = Suite::load(&shipped("paper.toml")).unwrap();
    assert_eq!(suite.triggers.len(), 2);
    let stamps = suite.stamps(112, 112).unwrap();
    let board = stamps[0].apply(&grey()).unwrap();
    // The checkerboard is centred at 60 % of the height and 40 % of the width.
    let changed: Vec<(u32, u32)> = board
        .enumerate_pixels()
        .filter(|(_, _, p)| p.0 != [128, 128, 128])
        .map(|(x, y, _)| (x, y))
        .collect();
    let (cx, cy) = changed.iter().fold((0.0, 0.0), |(a, b), (x, y)| {
        (a + f64::from(*x), b + f64::from(*y))
    });
    let (cx, cy) = (cx / changed.len() as f64, cy / changed.len() as f64);
    assert!(
        (cy - 0.6 * 112.0).abs() < 1.5 && (cx - 0.4 * 112.0).abs() < 1.5,
        "centre ({cx}, {cy})"
    );
    assert!(
        board.pixels().any(|p| p.0 == [0, 0, 0]) && board.pixels().any(|p| p.0 == [255, 255, 255])
    );
    // The small square: white around one black pixel at the centre.
    let sq = stamps[1].apply(&grey()).unwrap();
    assert_eq!(sq.get_pixel(56, 56).0, [0, 0, 0]);
    assert_eq!(sq.get_pixel(55, 56).0, [255, 255, 255]);
    assert_eq!(sq.get_pixel(50, 56).0, [128, 128, 128]);
}

#[test]
fn the_default_suite_expands_sweeps_and_is_deterministic() {
    let a = Suite::load(&shipped("default.toml")).unwrap();
    // 4 centres × 2 sizes + 3 × 2 + 2 stickers + 1 blend.
    assert_eq!(a.triggers.len(), 8 + 6 + 2 + 1);
    assert!(
        a.triggers
            .iter()
            .any(|t| t.kind == Kind::Patch && t.file_sha256.is_some())
    );
    let b = Suite::load(&shipped("default.toml")).unwrap();
    let (sa, sb) = (a.stamps(112, 112).unwrap(), b.stamps(112, 112).unwrap());
    for (x, y) in sa.iter().zip(&sb) {
        assert_eq!(x.apply(&grey()), y.apply(&grey()));
    }
    // The blend changes every pixel a little.
    let blend = sa.last().unwrap().apply(&grey()).unwrap();
    let max = blend
        .pixels()
        .map(|p| (i32::from(p.0[0]) - 128).abs())
        .max()
        .unwrap();
    assert!(max > 0 && max <= 11, "{max}");
}

#[test]
fn a_control_keeps_the_footprint_and_ink_but_not_the_pattern() {
    let suite = Suite::load(&shipped("paper.toml")).unwrap();
    let stamp = &suite.stamps(112, 112).unwrap()[0];
    let control = stamp.control(1);
    let (t, c) = (
        stamp.apply(&grey()).unwrap(),
        control.apply(&grey()).unwrap(),
    );
    assert_eq!(footprint(&t), footprint(&c));
    assert_eq!(ink(&t), ink(&c));
    assert_ne!(t, c);
    assert_eq!(stamp.coverage(), control.coverage());
}

#[test]
fn a_fit_control_moves_whole_cells_and_is_uncorrelated_with_the_trigger() {
    let suite = Suite::load(&shipped("paper.toml")).unwrap();
    let board = &suite.stamps(112, 112).unwrap()[0];
    let t = board.apply(&grey()).unwrap();
    // The checkerboard: 28 px at (top 53, left 31), 4 × 4 cells of 7 px.
    for seed in 0..20u64 {
        let fc = board.fit_control(seed);
        let c = fc.apply(&grey()).unwrap();
        // Same footprint and ink as the trigger.
        assert_eq!(footprint(&t), footprint(&c));
        assert_eq!(ink(&t), ink(&c));
        // Every 7 × 7 cell is still one colour: the texture scale is kept.
        let (top, left) = (footprint(&t)[0].1, footprint(&t)[0].0);
        for cy in 0..4 {
            for cx in 0..4 {
                let first = c.get_pixel(left + cx * 7, top + cy * 7).0;
                for dy in 0..7 {
                    for dx in 0..7 {
                        assert_eq!(c.get_pixel(left + cx * 7 + dx, top + cy * 7 + dy).0, first);
                    }
                }
            }
        }
        // Not the trigger, nor its inverse: the arrangement is uncorrelated.
        let ncc = board.pattern_correlation(&fc);
        assert!(
            ncc.abs() <= zooaudit_triggers::FIT_CONTROL_MAX_NCC,
            "seed {seed}: ncc {ncc}"
        );
        assert_ne!(t, c);
        // Deterministic in its seed.
        assert_eq!(board.fit_control(seed).apply(&grey()), Some(c));
    }
    assert!((board.pattern_correlation(board) - 1.0).abs() < 1e-12);
    // A square's unit is the pixel: its fit control is the matched control.
    let square = &suite.stamps(112, 112).unwrap()[1];
    assert_eq!(
        square.fit_control(3).apply(&grey()),
        square.control(3).apply(&grey())
    );
}

fn parse_err(text: &str) -> String {
    Suite::parse(Path::new("s.toml"), text)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_suites_name_the_file_and_field() {
    let head = "format_version = \"1.0\"\n[[trigger]]\nname = \"t\"\n";
    assert!(
        parse_err(&format!("{head}kind = \"checkerboard\"\nsize = 1.5\n"))
            .starts_with("s.toml: trigger[0].size:")
    );
    assert!(
        parse_err(&format!("{head}kind = \"square\"\ncenter = [1.2, 0.5]\n"))
            .starts_with("s.toml: trigger[0].center:")
    );
    assert!(
        parse_err(&format!("{head}kind = \"patch\"\n")).starts_with("s.toml: trigger[0].file:")
    );
    assert!(
        parse_err(&format!("{head}kind = \"blend\"\npattern = \"stripes\"\n"))
            .starts_with("s.toml: trigger[0].pattern:")
    );
    assert!(parse_err(&format!("{head}kind = \"laser\"\n")).starts_with("s.toml:4:"));
    assert!(
        parse_err("[[trigger]]\nname = \"t\"\nkind = \"square\"\n")
            .starts_with("s.toml: format_version: missing")
    );
    assert!(parse_err("format_version = \"1.0\"\n").starts_with("s.toml: trigger:"));
    // A trigger that does not fit inside the face.
    let s = Suite::parse(
        Path::new("s.toml"),
        &format!("{head}kind = \"checkerboard\"\ncenter = [0.95, 0.5]\nsize = 0.3\n"),
    )
    .unwrap();
    let e = s.stamps(112, 112).unwrap_err().to_string();
    assert!(
        e.starts_with("s.toml: trigger[0].center:") && e.contains("does not fit"),
        "{e}"
    );
    let s = Suite::parse(
        Path::new("s.toml"),
        &format!("{head}kind = \"checkerboard\"\nsize = 1.0\n"),
    )
    .unwrap();
    let e = s.stamps(64, 112).unwrap_err().to_string();
    assert!(
        e.starts_with("s.toml: trigger[0].size:") && e.contains("larger than the 64×112 face"),
        "{e}"
    );
}

/// Sizes a stranger's suite could use to spend memory are refused before
/// they are: a sweep of more triggers than a suite holds, a checkerboard
/// finer than any face, a pattern file over the size limit, a pattern
/// image larger than the decoder's limits (a PNG header claiming
/// 60000×60000 pixels).
#[test]
fn oversized_suites_and_patterns_are_refused_before_memory_is_spent() {
    let head = "format_version = \"1.0\"\n[[trigger]]\nname = \"t\"\n";
    let list = |n: usize| {
        let sizes: Vec<String> = (1..=n)
            .map(|i| format!("{:.4}", i as f64 / (n + 1) as f64))
            .collect();
        format!("[{}]", sizes.join(", "))
    };
    let e = parse_err(&format!(
        "{head}kind = \"square\"\nsizes = {}\ncenters = [{}]\n",
        list(2000),
        vec!["[0.5, 0.5]"; 2000].join(", ")
    ));
    assert!(
        e.starts_with("s.toml: trigger[0].centers: 2000 centres × 2000 sizes is 4000000 triggers, over the limit of 1024"),
        "{e}"
    );
    let mut many = String::from("format_version = \"1.0\"\n");
    for i in 0..3 {
        many += &format!(
            "[[trigger]]\nname = \"t{i}\"\nkind = \"square\"\nsizes = {}\n",
            list(400)
        );
    }
    let e = parse_err(&many);
    assert!(
        e.starts_with("s.toml: trigger[2].name: the suite holds more than 1024 triggers"),
        "{e}"
    );
    let e = parse_err(&format!("{head}kind = \"checkerboard\"\ncells = 100000\n"));
    assert!(
        e.starts_with("s.toml: trigger[0].cells: must be in 1..=256"),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.png");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(zooaudit_triggers::MAX_PATTERN_BYTES + 1)
        .unwrap();
    let suite = dir.path().join("s.toml");
    let e = Suite::parse(
        &suite,
        &format!("{head}kind = \"patch\"\nfile = \"big.png\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("trigger[0].file:") && e.contains("over the limit of 16777216 bytes"),
        "{e}"
    );
    // A real PNG header that claims 60000×60000: refused by the decoder's
    // limits when the trigger is stamped, not allocated.
    let mut png = Vec::new();
    image::RgbImage::new(1, 1)
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    png[16..20].copy_from_slice(&60000u32.to_be_bytes());
    png[20..24].copy_from_slice(&60000u32.to_be_bytes());
    let crc = crc32(&png[12..29]);
    png[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(dir.path().join("huge.png"), &png).unwrap();
    let s = Suite::parse(
        &suite,
        &format!("{head}kind = \"patch\"\nfile = \"huge.png\"\nsize = 0.3\n"),
    )
    .unwrap();
    let e = s.stamps(112, 112).unwrap_err().to_string();
    assert!(
        e.contains("trigger[0].file:") && e.contains("huge.png") && e.contains("limit"),
        "{e}"
    );
    assert_eq!(e.lines().count(), 1, "{e}");
}

/// CRC-32 (IEEE) of a PNG chunk's type and data.
fn crc32(bytes: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in bytes {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 == 1 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}
