//! ultralytics' `RandomHSV`: `cv2.cvtColor(BGR2HSV)`, a per-channel LUT built from the three
//! gains, `cv2.cvtColor(HSV2BGR)`, on 8-bit images.
//!
//! The two conversions follow OpenCV 5.0's `color_hsv.simd.hpp`:
//! - RGB→HSV is integer arithmetic with its 12-bit division tables (exact);
//! - HSV→RGB runs in f32, with `1 - s·h` and `1 - s·(1 - h)` as fused multiply-adds (the
//!   compiler contracts them in OpenCV's AVX2 build; without that, 15 of 49,152 values of a
//!   fixture image differ by 1, all at V = 255). Its SIMD loop (32 pixels at a time with AVX2) *truncates* the final
//!   `x·255`; the scalar loop for the rest of a row (width mod 32 pixels) rounds. Both are
//!   reproduced here, so rows whose width is not a multiple of 32 match too (on a CPU where
//!   OpenCV dispatches AVX2, as the fixture machine; SSE-only builds process 16 pixels at a time).
//!
//! kubeyolo's images are RGB; the conversions read and write the channels in that order, which
//! is what OpenCV's BGR conversions do on BGR data.

use image::RgbImage;

use crate::nn::cpu::fastmath::multiversioned;

multiversioned!(fn hsv_rows = hsv_rows_gen / hsv_rows_avx2(raw: &mut [u8], w: usize, lut: &[[u8; 256]; 3]) -> ());

const HSV_SHIFT: i32 = 12;
/// Pixels per SIMD iteration of OpenCV's HSV2RGB_b with AVX2 (4 × 8 float lanes).
const SIMD_PIXELS: usize = 32;

struct Tables {
    sdiv: [i32; 256],
    hdiv180: [i32; 256],
}

fn tables() -> &'static Tables {
    static T: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    T.get_or_init(|| {
        let mut t = Tables { sdiv: [0; 256], hdiv180: [0; 256] };
        for i in 1..256 {
            // saturate_cast<int>(double) rounds to nearest.
            t.sdiv[i] = (((255 << HSV_SHIFT) as f64) / i as f64).round_ties_even() as i32;
            t.hdiv180[i] = (((180 << HSV_SHIFT) as f64) / (6.0 * i as f64)).round_ties_even() as i32;
        }
        t
    })
}

/// One pixel RGB → OpenCV 8-bit HSV (H in 0..180).
#[inline(always)]
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    hsv_with(tables(), r, g, b)
}

/// [`rgb_to_hsv`] with the division tables at hand (the image loop looks them up once).
#[inline(always)]
fn hsv_with(t: &Tables, r: u8, g: u8, b: u8) -> [u8; 3] {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = v - vmin;
    let vr = if v == r { -1 } else { 0 };
    let vg = if v == g { -1 } else { 0 };
    // v and diff are within 0..=255: the u8 casts are exact and spare the bounds checks
    let s = (diff * t.sdiv[v as u8 as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    let mut h = (vr & (g - b)) + (!vr & ((vg & (b - r + 2 * diff)) + (!vg & (r - g + 4 * diff))));
    h = (h * t.hdiv180[diff as u8 as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    if h < 0 {
        h += 180;
    }
    [h.clamp(0, 255) as u8, s as u8, v as u8]
}

/// The f32 (b, g, r) in 0..1 of OpenCV's HSV2RGB_simd (also its scalar native path, which
/// computes the same products for s > 0 and returns v for s = 0 — the same values).
#[inline(always)]
fn hsv_to_rgb_f(h: u8, s: u8, v: u8) -> [f32; 3] {
    let hscale: f32 = 6.0 / 180.0;
    let c0: f32 = 1.0 / 255.0;
    let s = s as f32 * c0;
    let v = v as f32 * c0;
    let mut hh = h as f32 * hscale;
    let pre = hh.trunc();
    hh -= pre;
    let tab0 = v;
    let tab1 = v * (1.0 - s);
    // GCC contracts `1 - s·h` into a fused multiply-add in OpenCV's AVX2 build (-ffp-contract=fast).
    let tab2 = v * (-s).mul_add(hh, 1.0);
    let tab3 = v * (-s).mul_add(1.0 - hh, 1.0);
    let sector = (pre - (pre * (1.0f32 / 6.0)).trunc() * 6.0) as i32;
    // (b, g, r) per sector: OpenCV's sector_data {{1,3,0}, {1,0,2}, {3,0,1}, {0,2,1}, {0,1,3}, {2,1,0}}.
    let tab = [tab0, tab1, tab2, tab3];
    const SECTOR: [[usize; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
    let k = SECTOR[sector.clamp(0, 5) as usize];
    [tab[k[0]], tab[k[1]], tab[k[2]]]
}

/// One pixel OpenCV 8-bit HSV → RGB; `simd` selects the SIMD loop's truncation (else rounding).
#[inline(always)]
pub fn hsv_to_rgb(h: u8, s: u8, v: u8, simd: bool) -> [u8; 3] {
    let [b, g, r] = hsv_to_rgb_f(h, s, v);
    [quantize(r, simd), quantize(g, simd), quantize(b, simd)]
}

#[inline(always)]
fn quantize(x: f32, simd: bool) -> u8 {
    let y = x * 255.0;
    let y = if simd { y.trunc() } else { y.round_ties_even() };
    // max/min rather than clamp + `as u8`: the same values (NaN → 0), without the saturation checks
    let y = y.max(0.0).min(255.0);
    // SAFETY: y is finite and within 0..=255.
    unsafe { y.to_int_unchecked::<i32>() as u8 }
}

/// Per (h, s): the factors `1 - s`, `1 - s·h`, `1 - s·(1 - h)` of [`hsv_to_rgb_f`] and the
/// table index of each output channel. The products with v are then exactly those of OpenCV
/// (each tab value is one f32 multiplication of v by its factor), at a fraction of the work.
struct Factors {
    f: Vec<[f32; 4]>,
    pick: Vec<[u8; 3]>,
}

fn factors() -> &'static Factors {
    static F: std::sync::OnceLock<Factors> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let (mut f, mut pick) = (Vec::with_capacity(180 * 256), Vec::with_capacity(180 * 256));
        for h in 0..180u32 {
            for s in 0..256u32 {
                let hscale: f32 = 6.0 / 180.0;
                let s = s as f32 * (1.0 / 255.0);
                let mut hh = h as f32 * hscale;
                let pre = hh.trunc();
                hh -= pre;
                f.push([1.0, 1.0 - s, (-s).mul_add(hh, 1.0), (-s).mul_add(1.0 - hh, 1.0)]);
                let sector = (pre - (pre * (1.0f32 / 6.0)).trunc() * 6.0) as usize;
                const SECTOR: [[u8; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
                let k = SECTOR[sector.min(5)];
                pick.push([k[2], k[1], k[0]]); // (r, g, b)
            }
        }
        Factors { f, pick }
    })
}

/// ultralytics' three LUTs for gains `r` = uniform(-1, 1, 3) · (hsv_h, hsv_s, hsv_v), computed
/// in float64 and truncated to uint8 as numpy's `astype` does.
pub fn luts(r: [f64; 3]) -> [[u8; 256]; 3] {
    let mut l = [[0u8; 256]; 3];
    for i in 0..256 {
        let x = i as f64;
        let hue = (x + r[0] * 180.0).rem_euclid(180.0);
        l[0][i] = hue as u8;
        l[1][i] = (x * (r[1] + 1.0)).clamp(0.0, 255.0) as u8;
        l[2][i] = (x * (r[2] + 1.0)).clamp(0.0, 255.0) as u8;
    }
    l[1][0] = 0; // "prevent pure white changing color" (ultralytics 8.3.79)
    l
}

/// `RandomHSV.apply_image` with the gains already drawn.
pub fn random_hsv(img: &mut RgbImage, r: [f64; 3]) {
    let lut = luts(r);
    let w = img.width() as usize;
    let raw: &mut [u8] = img;
    hsv_rows(raw, w, &lut);
}

/// The conversion loop (compiled with AVX2+FMA when available: the same arithmetic, inline
/// instructions instead of libm calls for trunc/round/fma).
#[inline(always)]
fn hsv_rows_gen(raw: &mut [u8], w: usize, lut: &[[u8; 256]; 3]) {
    let (fa, t) = (factors(), tables());
    for row in raw.chunks_exact_mut(w * 3) {
        // OpenCV converts row by row: whole blocks of 32 pixels in its SIMD loop, the rest scalar.
        let simd_px = if w >= SIMD_PIXELS { (w - SIMD_PIXELS) / SIMD_PIXELS * SIMD_PIXELS + SIMD_PIXELS } else { 0 };
        for (x, p) in row.chunks_exact_mut(3).enumerate() {
            let [h, s, v] = hsv_with(t, p[0], p[1], p[2]);
            let (h, s, v) = (lut[0][h as usize] as usize, lut[1][s as usize] as usize, lut[2][v as usize]);
            let k = h.min(179) * 256 + s;
            let vf = v as f32 * (1.0 / 255.0);
            let f = &fa.f[k];
            let tab = [vf * f[0], vf * f[1], vf * f[2], vf * f[3]];
            let pick = fa.pick[k];
            let simd = x < simd_px;
            p[0] = quantize(tab[pick[0] as usize & 3], simd);
            p[1] = quantize(tab[pick[1] as usize & 3], simd);
            p[2] = quantize(tab[pick[2] as usize & 3], simd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_and_greys() {
        assert_eq!(rgb_to_hsv(255, 0, 0), [0, 255, 255]);
        assert_eq!(rgb_to_hsv(0, 255, 0), [60, 255, 255]);
        assert_eq!(rgb_to_hsv(0, 0, 255), [120, 255, 255]);
        assert_eq!(rgb_to_hsv(114, 114, 114), [0, 0, 114]);
        assert_eq!(hsv_to_rgb(0, 0, 114, false), [114; 3]);
        assert_eq!(hsv_to_rgb(60, 255, 255, false), [0, 255, 0]);
    }

    #[test]
    fn zero_gains_change_little() {
        // The round trip through 8-bit HSV is lossy; with zero gains most pixels come back within 2.
        let img0 = RgbImage::from_fn(64, 4, |x, y| image::Rgb([(x * 4) as u8, (y * 60) as u8, 200]));
        let mut img = img0.clone();
        random_hsv(&mut img, [0.0; 3]);
        let worst = img.as_raw().iter().zip(img0.as_raw()).map(|(a, b)| (*a as i32 - *b as i32).abs()).max().unwrap();
        assert!(worst <= 4, "{worst}");
    }

    #[test]
    fn lut_hue_wraps() {
        let l = luts([-0.5 / 180.0 * 180.0 / 180.0, 0.0, 0.0]);
        assert!(l[0].iter().all(|&h| h < 180));
        let l = luts([0.0, -1.0, 1.0]);
        assert_eq!((l[1][200], l[2][200], l[2][100]), (0, 255, 200));
    }
}
