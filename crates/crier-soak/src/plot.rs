//! The RSS-over-time plot: a hand-written SVG (axes, ticks, the RSS line, open descriptors on
//! a second axis, the phases of the run as dashed lines), and a PNG of it when a renderer is
//! installed.

use std::fmt::Write as _;
use std::path::Path;

use crate::sampler::Sample;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 80.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 50.0;

/// A tick step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let rough = (max / 5.0).max(f64::MIN_POSITIVE);
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

/// The values 0, step, 2 step, ... up to `max`, as (value, label).
fn ticks(max: f64, step: f64) -> Vec<(f64, String)> {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    (0..)
        .map(|k| k as f64 * step)
        .take_while(|v| *v <= max)
        .map(|v| (v, format!("{v:.decimals$}")))
        .collect()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG of `samples`, with `marks` (seconds, label) as vertical lines.
pub fn svg(samples: &[Sample], marks: &[(f64, String)], title: &str) -> String {
    let t_max = samples
        .last()
        .map_or(1.0, |s| s.t)
        .max(marks.iter().map(|m| m.0).fold(1.0, f64::max));
    let rss_mib = |s: &Sample| s.rss_kb as f64 / 1024.0;
    let rss_top = samples.iter().map(rss_mib).fold(1.0, f64::max) * 1.1;
    let fds_top = samples.iter().map(|s| s.fds as f64).fold(1.0, f64::max) * 1.1;
    let (rss_step, fds_step, t_step) = (tick_step(rss_top), tick_step(fds_top), tick_step(t_max));
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y_rss = |mib: f64| TOP + plot_h - mib / rss_top * plot_h;
    let y_fds = |fds: f64| TOP + plot_h - fds / fds_top * plot_h;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and left ticks (RSS).
    for (v, label) in ticks(rss_top, rss_step) {
        let y = y_rss(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e4e4e4"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 6.0,
            y + 4.0
        );
    }
    // Right ticks (descriptors).
    for (v, label) in ticks(fds_top, fds_step) {
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#888">{label}</text>"##,
            LEFT + plot_w + 6.0,
            y_fds(v) + 4.0
        );
    }
    // Time ticks.
    for (t, label) in ticks(t_max, t_step) {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{label}</text>"#,
            x(t),
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">seconds since the server started</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">server RSS (MiB)</text>"#,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        svg,
        r##"<text transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle" fill="#888">open descriptors</text>"##,
        WIDTH - 14.0,
        TOP + plot_h / 2.0
    );
    // Marks closer than 40 px share one label; each label goes on the first of three rows
    // where it does not run into the previous one.
    let mut groups: Vec<(f64, String)> = Vec::new();
    for (t, label) in marks {
        let x_mark = x(*t);
        let _ = writeln!(
            svg,
            r##"<line x1="{x_mark:.1}" y1="{TOP}" x2="{x_mark:.1}" y2="{:.1}" stroke="#c44" stroke-dasharray="4 3"/>"##,
            TOP + plot_h
        );
        match groups.last_mut() {
            Some((x_group, text)) if x_mark - *x_group < 40.0 => {
                text.push_str(", ");
                text.push_str(label);
            }
            _ => groups.push((x_mark, label.clone())),
        }
    }
    let mut row_ends = [f64::MIN; 3];
    for (x_group, label) in &groups {
        let row = row_ends.iter().position(|end| end < x_group).unwrap_or(2);
        row_ends[row] = x_group + 6.5 * label.len() as f64 + 8.0;
        let _ = writeln!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" fill="#c44" font-size="11">{}</text>"##,
            x_group + 3.0,
            TOP - 30.0 + 12.0 * row as f64,
            escape(label)
        );
    }
    let legend_y = HEIGHT - 12.0;
    let _ = writeln!(
        svg,
        r##"<line x1="{0:.1}" y1="{1:.1}" x2="{2:.1}" y2="{1:.1}" stroke="#1f5fbf" stroke-width="2"/><text x="{3:.1}" y="{4:.1}">RSS</text><line x1="{5:.1}" y1="{1:.1}" x2="{6:.1}" y2="{1:.1}" stroke="#999" stroke-dasharray="3 2"/><text x="{7:.1}" y="{4:.1}" fill="#888">open descriptors</text>"##,
        LEFT - 60.0,
        legend_y - 4.0,
        LEFT - 40.0,
        LEFT - 36.0,
        legend_y,
        LEFT - 2.0,
        LEFT + 18.0,
        LEFT + 22.0,
    );
    let points = |f: &dyn Fn(&Sample) -> f64| {
        samples
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.t), f(s)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#999" stroke-width="1" stroke-dasharray="3 2" points="{}"/>"##,
        points(&|s| y_fds(s.fds as f64))
    );
    let _ = writeln!(
        svg,
        r##"<polyline fill="none" stroke="#1f5fbf" stroke-width="2" points="{}"/>"##,
        points(&|s| y_rss(rss_mib(s)))
    );
    let _ = writeln!(svg, "</svg>");
    svg
}

/// Renders `svg_path` to `png_path` with the first renderer found; answers its name.
pub fn render_png(svg_path: &Path, png_path: &Path) -> Option<&'static str> {
    let ok = |program: &str, args: &[&std::ffi::OsStr]| {
        std::process::Command::new(program)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            && png_path.exists()
    };
    let (svg, png) = (svg_path.as_os_str(), png_path.as_os_str());
    if ok("rsvg-convert", &["-o".as_ref(), png, svg]) {
        return Some("rsvg-convert");
    }
    let screenshot = format!("--screenshot={}", png_path.display());
    let window = format!("--window-size={WIDTH},{HEIGHT}");
    let url = format!("file://{}", std::fs::canonicalize(svg_path).ok()?.display());
    for chromium in ["chromium", "chromium-browser", "google-chrome"] {
        let args = [
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            &screenshot,
            &window,
            &url,
        ];
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
        if ok(chromium, &args) {
            return Some(chromium);
        }
    }
    if ok("convert", &[svg, png]) {
        return Some("ImageMagick convert");
    }
    None
}
