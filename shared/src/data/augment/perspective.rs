//! ultralytics' `RandomPerspective`: the random matrix `M = T·S·R·P·C`, the image warp, the box
//! transform and the `box_candidates` filter.
//!
//! The warp reproduces OpenCV 5.0's `warpAffine` / `warpPerspective` for 8-bit 3-channel images
//! with INTER_LINEAR and a constant border (114), which ultralytics calls. OpenCV 5 no longer
//! uses the fixed-point `remap` tables of OpenCV 4: its `WarpAffineLinearInvoker_8UC3` inverts
//! the matrix in double, casts it to float, and computes, per destination pixel,
//! `sx = fma(M0, x, y·M1 + M2)` (the row term rounded to f32 first), `ix = floor(sx)`,
//! `a = sx - ix`, then interpolates with fused multiply-adds `p00 + a·(p01 - p00)` along x and
//! again along y, and rounds half to even. Neighbours outside the source take the border value;
//! a pixel whose 2×2 neighbourhood is entirely outside is the border value. This was pinned down
//! by comparing candidate formulas against cv2 5.0.0 (AVX2 dispatch) on random images: the
//! formula here matched every pixel; variants without FMA differed by 1 on ~1e-4 of them.

use image::RgbImage;
use rand::Rng;

use super::{uniform, AugmentConfig, Sample};
use crate::data::image::PAD_VALUE;
use crate::nn::cpu::fastmath::multiversioned;

/// The random draws of one `RandomPerspective` call, in ultralytics' order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AffineDraws {
    /// P[2,0], P[2,1].
    pub perspective: [f64; 2],
    /// Rotation in degrees.
    pub angle: f64,
    pub scale: f64,
    /// x and y shear in degrees.
    pub shear: [f64; 2],
    /// Translation as a fraction of the output size (0.5 = centred).
    pub translate: [f64; 2],
}

impl AffineDraws {
    pub fn draw(rng: &mut impl Rng, c: &AugmentConfig) -> Self {
        let p0 = uniform(rng, -c.perspective, c.perspective);
        let p1 = uniform(rng, -c.perspective, c.perspective);
        let angle = uniform(rng, -c.degrees, c.degrees);
        let scale = uniform(rng, 1.0 - c.scale, 1.0 + c.scale);
        let s0 = uniform(rng, -c.shear, c.shear);
        let s1 = uniform(rng, -c.shear, c.shear);
        let t0 = uniform(rng, 0.5 - c.translate, 0.5 + c.translate);
        let t1 = uniform(rng, 0.5 - c.translate, 0.5 + c.translate);
        AffineDraws { perspective: [p0, p1], angle, scale, shear: [s0, s1], translate: [t0, t1] }
    }
}

/// 3×3 matrix in f32, as ultralytics builds it (numpy float32).
pub type Mat3 = [[f32; 3]; 3];

fn eye() -> Mat3 {
    [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
}

fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut c = [[0f32; 3]; 3];
    for i in 0..3 {
        for j in 0..3 {
            c[i][j] = a[i][0] * b[0][j] + a[i][1] * b[1][j] + a[i][2] * b[2][j];
        }
    }
    c
}

/// `RandomPerspective._compute_affine_matrix` for an input of `img_w`×`img_h` and an output
/// of `size` (w, h). Returns M and the scale (for `box_candidates`).
pub fn affine_matrix(d: &AffineDraws, img_w: usize, img_h: usize, size: (usize, usize)) -> (Mat3, f64) {
    let mut c = eye();
    c[0][2] = (-(img_w as f64) / 2.0) as f32;
    c[1][2] = (-(img_h as f64) / 2.0) as f32;
    let mut p = eye();
    p[2][0] = d.perspective[0] as f32;
    p[2][1] = d.perspective[1] as f32;
    // cv2.getRotationMatrix2D(angle, center=(0, 0), scale), computed in double.
    let a = d.angle * std::f64::consts::PI / 180.0;
    let (alpha, beta) = (a.cos() * d.scale, a.sin() * d.scale);
    let mut r = eye();
    r[0] = [alpha as f32, beta as f32, 0.0];
    r[1] = [-beta as f32, alpha as f32, 0.0];
    let mut s = eye();
    s[0][1] = (d.shear[0] * std::f64::consts::PI / 180.0).tan() as f32;
    s[1][0] = (d.shear[1] * std::f64::consts::PI / 180.0).tan() as f32;
    let mut t = eye();
    t[0][2] = (d.translate[0] * size.0 as f64) as f32;
    t[1][2] = (d.translate[1] * size.1 as f64) as f32;
    let m = matmul(&matmul(&matmul(&matmul(&t, &s), &r), &p), &c);
    (m, d.scale)
}

/// `RandomPerspective.apply_image` + `apply_instances` with the matrix given.
pub fn random_perspective(sample: &Sample, m: &Mat3, scale: f64, size: (usize, usize), perspective: bool) -> Sample {
    random_perspective_at(sample, (0, 0), m, scale, size, perspective)
}

/// [`random_perspective`] of a source of which `sample.img` holds only the part from pixel
/// `origin` on (see [`source_region`]); boxes and `m` are in whole-source coordinates.
pub fn random_perspective_at(
    sample: &Sample,
    origin: (usize, usize),
    m: &Mat3,
    scale: f64,
    size: (usize, usize),
    perspective: bool,
) -> Sample {
    let img = if perspective {
        warp_perspective_at(&sample.img, origin, m, size)
    } else {
        warp_affine_at(&sample.img, origin, m, size)
    };
    let mut boxes = Vec::with_capacity(sample.boxes.len());
    for b in &sample.boxes {
        let corners = [(b[0], b[1]), (b[2], b[3]), (b[0], b[3]), (b[2], b[1])];
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (x, y) in corners {
            let mut px = x * m[0][0] + y * m[0][1] + m[0][2];
            let mut py = x * m[1][0] + y * m[1][1] + m[1][2];
            if perspective {
                let pz = x * m[2][0] + y * m[2][1] + m[2][2];
                px /= pz;
                py /= pz;
            }
            x0 = x0.min(px);
            x1 = x1.max(px);
            y0 = y0.min(py);
            y1 = y1.max(py);
        }
        boxes.push([x0, y0, x1, y1]);
    }
    let mut out = Sample { img, boxes, cls: sample.cls.clone() };
    out.clip(size.0 as f32, size.1 as f32);
    // box_candidates against the original boxes scaled by the drawn scale.
    let keep: Vec<bool> = sample
        .boxes
        .iter()
        .zip(&out.boxes)
        .map(|(b1, b2)| {
            let s = scale as f32;
            box_candidate([b1[0] * s, b1[1] * s, b1[2] * s, b1[3] * s], *b2, 0.10)
        })
        .collect();
    let mut it = keep.into_iter();
    out.retain(|_| it.next().unwrap_or(false));
    out
}

/// ultralytics' `box_candidates` (wh_thr 2 px, aspect ratio < 100, area ratio > `area_thr`).
pub fn box_candidate(b1: [f32; 4], b2: [f32; 4], area_thr: f32) -> bool {
    const EPS: f32 = 1e-16;
    let (w1, h1) = (b1[2] - b1[0], b1[3] - b1[1]);
    let (w2, h2) = (b2[2] - b2[0], b2[3] - b2[1]);
    let ar = (w2 / (h2 + EPS)).max(h2 / (w2 + EPS));
    w2 > 2.0 && h2 > 2.0 && w2 * h2 / (w1 * h1 + EPS) > area_thr && ar < 100.0
}

/// cv2's inversion of a 2×3 affine matrix (`invertAffineTransform` as `warpAffine` does it, in double).
fn invert_affine(m: &Mat3) -> [f64; 6] {
    let mut a = [m[0][0] as f64, m[0][1] as f64, m[0][2] as f64, m[1][0] as f64, m[1][1] as f64, m[1][2] as f64];
    let d = a[0] * a[4] - a[1] * a[3];
    let d = if d != 0.0 { 1.0 / d } else { 0.0 };
    let (a11, a22) = (a[4] * d, a[0] * d);
    a[0] = a11;
    a[1] *= -d;
    a[3] *= -d;
    a[4] = a22;
    let b1 = -a[0] * a[2] - a[1] * a[5];
    let b2 = -a[3] * a[2] - a[4] * a[5];
    a[2] = b1;
    a[5] = b2;
    a
}

/// Destination pixels per chunk of a row. Each chunk runs in three passes over arrays:
/// coordinates to integer parts and fractions, the neighbour gather (scalar loads), and the
/// interpolation. The first and last passes are plain loops over arrays that the compiler
/// vectorises (8 lanes with AVX2). The arithmetic is that of a per-pixel loop, so results are
/// bit-identical to it and to OpenCV.
const CHUNK: usize = 64;

/// Per-chunk working arrays: source coordinates, fractions, integer parts, the four neighbours
/// (p00, p01, p10, p11) of each pixel packed as `r | g << 8 | b << 16` (one 4-byte load each in
/// the image's interior; the top byte is unused), and the output channels.
struct Chunk {
    sx: [f32; CHUNK],
    sy: [f32; CHUNK],
    a: [f32; CHUNK],
    b: [f32; CHUNK],
    ix: [i32; CHUNK],
    iy: [i32; CHUNK],
    p: [[u32; CHUNK]; 4],
    q: [[u8; CHUNK]; 3],
}

/// A border pixel (114, 114, 114) packed as the neighbours are.
const PAD_PACKED: u32 = PAD_VALUE as u32 * 0x01_01_01;

impl Chunk {
    fn new() -> Box<Self> {
        Box::new(Chunk {
            sx: [0.0; CHUNK],
            sy: [0.0; CHUNK],
            a: [0.0; CHUNK],
            b: [0.0; CHUNK],
            ix: [0; CHUNK],
            iy: [0; CHUNK],
            p: [[0; CHUNK]; 4],
            q: [[0; CHUNK]; 3],
        })
    }

    /// Bilinear samples at `(sx[i], sy[i])`, i < n, as OpenCV 5's warp kernels compute them (see
    /// the module docs), into `seg` (n RGB pixels).
    #[inline(always)]
    fn sample(&mut self, src: &[u8], (sw, sh): (usize, usize), (ox, oy): (i32, i32), n: usize, seg: &mut [u8]) {
        for i in 0..n {
            let fx = self.sx[i].floor();
            let fy = self.sy[i].floor();
            self.a[i] = self.sx[i] - fx;
            self.b[i] = self.sy[i] - fy;
            // integer parts relative to the part of the source `src` holds (exact: the
            // coordinates and fractions are those of the whole source)
            self.ix[i] = to_i32(fx) - ox;
            self.iy[i] = to_i32(fy) - oy;
        }
        assert!(src.len() >= sw * sh * 3, "warp: source buffer smaller than its size");
        let (swi, shi) = (sw as i64, sh as i64);
        // the last column/row with a right/lower neighbour (none in an image under 2×2)
        let (xmax, ymax) = (sw.saturating_sub(1) as u64, sh.saturating_sub(1) as u64);
        // 4-byte loads at all four neighbours stay inside the buffer for offsets below this
        // (o + 3·sw + 3 + 4 <= len); 0 when no offset qualifies
        let lim = (src.len() + 1).saturating_sub(sw * 3 + 7);
        // Most chunks lie wholly inside the source: test that once (a vectorised pass), then
        // load without per-pixel branches.
        let lim_px = lim.div_ceil(3);
        if sw * sh <= i32::MAX as usize / 3 && lim_px > 0 {
            let (xm, ym, lp, swi32) = (xmax as u32, ymax as u32, lim_px as u32, sw as i32);
            let mut outside = 0u32;
            for i in 0..n {
                let (ix, iy) = (self.ix[i], self.iy[i]);
                let px = iy.wrapping_mul(swi32).wrapping_add(ix) as u32;
                outside |= ((ix as u32) >= xm) as u32 | ((iy as u32) >= ym) as u32 | (px >= lp) as u32;
            }
            if outside == 0 {
                self.gather_interior(src, sw, n);
                return self.interpolate(n, seg);
            }
        }
        for i in 0..n {
            let (ix, iy) = (self.ix[i] as i64, self.iy[i] as i64);
            // unsigned compares: a negative value wraps to a huge one
            let o = (iy as usize).wrapping_mul(sw).wrapping_add(ix as usize).wrapping_mul(3);
            if (ix as u64) < xmax && (iy as u64) < ymax && o < lim {
                // all four neighbours inside, and 4 bytes readable at each: no border checks
                self.load_neighbours(src, sw, i, o);
            } else if ((ix + 1) as u64) > swi as u64 || ((iy + 1) as u64) > shi as u64 {
                // the whole 2×2 neighbourhood is outside: the border value, exactly
                self.a[i] = 0.0;
                self.b[i] = 0.0;
                for k in 0..4 {
                    self.p[k][i] = PAD_PACKED;
                }
            } else {
                for (k, (dy, dx)) in [(0i64, 0i64), (0, 1), (1, 0), (1, 1)].into_iter().enumerate() {
                    let (yy, xx) = (iy + dy, ix + dx);
                    let inside = xx >= 0 && xx < swi && yy >= 0 && yy < shi;
                    self.p[k][i] = if inside {
                        let o = (yy as usize * sw + xx as usize) * 3;
                        src[o] as u32 | (src[o + 1] as u32) << 8 | (src[o + 2] as u32) << 16
                    } else {
                        PAD_PACKED
                    };
                }
            }
        }
        self.interpolate(n, seg);
    }

    /// The four neighbours of pixels 0..n, every one inside the source with 4 bytes readable
    /// at each (checked by the caller). Scalar loads: AVX2 gathers measured slower on the
    /// benchmark machine (RESULTS.md).
    #[inline(always)]
    fn gather_interior(&mut self, src: &[u8], sw: usize, n: usize) {
        for i in 0..n {
            let o = (self.iy[i] as usize * sw + self.ix[i] as usize) * 3;
            self.load_neighbours(src, sw, i, o);
        }
    }

    /// Pixel i's four neighbours as 4-byte loads at `o` (its top-left neighbour's offset), the
    /// caller having checked `o + 3·sw + 7 <= src.len()`.
    #[inline(always)]
    fn load_neighbours(&mut self, src: &[u8], sw: usize, i: usize, o: usize) {
        debug_assert!(o + 3 * sw + 7 <= src.len());
        // SAFETY: every load ends at or before o + 3·sw + 7 <= src.len() (checked by the caller).
        let load4 = |o: usize| u32::from_le_bytes(unsafe { *(src.as_ptr().add(o) as *const [u8; 4]) });
        self.p[0][i] = load4(o);
        self.p[1][i] = load4(o + 3);
        self.p[2][i] = load4(o + sw * 3);
        self.p[3][i] = load4(o + sw * 3 + 3);
    }

    /// The bilinear interpolation of the gathered neighbours into `seg` (n RGB pixels).
    #[inline(always)]
    fn interpolate(&mut self, n: usize, seg: &mut [u8]) {
        for c in 0..3 {
            let [p0, p1, p2, p3] = [&self.p[0], &self.p[1], &self.p[2], &self.p[3]];
            let ch = |v: u32| ((v >> (8 * c)) & 0xff) as f32;
            for i in 0..n {
                let (p0, p1, p2, p3) = (ch(p0[i]), ch(p1[i]), ch(p2[i]), ch(p3[i]));
                let v0 = self.a[i].mul_add(p1 - p0, p0);
                let v1 = self.a[i].mul_add(p3 - p2, p2);
                let v = self.b[i].mul_add(v1 - v0, v0);
                // max/min (not clamp) map NaN to 0 as `as u8` would; in range, the cast is exact
                let v = v.round_ties_even().max(0.0).min(255.0);
                // SAFETY: v is finite and within 0..=255.
                self.q[c][i] = unsafe { v.to_int_unchecked::<i32>() } as u8;
            }
        }
        crate::data::image::merge_channels([&self.q[0], &self.q[1], &self.q[2]], &mut seg[..3 * n]);
    }
}

/// `x as i32` for a floored coordinate, in a form the compiler vectorises: NaN gives 0 (as
/// the saturating cast does) and values beyond ±1e9 are clamped there, which leaves every
/// coordinate that far out outside the image, as the saturated value would.
#[inline(always)]
fn to_i32(x: f32) -> i32 {
    let x = if x.is_nan() { 0.0 } else { x.max(-1e9).min(1e9) };
    // SAFETY: x is finite and within i32's range.
    unsafe { x.to_int_unchecked::<i32>() }
}

/// The affine warp's rows (compiled with AVX2+FMA when available: the same arithmetic, inline
/// `fma`/`round` instructions and 8-lane loops instead of libm calls).
#[inline(always)]
fn affine_rows_gen(src: &[u8], sw: usize, sh: usize, origin: (i32, i32), mf: &[f32; 6], w: usize, out: &mut [u8]) {
    let mut ch = Chunk::new();
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        let yf = y as f32;
        let rx = yf * mf[1] + mf[2];
        let ry = yf * mf[4] + mf[5];
        for (x0, seg) in (0..w).step_by(CHUNK).zip(row.chunks_mut(CHUNK * 3)) {
            let n = seg.len() / 3;
            for i in 0..n {
                let xf = (x0 + i) as i32 as f32;
                ch.sx[i] = mf[0].mul_add(xf, rx);
                ch.sy[i] = mf[3].mul_add(xf, ry);
            }
            ch.sample(src, (sw, sh), origin, n, seg);
        }
    }
}
multiversioned!(fn affine_rows = affine_rows_gen / affine_rows_avx2(src: &[u8], sw: usize, sh: usize, origin: (i32, i32), mf: &[f32; 6], w: usize, out: &mut [u8]) -> ());

#[inline(always)]
fn perspective_rows_gen(src: &[u8], sw: usize, sh: usize, origin: (i32, i32), mf: &[f32; 9], w: usize, out: &mut [u8]) {
    let mut ch = Chunk::new();
    for (y, row) in out.chunks_exact_mut(w * 3).enumerate() {
        let yf = y as f32;
        let (rx, ry, rw) = (yf * mf[1] + mf[2], yf * mf[4] + mf[5], yf * mf[7] + mf[8]);
        for (x0, seg) in (0..w).step_by(CHUNK).zip(row.chunks_mut(CHUNK * 3)) {
            let n = seg.len() / 3;
            for i in 0..n {
                let xf = (x0 + i) as i32 as f32;
                let ww = mf[6].mul_add(xf, rw);
                let ww = if ww != 0.0 { 1.0 / ww } else { 0.0 };
                ch.sx[i] = mf[0].mul_add(xf, rx) * ww;
                ch.sy[i] = mf[3].mul_add(xf, ry) * ww;
            }
            ch.sample(src, (sw, sh), origin, n, seg);
        }
    }
}
multiversioned!(fn perspective_rows = perspective_rows_gen / perspective_rows_avx2(src: &[u8], sw: usize, sh: usize, origin: (i32, i32), mf: &[f32; 9], w: usize, out: &mut [u8]) -> ());

/// `cv2.warpAffine(img, M[:2], dsize=size, borderValue=114)` (INTER_LINEAR, 8-bit RGB).
pub fn warp_affine(img: &RgbImage, m: &Mat3, size: (usize, usize)) -> RgbImage {
    warp_affine_at(img, (0, 0), m, size)
}

/// [`warp_affine`] of a source of which `img` holds the part from pixel `origin` on, holding
/// at least the pixels [`source_region`] names (the rest of the source is never read).
pub fn warp_affine_at(img: &RgbImage, origin: (usize, usize), m: &Mat3, size: (usize, usize)) -> RgbImage {
    let inv = invert_affine(m);
    let mf = inv.map(|v| v as f32);
    let (w, h) = size;
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w * h * 3];
    affine_rows(src, sw, sh, origin_i32(origin), &mf, w, &mut out);
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer size matches")
}

fn origin_i32((x, y): (usize, usize)) -> (i32, i32) {
    (i32::try_from(x).expect("warp origin"), i32::try_from(y).expect("warp origin"))
}

/// A rectangle of a warp's source: columns `x0..x1`, rows `y0..y1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

impl Region {
    /// The whole of a `size`² source.
    pub fn whole(size: usize) -> Self {
        Region { x0: 0, y0: 0, x1: size, y1: size }
    }
}

/// The part of a `src` (w, h) source that `warp_affine` into `size` reads: every pixel a
/// destination pixel interpolates from, with a 2-pixel margin for the f32 coordinates (the
/// bound is computed in f64 from the corners, where an affine map takes its extremes). None
/// when the matrix is degenerate or the part is empty.
pub fn source_region(m: &Mat3, size: (usize, usize), src: (usize, usize)) -> Option<Region> {
    let inv = invert_affine(m);
    let (w, h) = (size.0.max(1) as f64 - 1.0, size.1.max(1) as f64 - 1.0);
    let corners = [(0.0, 0.0), (w, 0.0), (0.0, h), (w, h)];
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for (x, y) in corners {
        let (sx, sy) = (inv[0] * x + inv[1] * y + inv[2], inv[3] * x + inv[4] * y + inv[5]);
        (x0, y0, x1, y1) = (x0.min(sx), y0.min(sy), x1.max(sx), y1.max(sy));
    }
    if ![x0, y0, x1, y1].iter().all(|v| v.is_finite() && v.abs() < 1e9) {
        return None;
    }
    // neighbours floor(s) and floor(s) + 1, plus the margin; clamped to the source
    let lo = |v: f64| (v.floor() - 2.0).max(0.0) as usize;
    let (rx0, ry0) = (lo(x0), lo(y0));
    let (rx1, ry1) =
        (((x1.floor() + 4.0).max(0.0) as usize).min(src.0), ((y1.floor() + 4.0).max(0.0) as usize).min(src.1));
    (rx0 < rx1 && ry0 < ry1).then_some(Region { x0: rx0, y0: ry0, x1: rx1, y1: ry1 })
}

/// `cv2.warpPerspective(img, M, dsize=size, borderValue=114)` (INTER_LINEAR, 8-bit RGB): the
/// inverse (LU, double) maps each destination pixel to `(X/W, Y/W)`, then the same bilinear
/// sampling as [`warp_affine`]. Only used when `perspective` is non-zero (ultralytics' default
/// is 0); the parity fixtures cover the affine path.
pub fn warp_perspective(img: &RgbImage, m: &Mat3, size: (usize, usize)) -> RgbImage {
    warp_perspective_at(img, (0, 0), m, size)
}

/// [`warp_perspective`] of a source of which `img` holds the part from pixel `origin` on.
fn warp_perspective_at(img: &RgbImage, origin: (usize, usize), m: &Mat3, size: (usize, usize)) -> RgbImage {
    let inv = invert3(m);
    let mf: [f32; 9] = inv.map(|v| v as f32);
    let (w, h) = size;
    let (sw, sh) = (img.width() as usize, img.height() as usize);
    let src = img.as_raw();
    let mut out = vec![0u8; w * h * 3];
    perspective_rows(src, sw, sh, origin_i32(origin), &mf, w, &mut out);
    RgbImage::from_raw(w as u32, h as u32, out).expect("buffer size matches")
}

/// Inverse of a 3×3 matrix in double (adjugate / determinant); a singular matrix gives zeros.
fn invert3(m: &Mat3) -> [f64; 9] {
    let a: Vec<f64> = m.iter().flatten().map(|&v| v as f64).collect();
    let det =
        a[0] * (a[4] * a[8] - a[5] * a[7]) - a[1] * (a[3] * a[8] - a[5] * a[6]) + a[2] * (a[3] * a[7] - a[4] * a[6]);
    if det == 0.0 {
        return [0.0; 9];
    }
    let d = 1.0 / det;
    [
        (a[4] * a[8] - a[5] * a[7]) * d,
        (a[2] * a[7] - a[1] * a[8]) * d,
        (a[1] * a[5] - a[2] * a[4]) * d,
        (a[5] * a[6] - a[3] * a[8]) * d,
        (a[0] * a[8] - a[2] * a[6]) * d,
        (a[2] * a[3] - a[0] * a[5]) * d,
        (a[3] * a[7] - a[4] * a[6]) * d,
        (a[1] * a[6] - a[0] * a[7]) * d,
        (a[0] * a[4] - a[1] * a[3]) * d,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_warp_copies_and_translation_pads() {
        let img = RgbImage::from_fn(20, 10, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let out = warp_affine(&img, &eye(), (20, 10));
        assert_eq!(out, img);
        let mut t = eye();
        t[0][2] = 5.0;
        let out = warp_affine(&img, &t, (20, 10));
        assert_eq!(out.get_pixel(4, 3).0, [114; 3]);
        assert_eq!(out.get_pixel(5, 3).0, img.get_pixel(0, 3).0);
    }

    #[test]
    fn far_outside_coordinates_pad_across_chunk_tails() {
        // 100 px wide: one whole chunk and a tail. The inverse scales by 1e30, so every
        // destination pixel but (0, 0) samples beyond i32 coordinates: the border value.
        let img = RgbImage::from_fn(100, 3, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut m = eye();
        m[0][0] = 1e-30;
        m[1][1] = 1e-30;
        for perspective in [false, true] {
            let out = if perspective { warp_perspective(&img, &m, (100, 3)) } else { warp_affine(&img, &m, (100, 3)) };
            assert_eq!(out.get_pixel(0, 0).0, img.get_pixel(0, 0).0);
            assert!(out
                .enumerate_pixels()
                .filter(|(x, y, _)| (*x, *y) != (0, 0))
                .all(|(_, _, p)| p.0 == [PAD_VALUE; 3]));
        }
    }

    #[test]
    fn interior_fast_path_equals_per_byte_sampling_up_to_the_last_pixel() {
        // Half-pixel shifts put every destination pixel between four source pixels, the last
        // one's lower-right neighbour being the buffer's final pixel (the 4-byte loads' limit).
        for (w, h) in [(2u32, 2u32), (3, 3), (5, 4), (70, 3)] {
            let img = RgbImage::from_fn(w, h, |x, y| {
                image::Rgb([(x * 37 + y * 11) as u8, (x * 5 + y * 90) as u8, (x * y * 13 + 1) as u8])
            });
            let mut m = eye();
            m[0][2] = -0.5;
            m[1][2] = -0.5;
            let out = warp_affine(&img, &m, (w as usize, h as usize));
            for (x, y, p) in out.enumerate_pixels() {
                let px = |xx: i64, yy: i64, c: usize| -> f32 {
                    if xx < w as i64 && yy < h as i64 {
                        img.get_pixel(xx as u32, yy as u32).0[c] as f32
                    } else {
                        PAD_VALUE as f32
                    }
                };
                let (ix, iy) = (x as i64, y as i64);
                for c in 0..3 {
                    let v0 = 0.5f32.mul_add(px(ix + 1, iy, c) - px(ix, iy, c), px(ix, iy, c));
                    let v1 = 0.5f32.mul_add(px(ix + 1, iy + 1, c) - px(ix, iy + 1, c), px(ix, iy + 1, c));
                    let want = 0.5f32.mul_add(v1 - v0, v0).round_ties_even() as u8;
                    assert_eq!(p.0[c], want, "{w}x{h} pixel ({x}, {y}) channel {c}");
                }
            }
        }
    }

    #[test]
    fn centred_unit_matrix_keeps_boxes() {
        let d = AffineDraws { perspective: [0.0; 2], angle: 0.0, scale: 1.0, shear: [0.0; 2], translate: [0.5, 0.5] };
        let (m, _) = affine_matrix(&d, 64, 64, (64, 64));
        let s = Sample {
            img: RgbImage::new(64, 64),
            boxes: vec![[10.0, 10.0, 30.0, 40.0], [0.0, 0.0, 1.0, 1.0]],
            cls: vec![1, 2],
        };
        let out = random_perspective(&s, &m, 1.0, (64, 64), false);
        // the 1-px box fails box_candidates' 2-px minimum.
        assert_eq!(out.boxes, vec![[10.0, 10.0, 30.0, 40.0]]);
        assert_eq!(out.cls, vec![1]);
    }
}
