//! ultralytics 8.4's `TaskAlignedAssigner` (`utils/tal.py`) for one image, in plain Rust on the
//! CPU.
//!
//! Why plain Rust: the assignment needs no gradient (ultralytics runs it under `no_grad` on
//! detached predictions) and is sparse — only anchors inside a ground-truth box are candidates —
//! while ultralytics materialises dense (batch, max boxes, anchors) tensors. Here each ground
//! truth visits only the anchors inside it, so a 640 image with 100 boxes costs well under a
//! millisecond.
//!
//! The rule, exactly as 8.4.190 (`topk` 10, `alpha` 0.5, `beta` 6.0, `eps` 1e-9):
//! 1. candidates: anchor centres strictly inside the ground-truth box (by more than 1e-9 px),
//!    the box's sides first enlarged about its centre to at least `stride_val` (the second
//!    stride, 16 px for YOLOv8) — 8.4's `select_candidates_in_gts`;
//! 2. alignment metric on candidates: `score^alpha · ciou^beta`, score = sigmoid of the class
//!    logit of the box's class, `ciou` = CIoU(ground truth, predicted box) clamped at 0;
//! 3. per ground truth, the `topk` anchors by that metric over *all* anchors (non-candidates
//!    count as 0), kept only if they are candidates. Ties are broken exactly as `torch.topk` on
//!    the CPU does (it runs libstdc++'s `partial_sort` when `64·k ≤ anchors`, `nth_element`
//!    otherwise; both are emulated below): when fewer than `topk` candidates have a positive
//!    metric, which zero-metric anchors fill the list decides whether a zero-metric candidate
//!    becomes positive, and such an anchor can change which box a contested anchor goes to;
//! 4. an anchor positive for several ground truths goes to the ground truth with the highest
//!    CIoU with its predicted box among all boxes it lies in (first index on ties, index 0 when
//!    all are 0 — `torch.max` semantics), even one for which it was not in the top k;
//! 5. the target score of a positive anchor is its metric normalised per ground truth:
//!    `metric · max_ciou(gt) / (max_metric(gt) + eps)`, maxima over the gt's final positives.
//!
//! Arithmetic is f32 in ultralytics' operation order, so the discrete choices (top k, the
//! highest-overlap rule) agree with PyTorch's float32 results.

use super::super::nn::blocks::Hw;
use crate::{Error, Result};

/// Anchor centres of all levels, level by level and row-major (the order of the flattened head
/// outputs), built with [`crate::nn::head::make_anchors`].
#[derive(Debug, Clone)]
pub struct AnchorGrid {
    pub levels: Vec<Level>,
    /// Anchor centre (x, y) in grid units of its level (cell index + 0.5).
    pub points: Vec<[f32; 2]>,
    /// Stride of each anchor's level, px.
    pub strides: Vec<f32>,
}

/// One feature level of the grid.
#[derive(Debug, Clone, Copy)]
pub struct Level {
    pub h: usize,
    pub w: usize,
    pub stride: f32,
    /// Index of the level's first anchor in the flattened order.
    pub offset: usize,
}

impl AnchorGrid {
    pub fn new(shapes: &[Hw], strides: &[f64]) -> Result<Self> {
        if shapes.len() != strides.len() || shapes.is_empty() {
            return Err(Error::internal(format!("{} feature levels but {} strides", shapes.len(), strides.len())));
        }
        let (pts, st) = crate::nn::head::make_anchors(shapes, strides, 0.5, &candle_core::Device::Cpu)?;
        let points = pts.to_vec2::<f32>()?.into_iter().map(|p| [p[0], p[1]]).collect();
        let strides_a = st.flatten_all()?.to_vec1::<f32>()?;
        let mut levels = Vec::with_capacity(shapes.len());
        let mut offset = 0;
        for (&(h, w), &s) in shapes.iter().zip(strides) {
            levels.push(Level { h, w, stride: s as f32, offset });
            offset += h * w;
        }
        Ok(AnchorGrid { levels, points, strides: strides_a })
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Anchor centre in input pixels (ultralytics' `anchor_points * stride_tensor`).
    #[inline]
    pub fn point_px(&self, a: usize) -> [f32; 2] {
        let s = self.strides[a];
        [self.points[a][0] * s, self.points[a][1] * s]
    }
}

/// One ground-truth box of an image: x1y1x2y2 in input pixels (as 8.4's `preprocess` makes
/// them), its class, and ultralytics' `mask_gt` (coordinate sum > 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GtBox {
    pub xyxy: [f32; 4],
    pub label: usize,
    pub valid: bool,
}

/// A foreground anchor and its target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Positive {
    pub anchor: usize,
    /// Index of the assigned ground truth within the image (ultralytics' `target_gt_idx`).
    pub gt: usize,
    pub label: usize,
    /// Normalised alignment metric: the target score of `label` (ultralytics'
    /// `target_scores[..., label]`); may be 0 (a positive whose CIoU was clamped to 0).
    pub score: f32,
    /// The ground-truth box, x1y1x2y2 px.
    pub target: [f32; 4],
}

/// ultralytics' `TaskAlignedAssigner` hyper-parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskAlignedAssigner {
    pub topk: usize,
    pub alpha: f32,
    pub beta: f32,
    pub eps: f32,
    /// Minimum side of a ground-truth box for the candidate test (8.4: `stride[1]`, or
    /// `stride[0]` with one level).
    pub stride_val: f32,
}

impl TaskAlignedAssigner {
    /// `v8DetectionLoss`'s assigner: topk 10, alpha 0.5, beta 6.0, eps 1e-9.
    pub fn new(strides: &[f64]) -> Self {
        let stride_val = strides.get(1).or(strides.first()).copied().unwrap_or(32.0) as f32;
        TaskAlignedAssigner { topk: 10, alpha: 0.5, beta: 6.0, eps: 1e-9, stride_val }
    }

    /// Assign one image. `pd_px[a]`: predicted box of anchor `a`, x1y1x2y2 px; `logit(a, c)`:
    /// class logit. Returns the positives sorted by anchor.
    pub fn assign(
        &self,
        grid: &AnchorGrid,
        pd_px: &[[f32; 4]],
        logit: &dyn Fn(usize, usize) -> f32,
        gts: &[GtBox],
    ) -> Vec<Positive> {
        let na = grid.len();
        if gts.is_empty() || na == 0 {
            return Vec::new();
        }
        // 1-2: candidates (sorted by anchor) with their metric and overlap.
        let cands: Vec<Vec<Cand>> =
            gts.iter().map(|g| if g.valid { self.candidates(grid, pd_px, logit, g) } else { Vec::new() }).collect();
        // 3: top k per ground truth, intersected with its candidates.
        let k = self.topk.min(na);
        let mut count = vec![0u32; na];
        let mut owner = vec![0u32; na];
        let mut pos: Vec<Vec<Cand>> = Vec::with_capacity(gts.len());
        for (g, c) in cands.iter().enumerate() {
            let sel = if c.is_empty() || k == 0 { Vec::new() } else { topk_set(c, na, k) };
            let p: Vec<Cand> = sel.iter().filter_map(|&a| find(c, a).copied()).collect();
            for q in &p {
                count[q.anchor as usize] += 1;
                if count[q.anchor as usize] == 1 {
                    owner[q.anchor as usize] = g as u32;
                }
            }
            pos.push(p);
        }
        // 4: anchors claimed several times go to the highest-overlap box they lie in.
        let mut best_ov = vec![0f32; 0];
        let multi = count.iter().any(|&n| n > 1);
        if multi {
            best_ov = vec![0f32; na];
            for a in 0..na {
                if count[a] > 1 {
                    owner[a] = 0;
                }
            }
            for (g, c) in cands.iter().enumerate() {
                for q in c {
                    let a = q.anchor as usize;
                    if count[a] > 1 && q.overlap > best_ov[a] {
                        best_ov[a] = q.overlap;
                        owner[a] = g as u32;
                    }
                }
            }
        }
        // Final (anchor, gt, metric, overlap) pairs.
        let mut fin: Vec<(usize, usize, f32, f32)> = Vec::new();
        for p in &pos {
            for q in p {
                let a = q.anchor as usize;
                if count[a] == 1 {
                    fin.push((a, owner[a] as usize, q.metric, q.overlap));
                }
            }
        }
        if multi {
            for a in 0..na {
                if count[a] > 1 {
                    let g = owner[a] as usize;
                    let (m, o) = find(&cands[g], a as u32).map_or((0.0, 0.0), |q| (q.metric, q.overlap));
                    fin.push((a, g, m, o));
                }
            }
        }
        // 5: normalise per ground truth.
        let mut max_m = vec![0f32; gts.len()];
        let mut max_o = vec![0f32; gts.len()];
        for &(_, g, m, o) in &fin {
            max_m[g] = max_m[g].max(m);
            max_o[g] = max_o[g].max(o);
        }
        let mut out: Vec<Positive> = fin
            .into_iter()
            .map(|(a, g, m, _)| Positive {
                anchor: a,
                gt: g,
                label: gts[g].label,
                score: m * max_o[g] / (max_m[g] + self.eps),
                target: gts[g].xyxy,
            })
            .collect();
        out.sort_unstable_by_key(|p| p.anchor);
        out
    }

    /// Anchors inside `g` (8.4's `select_candidates_in_gts`) with metric and CIoU.
    fn candidates(
        &self,
        grid: &AnchorGrid,
        pd_px: &[[f32; 4]],
        logit: &dyn Fn(usize, usize) -> f32,
        g: &GtBox,
    ) -> Vec<Cand> {
        // xyxy → xywh, sides floored at stride_val, → xyxy (f32, ultralytics' op order).
        let [x1, y1, x2, y2] = g.xyxy;
        let (cx, cy) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let (mut w, mut h) = (x2 - x1, y2 - y1);
        if w < self.stride_val {
            w = self.stride_val;
        }
        if h < self.stride_val {
            h = self.stride_val;
        }
        let (hw, hh) = (w / 2.0, h / 2.0);
        let (ex1, ey1, ex2, ey2) = (cx - hw, cy - hh, cx + hw, cy + hh);
        const IN_EPS: f32 = 1e-9;
        let atan_gt = aspect_atan(&g.xyxy);
        let beta6 = self.beta == 6.0;
        let mut out = Vec::new();
        for lv in &grid.levels {
            let s = lv.stride as f64;
            let range = |lo: f32, hi: f32, n: usize| {
                let a = ((lo as f64 / s - 0.5).floor() as i64).clamp(0, n as i64) as usize;
                let b = (((hi as f64 / s - 0.5).ceil() as i64) + 1).clamp(0, n as i64) as usize;
                a..b
            };
            for y in range(ey1, ey2, lv.h) {
                for x in range(ex1, ex2, lv.w) {
                    let a = lv.offset + y * lv.w + x;
                    let [px, py] = grid.point_px(a);
                    if px - ex1 > IN_EPS && py - ey1 > IN_EPS && ex2 - px > IN_EPS && ey2 - py > IN_EPS {
                        let overlap = ciou_with_atan1(&g.xyxy, &pd_px[a], atan_gt).max(0.0);
                        let z = logit(a, g.label);
                        let score = 1.0 / (1.0 + (-z).exp());
                        let sa = if self.alpha == 0.5 {
                            score.sqrt()
                        } else {
                            (score as f64).powf(self.alpha as f64) as f32
                        };
                        // overlap^beta rounded from f64 (as PyTorch's float32 pow, to the last
                        // bit in ~98% of cases); beta 6 by multiplication (3x faster than powf).
                        let o = overlap as f64;
                        let ob = if beta6 { (o * o) * (o * o) * (o * o) } else { o.powf(self.beta as f64) };
                        let metric = sa * ob as f32;
                        out.push(Cand { anchor: a as u32, metric, overlap });
                    }
                }
            }
        }
        out
    }
}

/// A candidate (anchor inside a ground truth) and its alignment metric and CIoU (clamped ≥ 0).
#[derive(Debug, Clone, Copy)]
struct Cand {
    anchor: u32,
    metric: f32,
    overlap: f32,
}

fn find(c: &[Cand], a: u32) -> Option<&Cand> {
    c.binary_search_by_key(&a, |q| q.anchor).ok().map(|i| &c[i])
}

const CIOU_EPS: f32 = 1e-7;

/// `atan(w / h)` of a box as CIoU's aspect term computes it (h + eps).
#[inline]
fn aspect_atan(b: &[f32; 4]) -> f32 {
    ((b[2] - b[0]) / (b[3] - b[1] + CIOU_EPS)).atan()
}

/// ultralytics `bbox_iou(box1, box2, xywh=False, CIoU=True)` (eps 1e-7) in f32, op for op.
pub fn ciou_f32(b1: &[f32; 4], b2: &[f32; 4]) -> f32 {
    ciou_with_atan1(b1, b2, aspect_atan(b1))
}

/// [`ciou_f32`] with box1's `atan(w1 / h1)` precomputed (one ground truth against many
/// predictions).
#[inline]
fn ciou_with_atan1(b1: &[f32; 4], b2: &[f32; 4], atan1: f32) -> f32 {
    const EPS: f32 = CIOU_EPS;
    let [b1x1, b1y1, b1x2, b1y2] = *b1;
    let [b2x1, b2y1, b2x2, b2y2] = *b2;
    let (w1, h1) = (b1x2 - b1x1, b1y2 - b1y1 + EPS);
    let (w2, h2) = (b2x2 - b2x1, b2y2 - b2y1 + EPS);
    let inter = (b1x2.min(b2x2) - b1x1.max(b2x1)).max(0.0) * (b1y2.min(b2y2) - b1y1.max(b2y1)).max(0.0);
    let union = w1 * h1 + w2 * h2 - inter + EPS;
    let iou = inter / union;
    let cw = b1x2.max(b2x2) - b1x1.min(b2x1);
    let ch = b1y2.max(b2y2) - b1y1.min(b2y1);
    let c2 = cw * cw + ch * ch + EPS;
    let dx = b2x1 + b2x2 - b1x1 - b1x2;
    let dy = b2y1 + b2y2 - b1y1 - b1y2;
    let rho2 = (dx * dx + dy * dy) / 4.0;
    let k = (4.0 / (std::f64::consts::PI * std::f64::consts::PI)) as f32;
    let d = (w2 / h2).atan() - atan1;
    let v = k * (d * d);
    let alpha = v / (1.0 - iou + v + EPS);
    iou - (rho2 / c2 + v * alpha)
}

// ---- torch.topk(largest=True) on the CPU: which indices it returns, ties included ----
//
// PyTorch's CPU topk fills (value, index) pairs in index order and runs libstdc++'s
// `std::partial_sort(begin, begin + k, end, comp)` when `k * 64 <= n`, otherwise
// `std::nth_element(begin, begin + k - 1, end, comp)`, comp(x, y) = x.value > y.value (NaN
// first). The selected set is the first k slots afterwards. The functions below are those
// libstdc++ algorithms, step for step (checked against torch.topk on tie-heavy arrays by
// scripts/fixtures/make_loss.py's fixtures and the unit tests here).

type Elem = (f32, u32);

#[inline]
fn comp(a: &Elem, b: &Elem) -> bool {
    (a.0.is_nan() && !b.0.is_nan()) || a.0 > b.0
}

/// The k anchors torch.topk picks from a metric row that is `c`'s metrics at their anchors and
/// 0 elsewhere (`n` anchors).
fn topk_set(c: &[Cand], n: usize, k: usize) -> Vec<u32> {
    if k * 64 <= n {
        // partial_sort = heap_select on the first k slots. Later elements enter only when
        // strictly larger than the heap's top (≥ 0), so the zeros outside `c` never do.
        let mut heap: Vec<Elem> = (0..k as u32).map(|i| (0.0, i)).collect();
        for q in c.iter().take_while(|q| (q.anchor as usize) < k) {
            heap[q.anchor as usize].0 = q.metric;
        }
        make_heap(&mut heap);
        for q in c.iter().filter(|q| q.anchor as usize >= k) {
            let e = (q.metric, q.anchor);
            if comp(&e, &heap[0]) {
                adjust_heap(&mut heap, 0, k, e);
            }
        }
        heap.into_iter().map(|e| e.1).collect()
    } else {
        let mut v: Vec<Elem> = (0..n as u32).map(|i| (0.0, i)).collect();
        for q in c {
            v[q.anchor as usize].0 = q.metric;
        }
        nth_element(&mut v, k - 1);
        v.truncate(k);
        v.into_iter().map(|e| e.1).collect()
    }
}

fn push_heap(v: &mut [Elem], mut hole: usize, top: usize, value: Elem) {
    let mut parent = hole.wrapping_sub(1) / 2;
    while hole > top && comp(&v[parent], &value) {
        v[hole] = v[parent];
        hole = parent;
        parent = hole.wrapping_sub(1) / 2;
    }
    v[hole] = value;
}

fn adjust_heap(v: &mut [Elem], mut hole: usize, len: usize, value: Elem) {
    let top = hole;
    let mut second = hole;
    while len >= 2 && second < (len - 1) / 2 {
        second = 2 * (second + 1);
        if comp(&v[second], &v[second - 1]) {
            second -= 1;
        }
        v[hole] = v[second];
        hole = second;
    }
    if len & 1 == 0 && len >= 2 && second == (len - 2) / 2 {
        second = 2 * (second + 1);
        v[hole] = v[second - 1];
        hole = second - 1;
    }
    push_heap(v, hole, top, value);
}

fn make_heap(v: &mut [Elem]) {
    let len = v.len();
    if len < 2 {
        return;
    }
    let mut parent = (len - 2) / 2;
    loop {
        let value = v[parent];
        adjust_heap(v, parent, len, value);
        if parent == 0 {
            return;
        }
        parent -= 1;
    }
}

fn heap_select(v: &mut [Elem], middle: usize) {
    make_heap(&mut v[..middle]);
    for i in middle..v.len() {
        if comp(&v[i], &v[0]) {
            let value = v[i];
            v[i] = v[0];
            adjust_heap(&mut v[..middle], 0, middle, value);
        }
    }
}

fn nth_element(v: &mut [Elem], nth: usize) {
    let n = v.len();
    if n == 0 || nth >= n {
        return;
    }
    let depth = 2 * (usize::BITS - 1 - n.leading_zeros()) as usize;
    introselect(v, 0, nth, n, depth);
}

fn introselect(v: &mut [Elem], mut first: usize, nth: usize, mut last: usize, mut depth: usize) {
    while last - first > 3 {
        if depth == 0 {
            heap_select(&mut v[first..last], nth + 1 - first);
            v.swap(first, nth);
            return;
        }
        depth -= 1;
        let mid = first + (last - first) / 2;
        move_median_to_first(v, first, first + 1, mid, last - 1);
        let cut = unguarded_partition(v, first + 1, last, first);
        if cut <= nth {
            first = cut;
        } else {
            last = cut;
        }
    }
    insertion_sort(v, first, last);
}

fn move_median_to_first(v: &mut [Elem], r: usize, a: usize, b: usize, c: usize) {
    if comp(&v[a], &v[b]) {
        if comp(&v[b], &v[c]) {
            v.swap(r, b)
        } else if comp(&v[a], &v[c]) {
            v.swap(r, c)
        } else {
            v.swap(r, a)
        }
    } else if comp(&v[a], &v[c]) {
        v.swap(r, a)
    } else if comp(&v[b], &v[c]) {
        v.swap(r, c)
    } else {
        v.swap(r, b)
    }
}

fn unguarded_partition(v: &mut [Elem], mut first: usize, mut last: usize, pivot: usize) -> usize {
    loop {
        while comp(&v[first], &v[pivot]) {
            first += 1;
        }
        last -= 1;
        while comp(&v[pivot], &v[last]) {
            last -= 1;
        }
        if first >= last {
            return first;
        }
        v.swap(first, last);
        first += 1;
    }
}

fn insertion_sort(v: &mut [Elem], first: usize, last: usize) {
    if first == last {
        return;
    }
    for i in first + 1..last {
        let val = v[i];
        if comp(&val, &v[first]) {
            v.copy_within(first..i, first + 1);
            v[first] = val;
        } else {
            let mut j = i;
            while comp(&val, &v[j - 1]) {
                v[j] = v[j - 1];
                j -= 1;
            }
            v[j] = val;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(vals: &[(u32, f32)]) -> Vec<Cand> {
        vals.iter().map(|&(a, m)| Cand { anchor: a, metric: m, overlap: m }).collect()
    }

    fn sorted(mut v: Vec<u32>) -> Vec<u32> {
        v.sort_unstable();
        v
    }

    /// Expected sets are torch.topk(largest=True) results (torch 2.15 CPU) on the same rows.
    #[test]
    fn topk_breaks_ties_like_torch() {
        // Heap path (900 ≥ 640): one positive value among zeros evicts the heap's top.
        assert_eq!(sorted(topk_set(&cands(&[(100, 0.3)]), 900, 10)), vec![0, 1, 2, 3, 4, 5, 7, 8, 9, 100]);
        // Every value strictly above the zeros is kept, in either path.
        let c = cands(&[(3, 0.5), (40, 0.2), (41, 0.9), (83, 0.1)]);
        let s = sorted(topk_set(&c, 84, 10));
        assert!([3, 40, 41, 83].iter().all(|a| s.contains(a)), "{s:?}");
        assert_eq!(s.len(), 10);
        let s = sorted(topk_set(&c, 2000, 10));
        assert!([3, 40, 41, 83].iter().all(|a| s.contains(a)), "{s:?}");
    }

    #[test]
    fn topk_takes_the_largest() {
        let c: Vec<Cand> =
            (0..50u32).map(|i| Cand { anchor: i * 3, metric: (i as f32 * 0.37).sin().abs(), overlap: 0.0 }).collect();
        for n in [150, 700] {
            let s = topk_set(&c, n, 10);
            let mut m: Vec<f32> = c.iter().map(|q| q.metric).collect();
            m.sort_by(|a, b| b.total_cmp(a));
            let min_sel =
                s.iter().map(|&a| c.iter().find(|q| q.anchor == a).map_or(0.0, |q| q.metric)).fold(f32::MAX, f32::min);
            assert_eq!(min_sel, m[9], "n {n}");
        }
    }

    #[test]
    fn ciou_of_identical_boxes_is_one() {
        let b = [10.0, 20.0, 50.0, 45.0];
        assert!((ciou_f32(&b, &b) - 1.0).abs() < 1e-6);
        assert!(ciou_f32(&b, &[100.0, 100.0, 110.0, 130.0]) < 0.0);
    }

    #[test]
    fn tiny_boxes_are_enlarged_to_the_second_stride() {
        let grid = AnchorGrid::new(&[(8, 8), (4, 4), (2, 2)], &[8.0, 16.0, 32.0]).unwrap();
        let t = TaskAlignedAssigner::new(&[8.0, 16.0, 32.0]);
        // A 2x2 px box centred at (32, 32), enlarged to 16x16 (24..40): the stride-8 anchors at
        // 28 and 36 on each axis are inside; the stride-16 anchors at 24 and 40 lie on the edge
        // (not strictly inside) and the stride-32 ones (16, 48) outside.
        let g = GtBox { xyxy: [31.0, 31.0, 33.0, 33.0], label: 0, valid: true };
        let pd = vec![[30.0, 30.0, 34.0, 34.0]; grid.len()];
        let c = t.candidates(&grid, &pd, &|_, _| 0.0, &g);
        let got: Vec<[f32; 2]> = c.iter().map(|q| grid.point_px(q.anchor as usize)).collect();
        assert_eq!(got, vec![[28.0, 28.0], [36.0, 28.0], [28.0, 36.0], [36.0, 36.0]]);
    }
}
