//! Decoding parity with ultralytics' `imread` (cv2.imdecode IMREAD_COLOR, libjpeg-turbo 3.1 in
//! opencv-python 5.0): every fixture in tests/fixtures/decode/ (made by
//! scripts/fixtures/make_decode.py) must decode to identical pixels, and `image_size` (headers
//! only) must give the decoded size.

use std::path::{Path, PathBuf};

use kubeyolo::data::image::{decode_rgb, image_size, load_rgb};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/decode")
}

struct Case {
    name: String,
    file: String,
    width: u32,
    height: u32,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("manifest.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest json");
    v["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| Case {
            name: c["name"].as_str().unwrap().to_string(),
            file: c["file"].as_str().unwrap().to_string(),
            width: c["width"].as_u64().unwrap() as u32,
            height: c["height"].as_u64().unwrap() as u32,
        })
        .collect()
}

#[test]
fn every_fixture_decodes_to_cv2_pixels() {
    let cases = cases();
    assert!(cases.len() >= 40, "fixture set shrank: {}", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let img = match load_rgb(&dir().join(&c.file)) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{}: {e}", c.name));
                continue;
            }
        };
        let want = std::fs::read(dir().join(format!("{}.rgb", c.name))).unwrap();
        if (img.width(), img.height()) != (c.width, c.height) {
            failures.push(format!("{}: size {}x{}, cv2 {}x{}", c.name, img.width(), img.height(), c.width, c.height));
            continue;
        }
        let got = img.as_raw();
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        let max = got.iter().zip(&want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap_or(0);
        if diff > 0 {
            failures.push(format!("{}: {diff} of {} samples differ (max {max})", c.name, got.len()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures differ from cv2:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn header_size_is_the_decoded_size() {
    for c in cases() {
        let s = image_size(&dir().join(&c.file)).unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(s, (c.width, c.height), "{}", c.name);
    }
}

/// The fixtures discriminate: the `image` crate's own JPEG decoder (what kubeyolo used before)
/// does not reproduce them, and ignoring EXIF would not either.
#[test]
fn fixtures_reject_other_decoders() {
    let differs = ["jpeg_420", "jpeg_422", "jpeg_progressive"].iter().any(|n| {
        let bytes = std::fs::read(dir().join(format!("{n}.jpg"))).unwrap();
        let other = image::load_from_memory(&bytes).unwrap().to_rgb8();
        other.as_raw() != &std::fs::read(dir().join(format!("{n}.rgb"))).unwrap()
    });
    assert!(differs, "zune-jpeg matches cv2 on every fixture: the fixtures do not test the decoder");
    let rotated = load_rgb(&dir().join("exif_6.jpg")).unwrap();
    let plain = load_rgb(&dir().join("exif_1.jpg")).unwrap();
    assert_eq!((plain.width(), plain.height()), (rotated.height(), rotated.width()));
}

#[test]
fn corrupt_input_is_an_error_not_a_panic() {
    let good = std::fs::read(dir().join("jpeg_420.jpg")).unwrap();
    assert!(decode_rgb(&[]).is_err());
    assert!(decode_rgb(b"not an image at all").is_err());
    assert!(decode_rgb(&good[..20]).is_err(), "a JPEG cut inside its header");
    let mut bad = good.clone();
    let sof = bad.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bad[sof + 5] = 0; // height 0
    bad[sof + 6] = 0;
    let e = decode_rgb(&bad).unwrap_err();
    assert!(e.to_string().contains("JPEG"), "{e}");
    // Truncated after the header: libjpeg pads the missing rows (a warning) and decoding succeeds.
    let cut = decode_rgb(&good[..good.len() * 2 / 3]).unwrap();
    assert_eq!((cut.width(), cut.height()), (45, 37));
    // Header-only size of a file that is not an image.
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("x.jpg");
    std::fs::write(&p, &good[..4]).unwrap();
    let e = image_size(&p).unwrap_err();
    assert!(e.to_string().contains("x.jpg"), "{e}");
}
