//! Raw views into batch buffers shared by the fused CPU kernels (training ops and the eval
//! path): a [`View`] says where each image's channels lie, a [`Buf`] lets parallel tasks read
//! one channel range of a buffer while writing another (a C2f's concatenation buffer).

use std::sync::Mutex;

use candle_core::Result;

use rayon::prelude::*;

/// Where each image's block lies in a batch buffer: image `i` starts at `off + i·stride`.
/// A contiguous NCHW tensor is `View::whole(C·H·W)`; channels `c0..` of a concatenation buffer
/// with `C_total` channels are `View { off: c0·H·W, stride: C_total·H·W }`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct View {
    pub off: usize,
    pub stride: usize,
}

impl View {
    pub fn whole(image_len: usize) -> Self {
        View { off: 0, stride: image_len }
    }
    /// Channels starting at `c0` of a buffer with `c_total` channels of `hw` pixels each.
    pub fn channels(c0: usize, c_total: usize, hw: usize) -> Self {
        View { off: c0 * hw, stride: c_total * hw }
    }
}

/// A batch buffer shared by parallel tasks that each touch their own images only.
///
/// Raw pointer instead of slices because a block's forward/backward reads one channel range of a
/// buffer while writing another range of the same buffer (a C2f's concatenation buffer), which
/// Rust references covering the whole buffer cannot express.
#[derive(Clone, Copy)]
pub(crate) struct Buf {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: tasks only form slices of disjoint image ranges (see `img` / `img_mut`).
unsafe impl Send for Buf {}
unsafe impl Sync for Buf {}

impl Buf {
    pub fn of(v: &mut [f32]) -> Self {
        Buf { ptr: v.as_mut_ptr(), len: v.len() }
    }
    /// A buffer that is only ever read through this handle.
    pub fn of_const(v: &[f32]) -> Self {
        Buf { ptr: v.as_ptr() as *mut f32, len: v.len() }
    }
    fn range(&self, v: View, i: usize, len: usize) -> usize {
        let start = v.off + i * v.stride;
        assert!(
            start + len <= self.len,
            "kubeyolo conv block: image {i} [{start}, +{len}) outside a buffer of {}",
            self.len
        );
        start
    }
    /// Image `i`'s `len` elements.
    /// SAFETY: no mutable slice of an overlapping range may be alive.
    pub unsafe fn img(&self, v: View, i: usize, len: usize) -> &[f32] {
        let s = self.range(v, i, len);
        std::slice::from_raw_parts(self.ptr.add(s), len)
    }
    /// Image `i`'s `len` elements, mutable.
    /// SAFETY: no other slice of an overlapping range may be alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn img_mut(&self, v: View, i: usize, len: usize) -> &mut [f32] {
        let s = self.range(v, i, len);
        std::slice::from_raw_parts_mut(self.ptr.add(s), len)
    }
}

/// `dst[image] += src[image]` for every image of two equally shaped views.
pub(crate) fn add_views(dst: Buf, dv: View, src: Buf, sv: View, n: usize, len: usize) {
    (0..n).into_par_iter().for_each(|i| {
        // SAFETY: each task touches image i only; callers pass non-overlapping views.
        let (d, s) = unsafe { (dst.img_mut(dv, i, len), src.img(sv, i, len)) };
        for (a, b) in d.iter_mut().zip(s) {
            *a += *b;
        }
    });
}

/// Locks the state a fused op shares between its forward, its backward and its caller.
pub(crate) fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock().map_err(|_| candle_core::Error::Msg("kubeyolo fused op: poisoned state".into()))
}
