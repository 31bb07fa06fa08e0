//! ultralytics' `RandomFlip` (horizontal and vertical), boxes in pixel xyxy.

use super::Sample;

/// `np.fliplr` of the image; boxes mirrored about the vertical centre line.
pub fn flip_horizontal(s: &mut Sample) {
    let w = s.width();
    for row in s.img.chunks_exact_mut(w * 3) {
        // pixel x ↔ pixel w-1-x; with an odd width the middle pixel (right's first) stays
        let (left, right) = row.split_at_mut(w / 2 * 3);
        for (l, r) in left.chunks_exact_mut(3).zip(right.rchunks_exact_mut(3)) {
            let t = [l[0], l[1], l[2]];
            l.copy_from_slice(r);
            r.copy_from_slice(&t);
        }
    }
    let wf = w as f32;
    for b in &mut s.boxes {
        *b = [wf - b[2], b[1], wf - b[0], b[3]];
    }
}

/// `np.flipud` of the image; boxes mirrored about the horizontal centre line.
pub fn flip_vertical(s: &mut Sample) {
    let (w, h) = (s.width(), s.height());
    let raw: &mut [u8] = &mut s.img;
    for y in 0..h / 2 {
        let (top, bottom) = raw.split_at_mut((h - 1 - y) * w * 3);
        top[y * w * 3..(y + 1) * w * 3].swap_with_slice(&mut bottom[..w * 3]);
    }
    let hf = h as f32;
    for b in &mut s.boxes {
        *b = [b[0], hf - b[3], b[2], hf - b[1]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flips_are_involutions_and_move_boxes() {
        let img = image::RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let s0 = Sample { img, boxes: vec![[1.0, 0.5, 2.0, 2.5]], cls: vec![3] };
        let mut s = s0.clone();
        flip_horizontal(&mut s);
        assert_eq!(s.img.get_pixel(0, 1).0, [4, 1, 9]);
        for w in [5u32, 6] {
            let mut t = Sample {
                img: image::RgbImage::from_fn(w, 2, |x, y| image::Rgb([x as u8, y as u8, 9])),
                boxes: vec![],
                cls: vec![],
            };
            flip_horizontal(&mut t);
            assert_eq!(
                t.img,
                image::RgbImage::from_fn(w, 2, |x, y| image::Rgb([(w - 1 - x) as u8, y as u8, 9])),
                "width {w}"
            );
        }
        assert_eq!(s.boxes[0], [3.0, 0.5, 4.0, 2.5]);
        flip_horizontal(&mut s);
        assert_eq!(s, s0);
        flip_vertical(&mut s);
        assert_eq!(s.img.get_pixel(2, 0).0, [2, 2, 9]);
        assert_eq!(s.boxes[0], [1.0, 0.5, 2.0, 2.5]);
        flip_vertical(&mut s);
        assert_eq!(s, s0);
    }
}
