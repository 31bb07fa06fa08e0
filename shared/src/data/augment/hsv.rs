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

/// Numerators of OpenCV's `sdiv_table` (255·2¹²) and `hdiv_table180` (180·2¹² / 6).
const SDIV_NUM: f32 = (255 << HSV_SHIFT) as f32;
const HDIV_NUM: f32 = ((180 << HSV_SHIFT) / 6) as f32;

/// Entry `d` of a division table `round(num / d)` (0 for d = 0), as the image loop computes it.
#[inline(always)]
fn div_entry(num: f32, d: i32) -> i32 {
    let q = if d > 0 { (num / d as f32).round_ties_even() } else { 0.0 };
    // SAFETY: q is finite and below 2²¹.
    unsafe { q.to_int_unchecked::<i32>() }
}

/// One pixel RGB → OpenCV 8-bit HSV (H in 0..180).
#[inline(always)]
pub fn rgb_to_hsv(r: u8, g: u8, b: u8) -> [u8; 3] {
    hsv_with(tables(), r, g, b)
}

/// [`rgb_to_hsv`] with the division tables at hand: the per-pixel reference the image loop
/// ([`hsv_rows_gen`]) is tested against.
#[inline(always)]
fn hsv_with(t: &Tables, r: u8, g: u8, b: u8) -> [u8; 3] {
    let (v, diff, num) = hsv_parts(r as i32, g as i32, b as i32);
    // v and diff are within 0..=255: the u8 casts are exact and spare the bounds checks
    let s = (diff * t.sdiv[v as u8 as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    let mut h = (num * t.hdiv180[diff as u8 as usize] + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
    if h < 0 {
        h += 180;
    }
    [h.clamp(0, 255) as u8, s as u8, v as u8]
}

/// RGB2HSV_b's V, V − min and hue numerator (before the division by the difference).
#[inline(always)]
fn hsv_parts(r: i32, g: i32, b: i32) -> (i32, i32, i32) {
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    let vr = if v == r { -1 } else { 0 };
    let vg = if v == g { -1 } else { 0 };
    (v, diff, (vr & (g - b)) + (!vr & ((vg & (b - r + 2 * diff)) + (!vg & (r - g + 4 * diff)))))
}

/// The f32 (b, g, r) in 0..1 of OpenCV's HSV2RGB_simd (also its scalar native path, which
/// computes the same products for s > 0 and returns v for s = 0 — the same values).
#[inline(always)]
fn hsv_to_rgb_f(h: u8, s: u8, v: u8) -> [f32; 3] {
    let (tab, sector) = hsv_tabs(h as f32, s as f32, v as f32);
    let sector = sector as i32;
    // (b, g, r) per sector: OpenCV's sector_data {{1,3,0}, {1,0,2}, {3,0,1}, {0,2,1}, {0,1,3}, {2,1,0}}.
    const SECTOR: [[usize; 3]; 6] = [[1, 3, 0], [1, 0, 2], [3, 0, 1], [0, 2, 1], [0, 1, 3], [2, 1, 0]];
    let k = SECTOR[sector.clamp(0, 5) as usize];
    [tab[k[0]], tab[k[1]], tab[k[2]]]
}

/// HSV2RGB_simd's four candidate values `v`, `v(1 - s)`, `v(1 - s·h)`, `v(1 - s(1 - h))` (h
/// the fraction within the sector) and the sector 0..6 (as a float), from 8-bit H, S, V.
#[inline(always)]
fn hsv_tabs(h: f32, s: f32, v: f32) -> ([f32; 4], f32) {
    let (hscale, c0) = (6.0f32 / 180.0, 1.0f32 / 255.0);
    let (s, v) = (s * c0, v * c0);
    let mut hh = h * hscale;
    let pre = hh.trunc();
    hh -= pre;
    // GCC contracts `1 - s·h` into a fused multiply-add in OpenCV's AVX2 build (-ffp-contract=fast).
    let tab = [v, v * (1.0 - s), v * (-s).mul_add(hh, 1.0), v * (-s).mul_add(1.0 - hh, 1.0)];
    (tab, pre - (pre * (1.0f32 / 6.0)).trunc() * 6.0)
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

/// Pixels per chunk of the image loop: the per-chunk arrays stay in L1 and the passes over
/// them are long enough to vectorise.
const CHUNK: usize = 64;

/// One chunk's planes, reused across chunks (lanes past a short tail hold finite values from
/// the previous chunk; only the LUT pass, whose indices must be in range, is bounded by the
/// chunk length).
struct Planes {
    r: [i32; CHUNK],
    g: [i32; CHUNK],
    b: [i32; CHUNK],
    v: [i32; CHUNK],
    /// OpenCV's 8-bit H and S of each pixel (the LUT indices)
    h: [i32; CHUNK],
    s: [i32; CHUNK],
    /// the same after the gains' LUTs, as floats
    hf: [f32; CHUNK],
    sf: [f32; CHUNK],
    vf: [f32; CHUNK],
    out: [[u8; CHUNK]; 3],
}

/// The conversion loop (compiled with AVX2+FMA when available: the same arithmetic, vector
/// instructions instead of libm calls for trunc/round/fma).
///
/// Why chunks: per pixel, the conversion is min/max/select integer arithmetic, five table
/// lookups and f32 arithmetic with a per-sector select. Written per pixel, none of it
/// vectorises. Split into passes over 64 pixels — deinterleave, integer HSV with the division
/// tables computed (vector), the gains' LUTs (scalar), HSV→RGB with selects and quantisation
/// (vector), interleave — only the three LUT reads stay scalar. The result is exactly
/// [`hsv_with`] and [`hsv_to_rgb_f`] per pixel (a unit test compares every pixel).
#[inline(always)]
fn hsv_rows_gen(raw: &mut [u8], w: usize, lut: &[[u8; 256]; 3]) {
    let mut p = Planes {
        r: [0; CHUNK],
        g: [0; CHUNK],
        b: [0; CHUNK],
        v: [0; CHUNK],
        h: [0; CHUNK],
        s: [0; CHUNK],
        hf: [0.0; CHUNK],
        sf: [0.0; CHUNK],
        vf: [0.0; CHUNK],
        out: [[0; CHUNK]; 3],
    };
    // the gains' LUTs as floats (the hue's clamped to 179 as OpenCV's sector arithmetic needs)
    let lut: [[f32; 256]; 3] =
        std::array::from_fn(|k| std::array::from_fn(|i| if k == 0 { lut[0][i].min(179) } else { lut[k][i] } as f32));
    for row in raw.chunks_exact_mut(w * 3) {
        // OpenCV converts row by row: whole blocks of 32 pixels in its SIMD loop, the rest scalar.
        let simd_px = if w >= SIMD_PIXELS { (w - SIMD_PIXELS) / SIMD_PIXELS * SIMD_PIXELS + SIMD_PIXELS } else { 0 };
        for (c, px) in row.chunks_mut(CHUNK * 3).enumerate() {
            hsv_chunk(&mut p, px, c * CHUNK, simd_px, &lut);
        }
    }
}

#[inline(always)]
fn hsv_chunk(p: &mut Planes, px: &mut [u8], x0: usize, simd_px: usize, lut: &[[f32; 256]; 3]) {
    let n = px.len() / 3;
    for (i, q) in px.chunks_exact(3).enumerate().take(CHUNK) {
        (p.r[i], p.g[i], p.b[i]) = (q[0] as i32, q[1] as i32, q[2] as i32);
    }
    // RGB→HSV, the integer part of hsv_with (vectorised)
    for i in 0..CHUNK {
        let (v, diff, num) = hsv_parts(p.r[i], p.g[i], p.b[i]);
        // OpenCV's division tables, computed: the f32 quotient rounds to the table's integer
        // for every entry (a test checks all 255), and divisions vectorise where loads do not
        let s = (diff * div_entry(SDIV_NUM, v) + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        let mut h = (num * div_entry(HDIV_NUM, diff) + (1 << (HSV_SHIFT - 1))) >> HSV_SHIFT;
        h += if h < 0 { 180 } else { 0 };
        p.h[i] = h.clamp(0, 255);
        p.s[i] = s.clamp(0, 255);
        p.v[i] = v;
    }
    // the gains' LUTs (scalar lookups; every index is within 0..=255). AVX2 gathers measured
    // slower than these loads on the benchmark machine (RESULTS.md).
    for i in 0..n.min(CHUNK) {
        p.hf[i] = lut[0][p.h[i] as u8 as usize];
        p.sf[i] = lut[1][p.s[i] as u8 as usize];
        p.vf[i] = lut[2][p.v[i] as u8 as usize];
    }
    // HSV→RGB, hsv_to_rgb_f with the sector's table picked by selects, then quantize (vectorised)
    for i in 0..CHUNK {
        let ([tab0, tab1, tab2, tab3], sector) = hsv_tabs(p.hf[i], p.sf[i], p.vf[i]);
        // OpenCV's sector_data {{1,3,0}, {1,0,2}, {3,0,1}, {0,2,1}, {0,1,3}, {2,1,0}} as (b, g, r)
        let r = if sector < 1.0 {
            tab0
        } else if sector < 2.0 {
            tab2
        } else if sector < 4.0 {
            tab1
        } else if sector < 5.0 {
            tab3
        } else {
            tab0
        };
        let g = if sector < 1.0 {
            tab3
        } else if sector < 3.0 {
            tab0
        } else if sector < 4.0 {
            tab2
        } else {
            tab1
        };
        let b = if sector < 2.0 {
            tab1
        } else if sector < 3.0 {
            tab3
        } else if sector < 5.0 {
            tab0
        } else {
            tab2
        };
        let simd = x0 + i < simd_px;
        p.out[0][i] = quantize(r, simd);
        p.out[1][i] = quantize(g, simd);
        p.out[2][i] = quantize(b, simd);
    }
    crate::data::image::merge_channels([&p.out[0], &p.out[1], &p.out[2]], &mut px[..3 * n.min(CHUNK)]);
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
    fn computed_division_entries_equal_the_tables() {
        let t = tables();
        for d in 0..256 {
            assert_eq!(div_entry(SDIV_NUM, d as i32), t.sdiv[d], "sdiv[{d}]");
            assert_eq!(div_entry(HDIV_NUM, d as i32), t.hdiv180[d], "hdiv180[{d}]");
        }
    }

    #[test]
    fn lut_hue_wraps() {
        let l = luts([-0.5 / 180.0 * 180.0 / 180.0, 0.0, 0.0]);
        assert!(l[0].iter().all(|&h| h < 180));
        let l = luts([0.0, -1.0, 1.0]);
        assert_eq!((l[1][200], l[2][200], l[2][100]), (0, 255, 200));
    }

    #[test]
    fn chunked_loop_equals_per_pixel_conversion() {
        // every lane of every pass, on widths with chunk and SIMD-block tails, with random gains
        let mut seed = 7u64;
        let mut next = || {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as u32
        };
        for (w, h) in [(640u32, 3u32), (70, 5), (31, 2), (129, 4), (1, 1)] {
            let img0 = RgbImage::from_fn(w, h, |_, _| image::Rgb([next() as u8, next() as u8, next() as u8]));
            for _ in 0..4 {
                let r = [0, 1, 2].map(|_| (next() % 2001) as f64 / 1000.0 - 1.0).map(|x| x * 0.9);
                let lut = luts(r);
                let mut img = img0.clone();
                random_hsv(&mut img, r);
                let simd_px = if w as usize >= SIMD_PIXELS {
                    (w as usize - SIMD_PIXELS) / SIMD_PIXELS * SIMD_PIXELS + SIMD_PIXELS
                } else {
                    0
                };
                for (x, y, p) in img0.enumerate_pixels() {
                    let [hh, ss, vv] = rgb_to_hsv(p.0[0], p.0[1], p.0[2]);
                    let want = hsv_to_rgb(
                        lut[0][hh as usize],
                        lut[1][ss as usize],
                        lut[2][vv as usize],
                        (x as usize) < simd_px,
                    );
                    assert_eq!(img.get_pixel(x, y).0, want, "width {w} pixel ({x}, {y}) gains {r:?}");
                }
            }
        }
    }
}
