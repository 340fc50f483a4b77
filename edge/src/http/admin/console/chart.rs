//! The usage chart: one bar per period, drawn as SVG on the server.
//!
//! Server-side SVG because the console has no script (its Content-Security-Policy allows
//! none) and the chart is a dozen rectangles: a charting library would be most of the
//! page's weight. Styling comes from the console's stylesheet (`.bar`, `.axis`); the
//! geometry uses presentation attributes, which the policy allows.

use std::fmt::Write;

use super::html::Esc;

/// One bar: its label under the axis, its value, and a tooltip.
pub struct Bar {
    pub label: String,
    pub value: u64,
    pub title: String,
}

const WIDTH: u32 = 720;
const HEIGHT: u32 = 240;
const LEFT: u32 = 64;
const BOTTOM: u32 = 28;
const TOP: u32 = 12;

/// An SVG bar chart of `bars` (left to right), values read as `unit`, with a text
/// description for screen readers.
pub fn bars(id: &str, caption: &str, unit: &str, bars: &[Bar]) -> String {
    let top = nice_ceiling(bars.iter().map(|b| b.value).max().unwrap_or(0));
    let plot_h = HEIGHT - TOP - BOTTOM;
    let plot_w = WIDTH - LEFT - 8;
    let slot = plot_w / (bars.len().max(1) as u32);
    let mut svg = String::with_capacity(512 + bars.len() * 256);
    let _ = write!(
        svg,
        "<svg id=\"{}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         width=\"100%\" role=\"img\" aria-label=\"{}\"><title>{}</title>",
        Esc(id),
        Esc(caption),
        Esc(caption)
    );
    for step in 0..=4u64 {
        let value = top / 4 * step;
        let y = TOP + plot_h - (plot_h as u64 * step / 4) as u32;
        let _ = write!(
            svg,
            "<line class=\"axis\" x1=\"{LEFT}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\"/>\
             <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            WIDTH - 8,
            LEFT - 6,
            y + 4,
            Esc(&short(value, unit))
        );
    }
    let label_every = (bars.len() / 12).max(1);
    for (i, bar) in bars.iter().enumerate() {
        let h = (u128::from(bar.value) * u128::from(plot_h) / u128::from(top.max(1))) as u32;
        let x = LEFT + slot * i as u32 + slot / 8;
        let w = (slot * 3 / 4).max(1);
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{x}\" y=\"{}\" width=\"{w}\" height=\"{h}\"><title>{}</title></rect>",
            TOP + plot_h - h,
            Esc(&bar.title)
        );
        if i % label_every == 0 {
            let _ = write!(
                svg,
                "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                x + w / 2,
                HEIGHT - 10,
                Esc(&bar.label)
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// The smallest of 1, 2, 5 × 10^k (times 4, so each of the four gridlines is a round
/// number) at least `max`.
fn nice_ceiling(max: u64) -> u64 {
    let mut base = 1u64;
    loop {
        for m in [1u64, 2, 5] {
            let top = base.saturating_mul(m).saturating_mul(4);
            if top >= max || top == u64::MAX {
                return top.max(4);
            }
        }
        base = base.saturating_mul(10);
    }
}

/// A value with an SI suffix and `unit` (`1.5M requests`, `20 kB`).
pub fn short(value: u64, unit: &str) -> String {
    let (scaled, suffix) = match value {
        0..=9_999 => (value as f64, ""),
        10_000..=9_999_999 => (value as f64 / 1e3, "k"),
        10_000_000..=9_999_999_999 => (value as f64 / 1e6, "M"),
        _ => (value as f64 / 1e9, "G"),
    };
    let number = if suffix.is_empty() || scaled >= 100.0 {
        format!("{scaled:.0}")
    } else {
        format!("{scaled:.1}")
    };
    if unit.is_empty() {
        format!("{number}{suffix}")
    } else {
        format!("{number}{suffix} {unit}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_are_round_and_bars_fit() {
        assert_eq!(nice_ceiling(0), 4);
        assert_eq!(nice_ceiling(7), 8);
        assert_eq!(nice_ceiling(9), 20);
        assert_eq!(nice_ceiling(1_000), 2_000);
        assert_eq!(nice_ceiling(u64::MAX), u64::MAX);
        let svg = bars(
            "c",
            "requests <by> month",
            "",
            &[
                Bar {
                    label: "2026-10".into(),
                    value: 5,
                    title: "5".into(),
                },
                Bar {
                    label: "2026-11".into(),
                    value: 8,
                    title: "8 & more".into(),
                },
            ],
        );
        assert!(svg.starts_with("<svg id=\"c\""));
        assert!(svg.contains("requests &lt;by&gt; month") && svg.contains("8 &amp; more"));
        // The tallest bar fills the plot exactly: 8 of a scale topped at 8.
        assert!(svg.contains(&format!("height=\"{}\"", HEIGHT - TOP - BOTTOM)));
        assert_eq!(short(12_345, "B"), "12.3k B");
        assert_eq!(short(999, ""), "999");
    }
}
