//! Images: decoding to RGB, ultralytics' `LetterBox` (resize keeping aspect ratio, gray 114
//! padding), conversion to the network's input tensor (/255), and mapping boxes back to the
//! original image (`scale_boxes`).
//!
//! Why a hand-written resize: ultralytics resizes with OpenCV's `cv2.resize(INTER_LINEAR)`, whose
//! uint8 path uses 11-bit fixed-point weights (and INTER_AREA for exact 2× downscales). The
//! `image` crate's filters give different pixels, which moves scores and boxes enough to break
//! parity with ultralytics. [`resize_linear`] reproduces OpenCV's arithmetic (horizontal pass in
//! integers, vertical pass as its SSE2 kernel computes it); the fixture script measures the
//! remaining difference against cv2 (at most 1 grey level on a few pixels).
//!
//! Decoding lives in [`super::decode`] (re-exported here): `cv2.imdecode(IMREAD_COLOR)`-exact
//! pixels, libjpeg-turbo for JPEG, EXIF orientation applied as OpenCV applies it.
//!
//! Used by prediction (`nn::predict`), the validator (`eval`) and the training data loader.

use candle_core::{Device, Tensor};
use image::RgbImage;

use crate::error::{Error, Result};

/// ultralytics' padding grey.
pub const PAD_VALUE: u8 = 114;

pub use super::decode::{decode_rgb, image_size, load_rgb};

/// ultralytics `LetterBox` parameters.
#[derive(Debug, Clone, Copy)]
pub struct Letterbox {
    /// Target (height, width).
    pub new_shape: (usize, usize),
    /// Minimum rectangle: pad only up to the next multiple of `stride` (predict's default,
    /// `rect=True`); false pads to `new_shape` exactly (validation and training batches).
    pub auto: bool,
    /// Allow enlarging small images (true except ultralytics' `scaleup=False` option).
    pub scaleup: bool,
    /// Centre the image (ultralytics' default) rather than top-left.
    pub center: bool,
    pub stride: usize,
}

impl Letterbox {
    /// Square target `imgsz` × `imgsz`, centred, scale-up allowed, no `auto`.
    pub fn square(imgsz: usize) -> Self {
        Letterbox { new_shape: (imgsz, imgsz), auto: false, scaleup: true, center: true, stride: 32 }
    }
    /// Predict's letterbox: `imgsz` square target with `auto` (stride-multiple minimum rectangle).
    pub fn predict(imgsz: usize, stride: usize) -> Self {
        Letterbox { new_shape: (imgsz, imgsz), auto: true, scaleup: true, center: true, stride }
    }
}

/// What letterboxing did, to map boxes back ([`scale_boxes`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxInfo {
    /// Original (height, width).
    pub orig_shape: (usize, usize),
    /// Output (height, width) (the network input size).
    pub shape: (usize, usize),
    /// Resize ratio (width, height) — equal unless the image is 1 px thin.
    pub ratio: (f64, f64),
    /// Resized image size (width, height) before padding.
    pub new_unpad: (usize, usize),
    /// Padding (left, top) in pixels.
    pub pad: (usize, usize),
}

/// Python's `round()` (half to even), which ultralytics' letterbox uses.
fn py_round(x: f64) -> i64 {
    let f = x.floor();
    let d = x - f;
    if d > 0.5 || (d == 0.5 && (f as i64) % 2 != 0) {
        f as i64 + 1
    } else {
        f as i64
    }
}

/// The letterbox geometry for an image of `shape` (h, w), without touching pixels.
pub fn letterbox_params(shape: (usize, usize), lb: &Letterbox) -> LetterboxInfo {
    let (h0, w0) = (shape.0 as f64, shape.1 as f64);
    let (nh, nw) = (lb.new_shape.0 as f64, lb.new_shape.1 as f64);
    let mut r = (nh / h0).min(nw / w0);
    if !lb.scaleup {
        r = r.min(1.0);
    }
    let new_unpad = (py_round(w0 * r).max(1) as usize, py_round(h0 * r).max(1) as usize);
    let mut dw = nw - new_unpad.0 as f64;
    let mut dh = nh - new_unpad.1 as f64;
    if lb.auto {
        dw = dw.rem_euclid(lb.stride as f64);
        dh = dh.rem_euclid(lb.stride as f64);
    }
    if lb.center {
        dw /= 2.0;
        dh /= 2.0;
    }
    let top = if lb.center { py_round(dh - 0.1) } else { 0 };
    let bottom = py_round(dh + 0.1);
    let left = if lb.center { py_round(dw - 0.1) } else { 0 };
    let right = py_round(dw + 0.1);
    let (top, bottom, left, right) =
        (top.max(0) as usize, bottom.max(0) as usize, left.max(0) as usize, right.max(0) as usize);
    LetterboxInfo {
        orig_shape: shape,
        shape: (new_unpad.1 + top + bottom, new_unpad.0 + left + right),
        ratio: (r, r),
        new_unpad,
        pad: (left, top),
    }
}

/// ultralytics `LetterBox` on an RGB image: resize (cv2 INTER_LINEAR arithmetic) and pad with
/// grey 114.
pub fn letterbox(img: &RgbImage, lb: &Letterbox) -> (RgbImage, LetterboxInfo) {
    let shape = (img.height() as usize, img.width() as usize);
    let info = letterbox_params(shape, lb);
    let resized;
    let src = if (shape.1, shape.0) != info.new_unpad {
        resized = resize_linear(img, info.new_unpad.0, info.new_unpad.1);
        &resized
    } else {
        img
    };
    let (oh, ow) = info.shape;
    let mut out = RgbImage::from_pixel(ow as u32, oh as u32, image::Rgb([PAD_VALUE; 3]));
    let (left, top) = info.pad;
    let sw = src.width() as usize;
    let raw_src = src.as_raw();
    let raw_out: &mut [u8] = &mut out;
    for y in 0..src.height() as usize {
        let d = ((y + top) * ow + left) * 3;
        raw_out[d..d + sw * 3].copy_from_slice(&raw_src[y * sw * 3..(y + 1) * sw * 3]);
    }
    (out, info)
}

const COEF_BITS: u32 = 11;
const COEF_SCALE: f32 = (1 << COEF_BITS) as f32;

/// Per destination index: source index and the two fixed-point weights (cv2 `resize` tables).
fn linear_table(src: usize, dst: usize) -> Vec<(usize, i32, i32)> {
    let scale = src as f64 / dst as f64;
    (0..dst)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut fx = f - s as f32;
            if s < 0 {
                fx = 0.0;
                s = 0;
            }
            if s >= src as i64 - 1 {
                fx = 0.0;
                s = src as i64 - 1;
            }
            // saturate_cast<short>((1 - fx) * 2048) rounds to nearest.
            let a0 = ((1.0 - fx) * COEF_SCALE).round() as i32;
            (s as usize, a0, (COEF_SCALE as i32) - a0)
        })
        .collect()
}

/// Resize RGB to (new_w, new_h) like `cv2.resize(img, (new_w, new_h), INTER_LINEAR)` on uint8.
pub fn resize_linear(img: &RgbImage, new_w: usize, new_h: usize) -> RgbImage {
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    if sw == 2 * new_w && sh == 2 * new_h {
        return resize_area_half(img, new_w, new_h);
    }
    let xt = linear_table(sw, new_w);
    let yt = linear_table(sh, new_h);
    let src = img.as_raw();
    // Horizontal pass over every source row (values × 2048).
    let hrow = |y: usize| -> Vec<i32> {
        let row = &src[y * sw * 3..(y + 1) * sw * 3];
        let mut out = Vec::with_capacity(new_w * 3);
        for &(sx, a0, a1) in &xt {
            let sx1 = (sx + 1).min(sw - 1);
            for c in 0..3 {
                out.push(row[sx * 3 + c] as i32 * a0 + row[sx1 * 3 + c] as i32 * a1);
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..sh).map(hrow).collect();
    let mut out = vec![0u8; new_w * new_h * 3];
    for (dy, &(sy, b0, b1)) in yt.iter().enumerate() {
        let r0 = &rows[sy];
        let r1 = &rows[(sy + 1).min(sh - 1)];
        let o = &mut out[dy * new_w * 3..(dy + 1) * new_w * 3];
        for i in 0..new_w * 3 {
            // cv2's SSE2 VResizeLinearVec_32s8u: ((r0 >> 4) · b0 >> 16) + ((r1 >> 4) · b1 >> 16),
            // then round-shift by 2.
            let v = (((r0[i] >> 4) * b0) >> 16) + (((r1[i] >> 4) * b1) >> 16);
            o[i] = ((v + 2) >> 2).clamp(0, 255) as u8;
        }
    }
    RgbImage::from_raw(new_w as u32, new_h as u32, out).expect("buffer size matches")
}

/// cv2 turns an exact 2× INTER_LINEAR downscale into INTER_AREA: the rounded mean of 2×2 blocks.
fn resize_area_half(img: &RgbImage, new_w: usize, new_h: usize) -> RgbImage {
    let sw = img.width() as usize;
    let src = img.as_raw();
    let mut out = vec![0u8; new_w * new_h * 3];
    for y in 0..new_h {
        for x in 0..new_w {
            for c in 0..3 {
                let p = |yy: usize, xx: usize| src[(yy * sw + xx) * 3 + c] as u32;
                let s = p(2 * y, 2 * x) + p(2 * y, 2 * x + 1) + p(2 * y + 1, 2 * x) + p(2 * y + 1, 2 * x + 1);
                out[(y * new_w + x) * 3 + c] = ((s + 2) >> 2) as u8;
            }
        }
    }
    RgbImage::from_raw(new_w as u32, new_h as u32, out).expect("buffer size matches")
}

/// Stack same-sized RGB images into the network input: (B, 3, H, W) f32 in [0, 1] on `device`.
pub fn to_tensor(imgs: &[&RgbImage], device: &Device) -> Result<Tensor> {
    let Some(first) = imgs.first() else {
        return Err(Error::internal("to_tensor: no images"));
    };
    let (w, h) = (first.width() as usize, first.height() as usize);
    let mut data = Vec::with_capacity(imgs.len() * 3 * h * w);
    for img in imgs {
        if (img.width() as usize, img.height() as usize) != (w, h) {
            return Err(Error::internal("to_tensor: images of different sizes in one batch"));
        }
        let raw = img.as_raw();
        for c in 0..3 {
            data.extend(raw.iter().skip(c).step_by(3).map(|&v| v as f32 / 255.0));
        }
    }
    Ok(Tensor::from_vec(data, (imgs.len(), 3, h, w), device)?)
}

/// Interleaved RGB (`raw`, n pixels) → three planes `r`, `g`, `b` of n bytes each (HWC → CHW,
/// the training batch layout), every element of the planes written.
///
/// Why: per pixel as three byte moves this was ~10% of a training sample's preparation; with
/// SSSE3 byte shuffles (present wherever AVX2 is) 16 pixels take 9 shuffles.
pub(crate) fn split_channels(raw: &[u8], [r, g, b]: [&mut [std::mem::MaybeUninit<u8>]; 3]) {
    let n = raw.len() / 3;
    assert!(raw.len() == 3 * n && r.len() == n && g.len() == n && b.len() == n, "split_channels: sizes");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::nn::cpu::fastmath::avx2() {
        // SAFETY: SSSE3 is present (AVX2 implies it); the sizes were checked above.
        done = unsafe {
            split_channels_ssse3(raw, [r.as_mut_ptr().cast(), g.as_mut_ptr().cast(), b.as_mut_ptr().cast()], n)
        };
    }
    for i in done..n {
        r[i].write(raw[3 * i]);
        g[i].write(raw[3 * i + 1]);
        b[i].write(raw[3 * i + 2]);
    }
}

/// [`split_channels`] for whole blocks of 16 pixels; returns how many pixels it wrote.
///
/// # Safety
/// SSSE3 must be available; `raw` holds 3·n bytes and each plane pointer n writable bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn split_channels_ssse3(raw: &[u8], planes: [*mut u8; 3], n: usize) -> usize {
    use std::arch::x86_64::*;
    // mask[c][k]: for output byte j of channel c, its source byte 3j + c lies in 16-byte
    // register k = (3j + c) / 16 at (3j + c) % 16; other registers contribute 0 (0x80).
    let mut mask = [[[0x80u8 as i8; 16]; 3]; 3];
    for (c, mc) in mask.iter_mut().enumerate() {
        for j in 0..16 {
            let at = 3 * j + c;
            mc[at / 16][j] = (at % 16) as i8;
        }
    }
    let m: [[__m128i; 3]; 3] = mask.map(|mc| mc.map(|v| _mm_loadu_si128(v.as_ptr() as *const __m128i)));
    let mut i = 0;
    while i + 16 <= n {
        let src = raw.as_ptr().add(3 * i);
        let a = [0, 16, 32].map(|o| _mm_loadu_si128(src.add(o) as *const __m128i));
        for c in 0..3 {
            let v = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(a[0], m[c][0]), _mm_shuffle_epi8(a[1], m[c][1])),
                _mm_shuffle_epi8(a[2], m[c][2]),
            );
            _mm_storeu_si128(planes[c].add(i) as *mut __m128i, v);
        }
        i += 16;
    }
    i
}

/// Three planes `r`, `g`, `b` of n bytes → interleaved RGB `out` (3·n bytes): the inverse of
/// [`split_channels`], for the per-chunk kernels that compute each channel in its own lanes.
pub(crate) fn merge_channels([r, g, b]: [&[u8]; 3], out: &mut [u8]) {
    let n = out.len() / 3;
    assert!(out.len() == 3 * n && r.len() >= n && g.len() >= n && b.len() >= n, "merge_channels: sizes");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::nn::cpu::fastmath::avx2() {
        // SAFETY: SSSE3 is present (AVX2 implies it); the sizes were checked above.
        done = unsafe { merge_channels_ssse3([r, g, b], out, n) };
    }
    for i in done..n {
        out[3 * i..3 * i + 3].copy_from_slice(&[r[i], g[i], b[i]]);
    }
}

/// [`merge_channels`] for whole blocks of 16 pixels; returns how many pixels it wrote.
///
/// # Safety
/// SSSE3 must be available; each plane holds n bytes and `out` 3·n.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn merge_channels_ssse3(planes: [&[u8]; 3], out: &mut [u8], n: usize) -> usize {
    use std::arch::x86_64::*;
    // mask[k][c]: output byte j of 16-byte register k is channel (16k + j) % 3 of pixel
    // (16k + j) / 3; the other channels contribute 0 (0x80) there.
    let mut mask = [[[0x80u8 as i8; 16]; 3]; 3];
    for (k, mk) in mask.iter_mut().enumerate() {
        for j in 0..16 {
            let at = 16 * k + j;
            mk[at % 3][j] = (at / 3) as i8;
        }
    }
    let m: [[__m128i; 3]; 3] = mask.map(|mk| mk.map(|v| _mm_loadu_si128(v.as_ptr() as *const __m128i)));
    let mut i = 0;
    while i + 16 <= n {
        let p = planes.map(|pl| _mm_loadu_si128(pl.as_ptr().add(i) as *const __m128i));
        let dst = out.as_mut_ptr().add(3 * i);
        for k in 0..3 {
            let v = _mm_or_si128(
                _mm_or_si128(_mm_shuffle_epi8(p[0], m[k][0]), _mm_shuffle_epi8(p[1], m[k][1])),
                _mm_shuffle_epi8(p[2], m[k][2]),
            );
            _mm_storeu_si128(dst.add(16 * k) as *mut __m128i, v);
        }
        i += 16;
    }
    i
}

/// ultralytics `scale_boxes(img1_shape, boxes, img0_shape)` for xyxy boxes: undo the letterbox
/// (padding, then gain) and clip to the original image. Shapes are (height, width). With
/// `ratio_pad` = ((gain_h, gain_w), (pad_w, pad_h)) the geometry is given instead of recomputed
/// (the validator passes the loader's exact values).
pub fn scale_boxes(
    img1_shape: (usize, usize),
    boxes: &mut [[f32; 4]],
    img0_shape: (usize, usize),
    ratio_pad: Option<((f64, f64), (f64, f64))>,
) {
    let (gain_y, gain_x, pad_x, pad_y) = match ratio_pad {
        Some(((gy, gx), (px, py))) => (gy, gx, px, py),
        None => {
            let (h1, w1) = (img1_shape.0 as f64, img1_shape.1 as f64);
            let (h0, w0) = (img0_shape.0 as f64, img0_shape.1 as f64);
            let gain = (h1 / h0).min(w1 / w0);
            let new_h = py_round(h0 * gain).max(1) as f64;
            let new_w = py_round(w0 * gain).max(1) as f64;
            let pad_x = py_round((w1 - new_w) / 2.0 - 0.1) as f64;
            let pad_y = py_round((h1 - new_h) / 2.0 - 0.1) as f64;
            (new_h / h0, new_w / w0, pad_x, pad_y)
        }
    };
    let (h0, w0) = (img0_shape.0 as f32, img0_shape.1 as f32);
    for b in boxes.iter_mut() {
        b[0] = ((b[0] as f64 - pad_x) / gain_x) as f32;
        b[1] = ((b[1] as f64 - pad_y) / gain_y) as f32;
        b[2] = ((b[2] as f64 - pad_x) / gain_x) as f32;
        b[3] = ((b[3] as f64 - pad_y) / gain_y) as f32;
        b[0] = b[0].clamp(0.0, w0);
        b[1] = b[1].clamp(0.0, h0);
        b[2] = b[2].clamp(0.0, w0);
        b[3] = b[3].clamp(0.0, h0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_geometry_matches_ultralytics() {
        // 480×640 (h×w) into 640 square: no resize, 80 px top and bottom.
        let i = letterbox_params((480, 640), &Letterbox::square(640));
        assert_eq!(i.shape, (640, 640));
        assert_eq!(i.pad, (0, 80));
        assert_eq!(i.new_unpad, (640, 480));
        // auto: pad to the next multiple of 32 only.
        let i = letterbox_params((480, 640), &Letterbox::predict(640, 32));
        assert_eq!(i.shape, (480, 640));
        // odd padding: 100×50 → 64: r = 0.64, unpad (32, 64), dw = 32 → left 16 right 16.
        let i = letterbox_params((100, 50), &Letterbox::square(64));
        assert_eq!(i.new_unpad, (32, 64));
        assert_eq!(i.pad, (16, 0));
        // 3 px of padding: round(1.5 - 0.1) = 1 left, round(1.5 + 0.1) = 2 right.
        let i = letterbox_params((64, 61), &Letterbox::square(64));
        assert_eq!(i.pad, (1, 0));
        assert_eq!(i.shape, (64, 64));
    }

    #[test]
    fn letterbox_pads_grey_and_scale_boxes_inverts() {
        let img = RgbImage::from_pixel(40, 20, image::Rgb([10, 20, 30]));
        let (out, info) = letterbox(&img, &Letterbox::square(64));
        assert_eq!((out.width(), out.height()), (64, 64));
        assert_eq!(out.get_pixel(0, 0).0, [114, 114, 114]);
        assert_eq!(out.get_pixel(32, 32).0, [10, 20, 30]);
        let mut b =
            [[info.pad.0 as f32 + 16.0, info.pad.1 as f32 + 8.0, info.pad.0 as f32 + 32.0, info.pad.1 as f32 + 16.0]];
        scale_boxes(info.shape, &mut b, info.orig_shape, None);
        assert!((b[0][0] - 10.0).abs() < 1e-4 && (b[0][3] - 10.0).abs() < 1e-4, "{b:?}");
    }

    #[test]
    fn resize_constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([200, 7, 114]));
        let r = resize_linear(&img, 64, 40);
        assert!(r.pixels().all(|p| p.0 == [200, 7, 114]));
        let r = resize_linear(&img, 13, 9);
        assert!(r.pixels().all(|p| p.0 == [200, 7, 114]));
    }

    #[test]
    fn tensor_is_chw_over_255() {
        let img = RgbImage::from_pixel(2, 1, image::Rgb([255, 0, 51]));
        let t = to_tensor(&[&img], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[1, 3, 1, 2]);
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(v, vec![1.0, 1.0, 0.0, 0.0, 0.2, 0.2]);
    }

    #[test]
    fn merge_channels_inverts_split_channels() {
        for n in [0usize, 1, 15, 16, 17, 100, 4099] {
            let raw: Vec<u8> = (0..3 * n).map(|i| (i * 7 % 251) as u8).collect();
            let planes: Vec<Vec<u8>> = (0..3).map(|c| raw.iter().skip(c).step_by(3).copied().collect()).collect();
            let mut out = vec![0u8; 3 * n];
            merge_channels([&planes[0], &planes[1], &planes[2]], &mut out);
            assert_eq!(out, raw, "{n} pixels");
        }
    }

    #[test]
    fn split_channels_equals_per_pixel_moves() {
        for n in [0usize, 1, 15, 16, 17, 100, 4099] {
            let raw: Vec<u8> = (0..3 * n).map(|i| (i * 7 % 251) as u8).collect();
            let mut planes = vec![std::mem::MaybeUninit::new(0u8); 3 * n];
            let (r, gb) = planes.split_at_mut(n);
            let (g, b) = gb.split_at_mut(n);
            split_channels(&raw, [r, g, b]);
            // SAFETY: every element was initialised (by MaybeUninit::new, then written).
            let got: Vec<u8> = planes.iter().map(|v| unsafe { v.assume_init() }).collect();
            let want: Vec<u8> =
                (0..3).flat_map(|c| raw.iter().skip(c).step_by(3).copied().collect::<Vec<_>>()).collect();
            assert_eq!(got, want, "{n} pixels");
        }
    }
}
