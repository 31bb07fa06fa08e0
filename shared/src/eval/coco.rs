//! COCO-style box mAP with pycocotools' semantics (`COCOeval(iouType="bbox")`).
//!
//! Many users report "COCO mAP", which differs from ultralytics' numbers: pycocotools matches
//! per category with crowd handling, ignores objects outside an area range, caps detections per
//! image (1/10/100), and reads precision at 101 recall thresholds without interpolating between
//! curve points. This module reproduces `evaluate()`, `accumulate()` and `summarize()` step by
//! step (in `float64`, boxes as `x, y, w, h` in original-image pixels), so the 12 numbers agree
//! with pycocotools to rounding (`tests/fixtures/metrics/*.json`).

use serde::Serialize;

/// A ground-truth box for COCO evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoGt {
    /// `x, y, w, h` in pixels.
    pub bbox: [f64; 4],
    pub cat: usize,
    /// Crowd regions match any number of detections and never count as misses.
    pub iscrowd: bool,
    /// Area used for the small/medium/large split; `None` = `w * h`.
    pub area: Option<f64>,
}

/// A detection for COCO evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CocoDt {
    /// `x, y, w, h` in pixels.
    pub bbox: [f64; 4],
    pub cat: usize,
    pub score: f64,
}

/// The 12 numbers `COCOeval.summarize()` prints, named.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CocoStats {
    /// AP @ IoU 0.50:0.95, all areas, maxDets 100 (the "COCO mAP").
    pub ap: f64,
    pub ap50: f64,
    pub ap75: f64,
    pub ap_small: f64,
    pub ap_medium: f64,
    pub ap_large: f64,
    pub ar1: f64,
    pub ar10: f64,
    pub ar100: f64,
    pub ar_small: f64,
    pub ar_medium: f64,
    pub ar_large: f64,
}

impl CocoStats {
    /// In `COCOeval.stats` order.
    pub fn as_array(&self) -> [f64; 12] {
        [
            self.ap,
            self.ap50,
            self.ap75,
            self.ap_small,
            self.ap_medium,
            self.ap_large,
            self.ar1,
            self.ar10,
            self.ar100,
            self.ar_small,
            self.ar_medium,
            self.ar_large,
        ]
    }
}

const AREA_RANGES: [[f64; 2]; 4] = [[0.0, 1e10], [0.0, 1024.0], [1024.0, 9216.0], [9216.0, 1e10]];
const MAX_DETS: [usize; 3] = [1, 10, 100];

/// `np.linspace(.5, 0.95, 10)` (float64, unlike ultralytics' float32 thresholds).
fn iou_thrs() -> Vec<f64> {
    crate::eval::metrics::linspace(0.5, 0.95, 10)
}

/// Collects images and evaluates them at the end. Categories are `0..nc`; images are numbered in
/// the order they are added (pycocotools sorts image ids; ours are already sorted).
#[derive(Debug, Clone, Default)]
pub struct CocoEval {
    pub nc: usize,
    images: Vec<(Vec<CocoGt>, Vec<CocoDt>)>,
}

/// One image's ground truth and detections of one category, and their IoUs `[d][g]`.
type PerImage = (Vec<CocoGt>, Vec<CocoDt>, Vec<Vec<f64>>);

/// One `evaluateImg` result.
struct EvalImg {
    /// `[t][d]`: matched (to a gt) at threshold t
    dt_matched: Vec<Vec<bool>>,
    dt_scores: Vec<f64>,
    gt_ignore: Vec<bool>,
    dt_ignore: Vec<Vec<bool>>,
}

impl CocoEval {
    pub fn new(nc: usize) -> Self {
        CocoEval { nc, images: Vec::new() }
    }

    pub fn add_image(&mut self, gts: Vec<CocoGt>, dts: Vec<CocoDt>) {
        self.images.push((gts, dts));
    }

    pub fn num_images(&self) -> usize {
        self.images.len()
    }

    /// `evaluate(); accumulate(); summarize()`.
    pub fn summarize(&self) -> CocoStats {
        let thrs = iou_thrs();
        let rec_thrs = crate::eval::metrics::linspace(0.0, 1.0, 101);
        let (nt, nr, nk, na, nm) = (thrs.len(), rec_thrs.len(), self.nc, AREA_RANGES.len(), MAX_DETS.len());
        // precision[t][r][k][a][m], recall[t][k][a][m]; -1 = no ground truth
        let mut precision = vec![vec![vec![vec![vec![-1.0; nm]; na]; nk]; nr]; nt];
        let mut recall = vec![vec![vec![vec![-1.0; nm]; na]; nk]; nt];
        for k in 0..nk {
            // per image: gts/dts of this category, dts sorted by score (stable) and capped
            let per_img: Vec<PerImage> = self
                .images
                .iter()
                .map(|(g, d)| {
                    let gts: Vec<CocoGt> = g.iter().filter(|x| x.cat == k).copied().collect();
                    let mut dts: Vec<CocoDt> = d.iter().filter(|x| x.cat == k).copied().collect();
                    dts.sort_by(|a, b| b.score.total_cmp(&a.score));
                    dts.truncate(MAX_DETS[nm - 1]);
                    let ious = dts
                        .iter()
                        .map(|dt| gts.iter().map(|gt| bb_iou(&dt.bbox, &gt.bbox, gt.iscrowd)).collect())
                        .collect();
                    (gts, dts, ious)
                })
                .collect();
            for (a, rng) in AREA_RANGES.iter().enumerate() {
                let evals: Vec<EvalImg> = per_img
                    .iter()
                    .filter_map(|(g, d, ious)| evaluate_img(g, d, ious, rng, MAX_DETS[nm - 1], &thrs))
                    .collect();
                if evals.is_empty() {
                    continue;
                }
                for (m, &max_det) in MAX_DETS.iter().enumerate() {
                    let mut scores: Vec<f64> = Vec::new();
                    let mut owner: Vec<(usize, usize)> = Vec::new();
                    for (e_i, e) in evals.iter().enumerate() {
                        for d in 0..e.dt_scores.len().min(max_det) {
                            scores.push(e.dt_scores[d]);
                            owner.push((e_i, d));
                        }
                    }
                    let mut inds: Vec<usize> = (0..scores.len()).collect();
                    inds.sort_by(|&x, &y| scores[y].total_cmp(&scores[x])); // mergesort on -score: stable
                    let npig = evals.iter().flat_map(|e| e.gt_ignore.iter()).filter(|&&ig| !ig).count();
                    if npig == 0 {
                        continue;
                    }
                    for t in 0..nt {
                        let (mut tp, mut fp) = (0.0f64, 0.0f64);
                        let mut rc = Vec::with_capacity(inds.len());
                        let mut pr = Vec::with_capacity(inds.len());
                        for &i in &inds {
                            let (e_i, d) = owner[i];
                            let e = &evals[e_i];
                            if e.dt_ignore[t][d] {
                                // neither tp nor fp, but still a point of the curve
                            } else if e.dt_matched[t][d] {
                                tp += 1.0;
                            } else {
                                fp += 1.0;
                            }
                            rc.push(tp / npig as f64);
                            pr.push(tp / (fp + tp + f64::EPSILON));
                        }
                        let nd = rc.len();
                        recall[t][k][a][m] = if nd > 0 { rc[nd - 1] } else { 0.0 };
                        for i in (1..nd).rev() {
                            if pr[i] > pr[i - 1] {
                                pr[i - 1] = pr[i];
                            }
                        }
                        for (ri, &thr) in rec_thrs.iter().enumerate() {
                            // np.searchsorted(rc, thr, side='left')
                            let pi = rc.partition_point(|&v| v < thr);
                            precision[t][ri][k][a][m] = if pi < nd { pr[pi] } else { 0.0 };
                        }
                    }
                }
            }
        }
        let mean_valid = |vals: Vec<f64>| {
            let v: Vec<f64> = vals.into_iter().filter(|&x| x > -1.0).collect();
            if v.is_empty() {
                -1.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let ap = |t_sel: Option<usize>, a: usize, m: usize| {
            let mut vals = Vec::new();
            for t in 0..nt {
                if t_sel.is_some_and(|s| s != t) {
                    continue;
                }
                for row in &precision[t] {
                    for kk in row {
                        vals.push(kk[a][m]);
                    }
                }
            }
            mean_valid(vals)
        };
        let ar = |a: usize, m: usize| {
            let mut vals = Vec::new();
            for rt in &recall {
                for kk in rt {
                    vals.push(kk[a][m]);
                }
            }
            mean_valid(vals)
        };
        CocoStats {
            ap: ap(None, 0, 2),
            ap50: ap(Some(0), 0, 2),
            ap75: ap(Some(5), 0, 2),
            ap_small: ap(None, 1, 2),
            ap_medium: ap(None, 2, 2),
            ap_large: ap(None, 3, 2),
            ar1: ar(0, 0),
            ar10: ar(0, 1),
            ar100: ar(0, 2),
            ar_small: ar(1, 2),
            ar_medium: ar(2, 2),
            ar_large: ar(3, 2),
        }
    }
}

/// `maskUtils.iou` for boxes (`bbIou` in maskApi.c): a crowd gt divides by the detection's area.
fn bb_iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let da = d[2] * d[3];
    let ga = g[2] * g[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

/// `COCOeval.evaluateImg` for one image and category. `ious[d][g]` in the given orders.
fn evaluate_img(
    gts: &[CocoGt],
    dts: &[CocoDt],
    ious: &[Vec<f64>],
    rng: &[f64; 2],
    max_det: usize,
    thrs: &[f64],
) -> Option<EvalImg> {
    if gts.is_empty() && dts.is_empty() {
        return None;
    }
    let ignore_of = |g: &CocoGt| {
        let area = g.area.unwrap_or(g.bbox[2] * g.bbox[3]);
        g.iscrowd || area < rng[0] || area > rng[1]
    };
    // gts: not-ignored first (stable)
    let mut gtind: Vec<usize> = (0..gts.len()).collect();
    gtind.sort_by_key(|&i| ignore_of(&gts[i]));
    let gt_ig: Vec<bool> = gtind.iter().map(|&i| ignore_of(&gts[i])).collect();
    let crowd: Vec<bool> = gtind.iter().map(|&i| gts[i].iscrowd).collect();
    let nd = dts.len().min(max_det); // dts already sorted by score
    let ng = gts.len();
    let nt = thrs.len();
    let mut gtm = vec![vec![false; ng]; nt];
    let mut dtm = vec![vec![false; nd]; nt];
    let mut dt_ig = vec![vec![false; nd]; nt];
    if ng > 0 && nd > 0 {
        for (t, &thr) in thrs.iter().enumerate() {
            for d in 0..nd {
                let mut iou = thr.min(1.0 - 1e-10);
                let mut m: Option<usize> = None;
                for g in 0..ng {
                    if gtm[t][g] && !crowd[g] {
                        continue;
                    }
                    if let Some(mm) = m {
                        if !gt_ig[mm] && gt_ig[g] {
                            break;
                        }
                    }
                    let v = ious[d][gtind[g]];
                    if v < iou {
                        continue;
                    }
                    iou = v;
                    m = Some(g);
                }
                if let Some(mm) = m {
                    dt_ig[t][d] = gt_ig[mm];
                    dtm[t][d] = true;
                    gtm[t][mm] = true;
                }
            }
        }
    }
    for d in 0..nd {
        let area = dts[d].bbox[2] * dts[d].bbox[3];
        let out = area < rng[0] || area > rng[1];
        for t in 0..nt {
            dt_ig[t][d] = dt_ig[t][d] || (!dtm[t][d] && out);
        }
    }
    Some(EvalImg {
        dt_matched: dtm,
        dt_scores: dts[..nd].iter().map(|d| d.score).collect(),
        gt_ignore: gt_ig,
        dt_ignore: dt_ig,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_match_is_one() {
        let mut e = CocoEval::new(1);
        e.add_image(
            vec![CocoGt { bbox: [0.0, 0.0, 50.0, 50.0], cat: 0, iscrowd: false, area: None }],
            vec![CocoDt { bbox: [0.0, 0.0, 50.0, 50.0], cat: 0, score: 0.9 }],
        );
        let s = e.summarize();
        assert!((s.ap - 1.0).abs() < 1e-12, "{}", s.ap);
        assert_eq!(s.ap_small, -1.0); // no object in that area range
        assert!((s.ap_medium - 1.0).abs() < 1e-12);
    }
}
