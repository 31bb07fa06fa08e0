//! A deterministic synthetic detection dataset: coloured shapes on textured backgrounds.
//!
//! Tests, the demo and the benchmarks need a real dataset in ultralytics' layout without
//! downloading anything. [`generate`] writes one:
//!
//! ```text
//! <dir>/data-synth.yaml            path: . , train/val/test folders, names
//! <dir>/images/{train,val,test}/<split>_00000.png
//! <dir>/labels/{train,val,test}/<split>_00000.txt   cls cx cy w h (normalised)
//! ```
//!
//! - Classes are shapes: circle, square, triangle, cross, ring, diamond. With more than six
//!   classes, class `k` is shape `k % 6` in hue band `k / 6` (so colour tells them apart); with
//!   six or fewer, colours are random and only the shape matters.
//! - Backgrounds are muted noise, gradients, stripes or checkers; objects are saturated colours.
//! - Objects never overlap and each label box is the exact pixel extent of what was drawn, so the
//!   labels are exact (a detector can in principle reach mAP 1.0).
//! - A fraction of images have no objects (ultralytics "backgrounds", empty label file).
//! - Everything is a function of the seed: image `i` of a split uses its own ChaCha stream, so
//!   the output is byte-identical for any thread count.
//!
//! Files are written to a hidden temporary name and renamed, so a crash never leaves a partial
//! image or label; the yaml is written last, so a dataset with a yaml is complete.

use std::path::{Path, PathBuf};

use image::{ImageEncoder, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::data::labels::{format_label_text, LabelBox};
use crate::error::{Error, Result};
use crate::files::write_atomic;

/// The shapes, in class order.
pub const SHAPES: &[&str] = &["circle", "square", "triangle", "cross", "ring", "diamond"];

/// Split names in the order of [`SynthSpec::images_per_split`].
pub const SPLIT_NAMES: [&str; 3] = ["train", "val", "test"];

/// Marker file: a folder holding it was written by [`generate`] and may be regenerated in place.
const MARKER: &str = ".kubeyolo-synth";

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthSpec {
    /// Images in train, val and test (test may be 0: no test split in the yaml).
    pub images_per_split: [usize; 3],
    /// Image size in pixels (the longer side when `rect`).
    pub imgsz: u32,
    /// Number of classes (≥ 1); see [`class_names`].
    pub nc: usize,
    /// Objects per image: 1..=max_objects (fewer when they do not fit without overlapping).
    pub max_objects: usize,
    /// Fraction of images with no objects at all (empty label file).
    pub background_fraction: f32,
    /// Non-square images (short side 60–100% of `imgsz`), to exercise letterboxing.
    pub rect: bool,
    pub seed: u64,
    /// JPEG (quality 90) instead of PNG.
    pub jpeg: bool,
    /// File name of the data yaml written in the dataset folder.
    pub yaml_name: String,
}

impl Default for SynthSpec {
    /// 64/16/16 images of 128 px, 4 classes, up to 4 objects, 10% backgrounds, PNG, seed 0.
    fn default() -> Self {
        SynthSpec {
            images_per_split: [64, 16, 16],
            imgsz: 128,
            nc: 4,
            max_objects: 4,
            background_fraction: 0.1,
            rect: false,
            seed: 0,
            jpeg: false,
            yaml_name: "data-synth.yaml".into(),
        }
    }
}

/// Class names for `nc` classes: the shape names, suffixed `-2`, `-3`, … past six classes.
pub fn class_names(nc: usize) -> Vec<String> {
    (0..nc)
        .map(|k| {
            let shape = SHAPES[k % SHAPES.len()];
            match k / SHAPES.len() {
                0 => shape.to_string(),
                band => format!("{shape}-{}", band + 1),
            }
        })
        .collect()
}

/// Write the dataset into `dir` and return the path of its data yaml.
///
/// `dir` must not already hold `images/` or `labels/` unless an earlier [`generate`] made them
/// (then they are replaced).
pub fn generate(dir: &Path, spec: &SynthSpec) -> Result<PathBuf> {
    check_spec(spec)?;
    let marker = dir.join(MARKER);
    for sub in ["images", "labels"] {
        let p = dir.join(sub);
        let non_empty = std::fs::read_dir(&p).map(|mut r| r.next().is_some()).unwrap_or(false);
        if non_empty {
            if !marker.exists() {
                return Err(Error::usage(format!("{} already exists and was not made by the generator", p.display()))
                    .with_hint("choose an empty folder for the synthetic dataset"));
            }
            std::fs::remove_dir_all(&p).map_err(|e| Error::io_at(&p, "remove the old synthetic images", e))?;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io_at(dir, "create the dataset folder", e))?;
    std::fs::write(&marker, b"written by kubeyolo::data::synth::generate\n")
        .map_err(|e| Error::io_at(&marker, "write", e))?;

    let ext = if spec.jpeg { "jpg" } else { "png" };
    let mut jobs = Vec::new();
    for (s, &n) in spec.images_per_split.iter().enumerate() {
        if n == 0 {
            continue;
        }
        for sub in ["images", "labels"] {
            let d = dir.join(sub).join(SPLIT_NAMES[s]);
            std::fs::create_dir_all(&d).map_err(|e| Error::io_at(&d, "create folder", e))?;
        }
        jobs.extend((0..n).map(|i| (s, i)));
    }
    jobs.par_iter().try_for_each(|&(s, i)| -> Result<()> {
        let split = SPLIT_NAMES[s];
        let (img, boxes) = render(spec, s, i);
        let name = format!("{split}_{i:05}");
        let bytes = encode(&img, spec.jpeg).map_err(|e| Error::internal(format!("cannot encode image {name}: {e}")))?;
        write_renamed(&dir.join("images").join(split).join(format!("{name}.{ext}")), &bytes)?;
        write_renamed(&dir.join("labels").join(split).join(format!("{name}.txt")), format_label_text(&boxes).as_bytes())
    })?;

    let yaml = dir.join(&spec.yaml_name);
    write_atomic(&yaml, data_yaml(spec).as_bytes())?;
    Ok(yaml)
}

/// The data yaml text for `spec` (`path: .`, i.e. the yaml's own folder).
pub fn data_yaml(spec: &SynthSpec) -> String {
    let mut y = format!(
        "# kubeyolo synthetic dataset: shapes on textured backgrounds (seed {}, {} px{})\n\
         path: .\ntrain: images/train\nval: images/val\n",
        spec.seed,
        spec.imgsz,
        if spec.rect { ", rectangular" } else { "" }
    );
    if spec.images_per_split[2] > 0 {
        y.push_str("test: images/test\n");
    }
    y.push_str("names:\n");
    for (k, n) in class_names(spec.nc).iter().enumerate() {
        y.push_str(&format!("  {k}: {n}\n"));
    }
    y
}

fn check_spec(spec: &SynthSpec) -> Result<()> {
    let bad = |m: &str| Err(Error::usage(format!("synthetic dataset: {m}")));
    if spec.nc == 0 {
        return bad("nc must be at least 1");
    }
    if spec.imgsz < 16 {
        return bad("imgsz must be at least 16");
    }
    if spec.images_per_split[0] == 0 || spec.images_per_split[1] == 0 {
        return bad("train and val need at least one image each");
    }
    if !(0.0..=1.0).contains(&spec.background_fraction) {
        return bad("background_fraction must be within [0, 1]");
    }
    if spec.yaml_name.is_empty() || spec.yaml_name.contains('/') {
        return bad("yaml_name must be a plain file name");
    }
    Ok(())
}

/// Write via a hidden temporary name + rename (no fsync: test data, but never a partial file).
fn write_renamed(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io_at(&tmp, "write", e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io_at(path, "rename into place", e))
}

fn encode(img: &RgbImage, jpeg: bool) -> image::ImageResult<Vec<u8>> {
    let mut buf = Vec::new();
    let (w, h) = img.dimensions();
    if jpeg {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, 90).write_image(
            img.as_raw(),
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )?;
    } else {
        image::codecs::png::PngEncoder::new_with_quality(
            &mut buf,
            image::codecs::png::CompressionType::Fast,
            image::codecs::png::FilterType::Adaptive,
        )
        .write_image(img.as_raw(), w, h, image::ExtendedColorType::Rgb8)?;
    }
    Ok(buf)
}

/// Image `index` of split `split` (0 train, 1 val, 2 test) and its exact labels, in memory.
/// Deterministic: the same (spec.seed, split, index) always gives the same pixels.
pub fn render(spec: &SynthSpec, split: usize, index: usize) -> (RgbImage, Vec<LabelBox>) {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    rng.set_stream(((split as u64) << 40) | index as u64);
    let s = spec.imgsz.max(16);
    let (w, h) = if spec.rect {
        let short = (s as f32 * rng.gen_range(0.6..=1.0)).round() as u32;
        if rng.gen_bool(0.5) {
            (s, short)
        } else {
            (short, s)
        }
    } else {
        (s, s)
    };
    let mut img = background(&mut rng, w, h);
    let mut boxes = Vec::new();
    if rng.gen::<f32>() < spec.background_fraction || spec.max_objects == 0 {
        return (img, boxes);
    }
    let n = rng.gen_range(1..=spec.max_objects);
    let side = w.min(h) as f32;
    let (lo, hi) = ((0.12 * side).max(8.0).min(side), (0.45 * side).max(8.0).min(side));
    // Placed pixel boxes [x0, x1) x [y0, y1), kept 2 px apart so shapes never touch.
    let mut placed: Vec<(u32, u32, u32, u32)> = Vec::new();
    for _ in 0..n {
        for _attempt in 0..30 {
            let size = rng.gen_range(lo..=hi);
            let aspect: f32 = rng.gen_range(0.65..=1.5);
            let bw = ((size * aspect.sqrt()).round() as u32).clamp(6, w);
            let bh = ((size / aspect.sqrt()).round() as u32).clamp(6, h);
            let x0 = rng.gen_range(0..=w - bw);
            let y0 = rng.gen_range(0..=h - bh);
            let r = (x0, y0, x0 + bw, y0 + bh);
            if placed.iter().any(|p| r.0 < p.2 + 2 && p.0 < r.2 + 2 && r.1 < p.3 + 2 && p.1 < r.3 + 2) {
                continue;
            }
            let cls = rng.gen_range(0..spec.nc);
            let colour = object_colour(&mut rng, cls, spec.nc);
            if let Some((ax0, ay0, ax1, ay1)) = draw_shape(&mut img, r, cls % SHAPES.len(), colour) {
                placed.push(r);
                boxes.push(LabelBox {
                    cls,
                    cx: (ax0 + ax1) as f32 / 2.0 / w as f32,
                    cy: (ay0 + ay1) as f32 / 2.0 / h as f32,
                    w: (ax1 - ax0) as f32 / w as f32,
                    h: (ay1 - ay0) as f32 / h as f32,
                });
            }
            break;
        }
    }
    (img, boxes)
}

/// Whether the point (u, v) in [-1, 1]² (box-relative) is inside `shape`.
fn inside(shape: usize, u: f32, v: f32) -> bool {
    match shape {
        0 => u * u + v * v <= 1.0,                   // circle (ellipse)
        1 => true,                                   // square (rectangle)
        2 => u.abs() <= (v + 1.0) / 2.0,             // triangle, apex up
        3 => u.abs() <= 0.3 || v.abs() <= 0.3,       // cross
        4 => (0.3..=1.0).contains(&(u * u + v * v)), // ring
        _ => u.abs() + v.abs() <= 1.0,               // diamond
    }
}

/// Fill `shape` in the pixel box `r`; returns the exact extent of the pixels drawn
/// (`[x0, x1) x [y0, y1)`), or None if none were.
fn draw_shape(img: &mut RgbImage, r: (u32, u32, u32, u32), shape: usize, c: Rgb<u8>) -> Option<(u32, u32, u32, u32)> {
    let (cx, cy) = ((r.0 + r.2) as f32 / 2.0, (r.1 + r.3) as f32 / 2.0);
    let (hw, hh) = ((r.2 - r.0) as f32 / 2.0, (r.3 - r.1) as f32 / 2.0);
    let mut ext: Option<(u32, u32, u32, u32)> = None;
    for y in r.1..r.3 {
        let v = (y as f32 + 0.5 - cy) / hh;
        for x in r.0..r.2 {
            let u = (x as f32 + 0.5 - cx) / hw;
            if inside(shape, u, v) {
                img.put_pixel(x, y, c);
                ext = Some(match ext {
                    None => (x, y, x + 1, y + 1),
                    Some(e) => (e.0.min(x), e.1.min(y), e.2.max(x + 1), e.3.max(y + 1)),
                });
            }
        }
    }
    ext
}

/// A saturated colour; past six classes the hue band encodes the class (see module docs).
fn object_colour(rng: &mut ChaCha8Rng, cls: usize, nc: usize) -> Rgb<u8> {
    let bands = nc.div_ceil(SHAPES.len());
    let hue = if bands <= 1 {
        rng.gen_range(0.0..360.0)
    } else {
        let width = 360.0 / bands as f32;
        (cls / SHAPES.len()) as f32 * width + rng.gen_range(0.15..0.85) * width
    };
    hsv(hue, rng.gen_range(0.7..=1.0), rng.gen_range(0.75..=1.0))
}

/// A muted textured background: noise, a gradient, stripes or a checkerboard.
fn background(rng: &mut ChaCha8Rng, w: u32, h: u32) -> RgbImage {
    let muted = |rng: &mut ChaCha8Rng| -> [f32; 3] {
        let c = hsv(rng.gen_range(0.0..360.0), rng.gen_range(0.0..0.35), rng.gen_range(0.15..0.6));
        [c[0] as f32, c[1] as f32, c[2] as f32]
    };
    let (a, b) = (muted(rng), muted(rng));
    let kind = rng.gen_range(0..4);
    let noise: f32 = rng.gen_range(4.0..24.0);
    let angle: f32 = rng.gen_range(0.0..std::f32::consts::PI);
    let (dx, dy) = (angle.cos(), angle.sin());
    let period: f32 = rng.gen_range(6.0..24.0);
    let extent = (w as f32 * dx.abs() + h as f32 * dy.abs()).max(1.0);
    let mut img = RgbImage::new(w, h);
    for y in 0..h {
        for x in 0..w {
            let t = match kind {
                0 => 0.0,                                                                    // plain + noise
                1 => ((x as f32 * dx + y as f32 * dy) / extent).clamp(0.0, 1.0),             // gradient
                2 => (((x as f32 * dx + y as f32 * dy) / period) as i32 & 1) as f32,         // stripes
                _ => (((x as f32 / period) as i32 + (y as f32 / period) as i32) & 1) as f32, // checker
            };
            let n = rng.gen_range(-noise..=noise);
            let px = |i: usize| (a[i] * (1.0 - t) + b[i] * t + n).clamp(0.0, 255.0) as u8;
            img.put_pixel(x, y, Rgb([px(0), px(1), px(2)]));
        }
    }
    img
}

/// HSV (h in degrees, s and v in [0, 1]) to RGB.
fn hsv(h: f32, s: f32, v: f32) -> Rgb<u8> {
    let c = v * s;
    let hp = (h.rem_euclid(360.0)) / 60.0;
    let x = c * (1.0 - (hp % 2.0 - 1.0).abs());
    let (r, g, b) = match hp as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    let m = v - c;
    let q = |f: f32| ((f + m) * 255.0).round().clamp(0.0, 255.0) as u8;
    Rgb([q(r), q(g), q(b)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dataset::{label_path, Dataset};
    use crate::data::labels::parse_label_file;

    #[test]
    fn layout_yaml_labels_and_determinism() {
        let t = tempfile::tempdir().unwrap();
        let spec = SynthSpec { images_per_split: [20, 6, 3], nc: 8, seed: 7, ..SynthSpec::default() };
        let yaml = generate(t.path(), &spec).unwrap();
        let d = Dataset::load(&yaml, t.path()).unwrap();
        assert_eq!(d.names, class_names(8));
        assert_eq!(d.names[7], "square-2");
        let mut objects = 0;
        let mut backgrounds = 0;
        for (split, n) in [("train", 20), ("val", 6), ("test", 3)] {
            let imgs = d.split_images(split).unwrap();
            assert_eq!(imgs.len(), n);
            for im in &imgs {
                let lf = parse_label_file(&label_path(im), 8).unwrap();
                assert!(lf.issues.is_empty());
                objects += lf.boxes.len();
                backgrounds += lf.empty as usize;
                let (w, h) = image::image_dimensions(im).unwrap();
                assert_eq!((w, h), (128, 128));
            }
        }
        assert!(objects > 29, "{objects}");
        let _ = backgrounds;
        // same seed, same bytes; regenerate in place is allowed
        let first = std::fs::read(t.path().join("images/train/train_00003.png")).unwrap();
        generate(t.path(), &spec).unwrap();
        assert_eq!(first, std::fs::read(t.path().join("images/train/train_00003.png")).unwrap());
        // another seed, other pixels
        let (a, _) = render(&spec, 0, 3);
        let (b, _) = render(&SynthSpec { seed: 8, ..spec.clone() }, 0, 3);
        assert_ne!(a, b);
    }

    #[test]
    fn labels_are_exact_pixel_extents() {
        // draw_shape reports exactly the bounding box of the pixels it set, close to the box asked.
        for shape in 0..SHAPES.len() {
            for (bw, bh) in [(6, 6), (9, 14), (31, 20), (40, 40)] {
                let mut img = RgbImage::new(64, 64);
                let r = (5, 7, 5 + bw, 7 + bh);
                let e = draw_shape(&mut img, r, shape, Rgb([255, 255, 255])).unwrap();
                let set: Vec<(u32, u32)> =
                    img.enumerate_pixels().filter(|p| p.2 .0[0] == 255).map(|p| (p.0, p.1)).collect();
                let bb = set.iter().fold((u32::MAX, u32::MAX, 0, 0), |a, &(x, y)| {
                    (a.0.min(x), a.1.min(y), a.2.max(x + 1), a.3.max(y + 1))
                });
                assert_eq!(e, bb, "shape {shape} {bw}x{bh}");
                assert!(e.0 >= r.0 && e.1 >= r.1 && e.2 <= r.2 && e.3 <= r.3);
                assert!(e.0 <= r.0 + 2 && e.1 <= r.1 + 2 && e.2 + 2 >= r.2 && e.3 + 2 >= r.3, "{shape} {e:?} {r:?}");
            }
        }
        // render's labels are those extents, normalised; boxes never overlap.
        let spec = SynthSpec { max_objects: 6, background_fraction: 0.0, rect: true, ..SynthSpec::default() };
        for i in 0..20 {
            let (img, boxes) = render(&spec, 0, i);
            assert!(!boxes.is_empty());
            let (w, h) = img.dimensions();
            assert!(w.max(h) == 128 && w.min(h) >= 76);
            let px: Vec<(f32, f32, f32, f32)> = boxes
                .iter()
                .map(|b| {
                    let x0 = (b.cx - b.w / 2.0) * w as f32;
                    let y0 = (b.cy - b.h / 2.0) * h as f32;
                    (x0, y0, x0 + b.w * w as f32, y0 + b.h * h as f32)
                })
                .collect();
            for (k, a) in px.iter().enumerate() {
                for v in [a.0, a.1, a.2, a.3] {
                    assert!((v - v.round()).abs() < 1e-3, "label edges on pixel boundaries");
                }
                assert!(a.0 >= 0.0 && a.1 >= 0.0 && a.2 <= w as f32 + 1e-3 && a.3 <= h as f32 + 1e-3);
                for b in &px[k + 1..] {
                    assert!(a.2 <= b.0 || b.2 <= a.0 || a.3 <= b.1 || b.3 <= a.1, "overlap");
                }
            }
        }
    }

    #[test]
    fn refuses_foreign_folder_and_bad_spec() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("images/mine")).unwrap();
        assert!(generate(t.path(), &SynthSpec::default()).is_err());
        let t = tempfile::tempdir().unwrap();
        assert!(generate(t.path(), &SynthSpec { nc: 0, ..SynthSpec::default() }).is_err());
        assert!(generate(t.path(), &SynthSpec { images_per_split: [1, 0, 0], ..SynthSpec::default() }).is_err());
    }

    #[test]
    fn zero_test_split_has_no_test_key() {
        let t = tempfile::tempdir().unwrap();
        let spec = SynthSpec { images_per_split: [2, 1, 0], jpeg: true, ..SynthSpec::default() };
        let d = Dataset::load(&generate(t.path(), &spec).unwrap(), t.path()).unwrap();
        assert!(!d.has_split("test"));
        assert!(d.split_images("train").unwrap()[0].extension().unwrap() == "jpg");
    }
}
