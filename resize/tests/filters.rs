//! The filter kernels and the smart-crop anchor at their public (doc-hidden) boundary, on
//! the shared photos: every window chosen for a square crop lies inside its photo (the
//! windows are printed and recorded in the `smart` module doc), and a blur of a real
//! photo is cancelled by its stop check.

mod common;

use fast_image_resize as fir;
use tessera_resize::{filter, smart, ResizeError};

#[test]
fn smart_windows_of_the_shared_photos() {
    let Some(dir) = common::photos_dir() else {
        return;
    };
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no photos in {}", dir.display());
    let mut resizer = fir::Resizer::new();
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let (w, h, px) = common::decode_rgb8(&bytes);
        let side = f64::from(w.min(h));
        let (x, y) = smart::smart_window(&px, w, h, 3, side, side, &mut resizer).unwrap();
        println!("| {name} | {w}x{h} | ({x:.0}, {y:.0}, {side}) |");
        assert!(x >= 0.0 && y >= 0.0, "{name}: ({x}, {y})");
        assert!(x + side <= f64::from(w) + 1e-9, "{name}: x {x}");
        assert!(y + side <= f64::from(h) + 1e-9, "{name}: y {y}");
    }
}

#[test]
fn a_photo_blur_stops_when_asked() {
    let Some(bytes) = common::photo("aitzgorri-256k.jpg") else {
        return;
    };
    let (w, h, mut px) = common::decode_rgb8(&bytes);
    let before = px.clone();
    let checks = std::cell::Cell::new(0u32);
    let stop = || {
        checks.set(checks.get() + 1);
        checks.get() > 3
    };
    let r = filter::gaussian_blur(&mut px, w, h, 3, 20.0, &mut Vec::new(), &stop);
    assert!(matches!(r, Err(ResizeError::Cancelled)), "{r:?}");
    // Without a stop the same call blurs: the photo changes.
    let mut px = before.clone();
    filter::gaussian_blur(&mut px, w, h, 3, 20.0, &mut Vec::new(), &|| false).unwrap();
    assert_ne!(px, before);
}
