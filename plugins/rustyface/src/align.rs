//! Face alignment: the 150x150 chip the recognition net was trained on, cut out of the photo by a
//! similarity transform (rotation, uniform scale, translation) fitted to 5 of the 68 landmarks.
//!
//! This is dlib's `get_face_chip_details(shape, 150, 0.25)` + `extract_image_chip` for a
//! 5-point shape, the preprocessing of face_recognition's default pipeline (dlib's ResNet face
//! descriptor, which face-api's recognition net is a port of): the outer and inner eye corners
//! and the bottom of the nose (5 of the 68 landmarks) are matched by least squares to dlib's
//! 5-point template, padded by 0.25 on each side. Fitting dlib's 68-point subset instead (41
//! points: eyes, nose, mouth) separated people slightly less on the face_recognition portraits
//! (docs/benchmarks-rustyface.md, "Separation"): the mouth and the lower landmarks move with
//! expression and are the net's least certain. face-api itself only cuts an axis-aligned box
//! (`FaceLandmarks.align`), so tilted heads come out tilted and score worse (face-api.js #152);
//! rotating them upright is the point of this module.
//!
//! Sampling is bilinear. When the face is much bigger than the chip, the photo's region is
//! first halved (2x2 box average) until the chip samples it at less than 2 image pixels per chip
//! pixel, as dlib does with its image pyramid, so the chip is not aliased.

use crate::image_io::Rgb;

/// The chip's side in pixels.
pub const CHIP_SIZE: usize = 150;
/// dlib's padding around the mean face shape, as a fraction of its size.
pub const CHIP_PADDING: f64 = 0.25;

/// The 5 points dlib's `get_face_chip_details` aligns on when a face has 5 landmarks (its
/// `shape_predictor_5_face_landmarks`, what face_recognition uses by default): the outer and
/// inner corners of both eyes and the bottom of the nose, as landmarks of the 68-point layout,
/// with where dlib's 5-point template puts them in a unit square (dlib's constants; they are
/// its 68-point mean face at those landmarks).
const FIVE_POINTS: [(usize, [f64; 2]); 5] = [
    (45, [0.8595674595992, 0.2134981538014]),
    (42, [0.6460604764104, 0.2289674387677]),
    (36, [0.1205750620789, 0.2137274526848]),
    (39, [0.3340850613712, 0.2290642403242]),
    (33, [0.4901123135679, 0.6277975316475]),
];

/// The landmarks the alignment uses, with where each lands in a chip of `size` pixels.
pub fn template(size: usize) -> Vec<(usize, [f64; 2])> {
    let s = size as f64;
    FIVE_POINTS
        .iter()
        .map(|&(i, [x, y])| {
            let x = (CHIP_PADDING + x) / (2.0 * CHIP_PADDING + 1.0);
            let y = (CHIP_PADDING + y) / (2.0 * CHIP_PADDING + 1.0);
            (i, [x * s, y * s])
        })
        .collect()
}

/// A similarity transform `(x, y) -> (a x - b y + tx, b x + a y + ty)`: a rotation by
/// `atan2(b, a)`, a scale by `hypot(a, b)` and a translation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Similarity {
    pub a: f64,
    pub b: f64,
    pub tx: f64,
    pub ty: f64,
}

impl Similarity {
    pub fn apply(&self, p: [f64; 2]) -> [f64; 2] {
        [self.a * p[0] - self.b * p[1] + self.tx, self.b * p[0] + self.a * p[1] + self.ty]
    }

    /// The scale factor.
    pub fn scale(&self) -> f64 {
        self.a.hypot(self.b)
    }

    /// The rotation in radians.
    pub fn angle(&self) -> f64 {
        self.b.atan2(self.a)
    }

    /// The inverse transform (`None` for a degenerate, zero-scale one).
    pub fn inverse(&self) -> Option<Similarity> {
        let d = self.a * self.a + self.b * self.b;
        if !d.is_finite() || d <= 1e-24 {
            return None;
        }
        // The inverse of z -> c z + t (complex) is z -> z / c - t / c.
        let (ia, ib) = (self.a / d, -self.b / d);
        Some(Similarity {
            a: ia,
            b: ib,
            tx: -(ia * self.tx - ib * self.ty),
            ty: -(ib * self.tx + ia * self.ty),
        })
    }

    /// The least-squares similarity mapping `from[i]` onto `to[i]` (no reflection). `None` when
    /// the points are fewer than 2, or all `from` (or all `to`) points coincide.
    pub fn fit(from: &[[f64; 2]], to: &[[f64; 2]]) -> Option<Similarity> {
        let n = from.len().min(to.len());
        if n < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = |pts: &[[f64; 2]]| {
            let (sx, sy) = pts[..n].iter().fold((0.0, 0.0), |(x, y), p| (x + p[0], y + p[1]));
            [sx / nf, sy / nf]
        };
        let (mf, mt) = (mean(from), mean(to));
        // Treat points as complex numbers: minimise sum |c f + t - g|^2 over complex c and t.
        let (mut dot, mut cross, mut var) = (0.0, 0.0, 0.0);
        for (f, g) in from[..n].iter().zip(&to[..n]) {
            let (fx, fy) = (f[0] - mf[0], f[1] - mf[1]);
            let (gx, gy) = (g[0] - mt[0], g[1] - mt[1]);
            dot += fx * gx + fy * gy;
            cross += fx * gy - fy * gx;
            var += fx * fx + fy * fy;
        }
        if !var.is_finite() || var <= 1e-12 || !dot.is_finite() || !cross.is_finite() {
            return None;
        }
        let (a, b) = (dot / var, cross / var);
        // All `to` points in one place: a zero-scale map, nothing to align.
        if a.hypot(b) <= 1e-9 {
            return None;
        }
        Some(Similarity {
            a,
            b,
            tx: mt[0] - (a * mf[0] - b * mf[1]),
            ty: mt[1] - (b * mf[0] + a * mf[1]),
        })
    }
}

/// The transform from chip pixels (`size` x `size`) to image pixels for a face with these 68
/// landmarks (image pixels). `None` if the landmarks are degenerate (all in one point).
pub fn chip_transform(landmarks: &[[f32; 2]; 68], size: usize) -> Option<Similarity> {
    let tpl = template(size);
    let from: Vec<[f64; 2]> = tpl.iter().map(|&(_, p)| p).collect();
    let to: Vec<[f64; 2]> =
        tpl.iter().map(|&(i, _)| [landmarks[i][0] as f64, landmarks[i][1] as f64]).collect();
    Similarity::fit(&from, &to)
}

/// The aligned 150x150 chip of the face with these landmarks (see the module docs).
/// Pixels of the chip that fall outside the photo are black, as in dlib.
pub fn chip(img: &Rgb, landmarks: &[[f32; 2]; 68]) -> Option<Rgb> {
    let t = chip_transform(landmarks, CHIP_SIZE)?;
    Some(extract(img, &t, CHIP_SIZE))
}

/// A plain HWC f32 image (a region of the photo, possibly downsampled).
struct Plane {
    w: usize,
    h: usize,
    data: Vec<f32>,
}

impl Plane {
    fn halve(&self) -> Plane {
        let (w, h) = ((self.w / 2).max(1), (self.h / 2).max(1));
        let mut data = vec![0f32; w * h * 3];
        for y in 0..h {
            let (y0, y1) = ((2 * y).min(self.h - 1), (2 * y + 1).min(self.h - 1));
            for x in 0..w {
                let (x0, x1) = ((2 * x).min(self.w - 1), (2 * x + 1).min(self.w - 1));
                for c in 0..3 {
                    let at = |yy: usize, xx: usize| self.data[(yy * self.w + xx) * 3 + c];
                    data[(y * w + x) * 3 + c] =
                        0.25 * (at(y0, x0) + at(y0, x1) + at(y1, x0) + at(y1, x1));
                }
            }
        }
        Plane { w, h, data }
    }
}

/// Sample the `size` x `size` chip whose pixel `(x, y)` lies at `t.apply([x, y])` in `img`.
pub fn extract(img: &Rgb, t: &Similarity, size: usize) -> Rgb {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let mut out = vec![0u8; size * size * 3];
    // The chip's footprint in the image, one pixel of margin for the bilinear neighbours.
    let corners = [[0.0, 0.0], [size as f64, 0.0], [0.0, size as f64], [size as f64, size as f64]]
        .map(|p| t.apply(p));
    let lo_x = corners.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min).floor() - 2.0;
    let hi_x = corners.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max).ceil() + 2.0;
    let lo_y = corners.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min).floor() - 2.0;
    let hi_y = corners.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max).ceil() + 2.0;
    let x0 = lo_x.clamp(0.0, iw as f64) as usize;
    let x1 = hi_x.clamp(0.0, iw as f64) as usize;
    let y0 = lo_y.clamp(0.0, ih as f64) as usize;
    let y1 = hi_y.clamp(0.0, ih as f64) as usize;
    if x1 <= x0 || y1 <= y0 || !t.scale().is_finite() {
        return Rgb { width: size as _, height: size as _, data: out };
    }
    let mut plane =
        Plane { w: x1 - x0, h: y1 - y0, data: Vec::with_capacity((x1 - x0) * (y1 - y0) * 3) };
    for y in y0..y1 {
        let row = &img.data[(y * iw + x0) * 3..(y * iw + x1) * 3];
        plane.data.extend(row.iter().map(|&v| v as f32));
    }
    // Region coordinates: image (X, Y) -> ((X - x0 - off) / f, (Y - y0 - off) / f) at a level
    // downsampled by f (each halving averages pixels 2u, 2u+1, centred at 2u + 0.5).
    let (mut f, mut off) = (1.0f64, 0.0f64);
    let mut scale = t.scale();
    while scale >= 2.0 && plane.w >= 4 && plane.h >= 4 {
        plane = plane.halve();
        off += 0.5 * f;
        f *= 2.0;
        scale /= 2.0;
    }
    let (pw, ph) = (plane.w as f64, plane.h as f64);
    for cy in 0..size {
        for cx in 0..size {
            let p = t.apply([cx as f64, cy as f64]);
            let u = (p[0] - x0 as f64 - off) / f;
            let v = (p[1] - y0 as f64 - off) / f;
            if !(u >= 0.0 && v >= 0.0 && u <= pw - 1.0 && v <= ph - 1.0) {
                continue;
            }
            let (ui, vi) = (u.floor() as usize, v.floor() as usize);
            let (u1, v1) = ((ui + 1).min(plane.w - 1), (vi + 1).min(plane.h - 1));
            let (du, dv) = ((u - ui as f64) as f32, (v - vi as f64) as f32);
            let px = |yy: usize, xx: usize, c: usize| plane.data[(yy * plane.w + xx) * 3 + c];
            for c in 0..3 {
                let top = px(vi, ui, c) * (1.0 - du) + px(vi, u1, c) * du;
                let bottom = px(v1, ui, c) * (1.0 - du) + px(v1, u1, c) * du;
                let val = top * (1.0 - dv) + bottom * dv;
                out[(cy * size + cx) * 3 + c] = val.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    Rgb { width: size as _, height: size as _, data: out }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(deg: f64, scale: f64, tx: f64, ty: f64) -> Similarity {
        let r = deg.to_radians();
        Similarity { a: scale * r.cos(), b: scale * r.sin(), tx, ty }
    }

    /// 68 landmarks whose aligned points sit exactly on the template mapped by `t`.
    fn landmarks_through(t: &Similarity) -> [[f32; 2]; 68] {
        let mut lm = [[0f32; 2]; 68];
        for (i, p) in template(CHIP_SIZE) {
            let q = t.apply(p);
            lm[i] = [q[0] as f32, q[1] as f32];
        }
        lm
    }

    #[test]
    fn template_matches_dlib_padding() {
        let tpl = template(CHIP_SIZE);
        assert_eq!(tpl.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [45, 42, 36, 39, 33]);
        // The bottom of the nose (dlib's 5-point template 0.4901123, 0.6277975) in a 150 chip
        // with padding 0.25.
        let (_, p) = tpl.iter().find(|(i, _)| *i == 33).unwrap();
        assert!((p[0] - (0.25 + 0.4901123135679) / 1.5 * 150.0).abs() < 1e-9);
        assert!((p[1] - (0.25 + 0.6277975316475) / 1.5 * 150.0).abs() < 1e-9);
    }

    #[test]
    fn fit_recovers_a_rotation_scale_and_translation() {
        let truth = rotation(20.0, 2.5, 300.0, -40.0);
        let lm = landmarks_through(&truth);
        let t = chip_transform(&lm, CHIP_SIZE).unwrap();
        assert!((t.angle().to_degrees() - 20.0).abs() < 1e-3, "angle {}", t.angle().to_degrees());
        assert!((t.scale() - 2.5).abs() < 1e-4, "scale {}", t.scale());
        assert!((t.tx - 300.0).abs() < 1e-2 && (t.ty + 40.0).abs() < 1e-2, "{t:?}");
        let inv = t.inverse().unwrap();
        let back = inv.apply(t.apply([12.0, 34.0]));
        assert!((back[0] - 12.0).abs() < 1e-9 && (back[1] - 34.0).abs() < 1e-9);
    }

    #[test]
    fn fit_rejects_degenerate_points() {
        let lm = [[5f32, 5.0]; 68];
        assert!(chip_transform(&lm, CHIP_SIZE).is_none());
        assert!(Similarity::fit(&[[0.0, 0.0]], &[[1.0, 1.0]]).is_none());
    }

    /// An image with a bright disc centred on the point the chip's centre maps to: the chip has
    /// the disc in its centre, black where the chip falls outside the photo, and the same chip
    /// comes out for the photo rotated about the disc (the transform absorbs the rotation).
    #[test]
    fn chip_samples_the_mapped_region_and_follows_rotation() {
        let (w, h) = (400usize, 300usize);
        let disc = |cx: f64, cy: f64, r: f64| {
            let mut data = vec![0u8; w * h * 3];
            for y in 0..h {
                for x in 0..w {
                    let d = ((x as f64 - cx).powi(2) + (y as f64 - cy).powi(2)).sqrt();
                    let v = if d < r { 200 } else { 40 };
                    data[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[v, v / 2, 10]);
                }
            }
            Rgb { width: w as _, height: h as _, data }
        };
        let img = disc(200.0, 150.0, 30.0);
        let c = CHIP_SIZE as f64 / 2.0;
        for deg in [0.0, 25.0, -30.0] {
            // Chip centre -> (200, 150), 1 image pixel per chip pixel... and 3 (downsampled).
            for scale in [1.0, 3.0] {
                let r = rotation(deg, scale, 0.0, 0.0);
                let m = r.apply([c, c]);
                let t = Similarity { tx: 200.0 - m[0], ty: 150.0 - m[1], ..r };
                let chip = extract(&img, &t, CHIP_SIZE);
                let at = |x: usize, y: usize| chip.data[(y * CHIP_SIZE + x) * 3];
                assert_eq!(at(75, 75), 200, "deg {deg} scale {scale}");
                // 30 image pixels of radius: 30/scale chip pixels.
                let edge = (c + 30.0 / scale + 3.0) as usize;
                assert_eq!(at(edge, 75), 40, "deg {deg} scale {scale}");
                if scale == 3.0 {
                    // 450 image pixels of chip: its corners fall outside the 400x300 photo.
                    assert_eq!(at(0, 0), 0, "deg {deg}");
                }
            }
        }
    }

    #[test]
    fn chip_of_landmarks_puts_them_on_the_template() {
        // A synthetic face: template points scattered by a 20-degree similarity; the chip's
        // transform maps every template point back onto its landmark.
        let truth = rotation(-20.0, 1.7, 120.0, 80.0);
        let lm = landmarks_through(&truth);
        let t = chip_transform(&lm, CHIP_SIZE).unwrap();
        let inv = t.inverse().unwrap();
        for (i, p) in template(CHIP_SIZE) {
            let q = inv.apply([lm[i][0] as f64, lm[i][1] as f64]);
            assert!((q[0] - p[0]).abs() < 1e-3 && (q[1] - p[1]).abs() < 1e-3, "landmark {i}");
        }
    }

    /// A real portrait (face_recognition's obama.jpg) rotated by 20 degrees: its landmarks are
    /// the upright ones rotated, the aligned chip gives nearly the upright photo's descriptor,
    /// and it is the rotation in the transform that does it: the same chip cut without the
    /// rotation (scale and centre kept) is much further off.
    #[test]
    fn a_rotated_portrait_aligns_to_the_upright_descriptor() {
        use crate::api::{ModelName, FACE_API_DIR};
        use crate::nets::{landmarks::Landmarks, recognition::Recognizer, ssd::Detector};
        use crate::tfjs::Weights;

        let models = crate::default_models_dir();
        let dir = models.join(FACE_API_DIR);
        let open = |m: ModelName| {
            Weights::open(&dir, m.file_stem())
                .unwrap_or_else(|e| panic!("{e}: run `bash scripts/fetch-models.sh` first"))
        };
        let ssd = Detector::load(&open(ModelName::Ssd)).unwrap();
        let lmnet = Landmarks::load(&open(ModelName::Landmarks)).unwrap();
        let rec = Recognizer::load(&open(ModelName::Recognition)).unwrap();
        let path = models.join("test-images/face_recognition/obama.jpg");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let img = crate::image_io::decode(&bytes, None, 40_000_000).unwrap();
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let face = |img: &Rgb| {
            pool.install(|| {
                let faces = ssd.detect(img, 0.5, 10);
                assert_eq!(faces.len(), 1, "{faces:?}");
                let f = faces[0];
                lmnet.landmarks_in(img, f.x, f.y, f.w, f.h).unwrap()
            })
        };
        let describe = |img: &Rgb, t: &Similarity| {
            pool.install(|| rec.descriptor(&extract(img, t, CHIP_SIZE)).unwrap())
        };
        let dist = |a: &[f32; 128], b: &[f32; 128]| {
            a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f32>().sqrt()
        };

        let upright_lm = face(&img);
        let upright_t = chip_transform(&upright_lm, CHIP_SIZE).unwrap();
        let upright = describe(&img, &upright_t);

        // The photo rotated by 20 degrees about its centre on a square canvas that holds all
        // of it: canvas pixel p shows the photo at `to_photo(p)`.
        let (w, h) = (img.width as f64, img.height as f64);
        let side = w.hypot(h).ceil() as usize;
        let r = rotation(20.0, 1.0, 0.0, 0.0);
        let c = side as f64 / 2.0;
        let m = r.apply([c, c]);
        let to_photo = Similarity { tx: w / 2.0 - m[0], ty: h / 2.0 - m[1], ..r };
        let rotated = extract(&img, &to_photo, side);
        let to_canvas = to_photo.inverse().unwrap();

        let lm = face(&rotated);
        let eyes =
            (upright_lm[36][0] - upright_lm[45][0]).hypot(upright_lm[36][1] - upright_lm[45][1]);
        let mean_error = upright_lm
            .iter()
            .zip(&lm)
            .map(|(p, q)| {
                let e = to_canvas.apply([p[0] as f64, p[1] as f64]);
                ((e[0] - q[0] as f64).hypot(e[1] - q[1] as f64)) as f32
            })
            .sum::<f32>()
            / 68.0;
        let t = chip_transform(&lm, CHIP_SIZE).unwrap();
        let aligned = describe(&rotated, &t);
        // The same chip without the rotation: scale kept, chip centre on the same point.
        let centre = t.apply([CHIP_SIZE as f64 / 2.0; 2]);
        let s = t.scale();
        let half = s * CHIP_SIZE as f64 / 2.0;
        let unrotated = Similarity { a: s, b: 0.0, tx: centre[0] - half, ty: centre[1] - half };
        let not_aligned = describe(&rotated, &unrotated);
        let (d_aligned, d_not) = (dist(&upright, &aligned), dist(&upright, &not_aligned));
        eprintln!(
            "obama.jpg rotated 20 degrees: transform angle {:.1}, landmarks {mean_error:.2} px off \
             (eyes {eyes:.0} px apart), distance to upright {d_aligned:.4} aligned, {d_not:.4} \
             without the rotation",
            t.angle().to_degrees()
        );
        // The canvas shows the photo turned by -20 degrees: the chip's transform turns 20 less.
        let turned = (t.angle() - upright_t.angle()).to_degrees();
        assert!((turned + 20.0).abs() < 2.0, "turned by {turned}: {t:?}");
        assert!(mean_error < 0.05 * eyes, "landmarks {mean_error} px off");
        assert!(d_aligned < 0.2, "aligned: {d_aligned}");
        assert!(d_not > d_aligned + 0.1, "without rotation {d_not}, aligned {d_aligned}");
    }
}
