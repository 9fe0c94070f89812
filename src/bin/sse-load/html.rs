//! `--report FILE.html`: one self-contained page (no scripts, fonts or styles from elsewhere)
//! with the run's parameters, the summary table and four charts drawn as inline SVG by
//! `plotters`: connections, deliveries per second, and latency (p50, p99, max) over time, and
//! each event's completeness.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

use plotters::prelude::*;

use crate::args::Plan;
use crate::report::Report;
use crate::timeline::Timeline;

const SIZE: (u32, u32) = (720, 300);

/// A named line: its name, its points, its colour.
type Series<'a> = (&'a str, &'a [(f64, f64)], RGBColor);

/// Writes the page.
pub fn write(path: &Path, plan: &Plan, report: &Report, timeline: &Timeline) -> io::Result<()> {
    std::fs::write(
        path,
        page(plan, report, timeline).map_err(io::Error::other)?,
    )
}

/// The page's HTML.
pub fn page(plan: &Plan, report: &Report, timeline: &Timeline) -> Result<String, String> {
    let a = &plan.args;
    let mut o = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>sse-load report</title>\n<style>\
         body{font-family:system-ui,sans-serif;margin:2em;max-width:1600px;color:#222}\
         table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}\
         .charts{display:flex;flex-wrap:wrap;gap:1em}.chart{border:1px solid #ddd}\
         .ok{color:#075}.bad{color:#b00}</style></head><body>\n<h1>sse-load report</h1>\n",
    );
    let verdict = report.verdict();
    let class = if report.all_delivered() { "ok" } else { "bad" };
    let _ = writeln!(
        o,
        "<p id=\"verdict\" class=\"{class}\"><strong>{}</strong></p>",
        esc(verdict)
    );
    o.push_str("<h2>Parameters</h2>\n<table id=\"parameters\">\n");
    let mut row = |k: &str, v: String| {
        let _ = writeln!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(&v));
    };
    row("URLs", a.urls.join(" "));
    row("clients", format!("{} ({} slow)", a.clients, a.slow));
    row("workers", report.info.workers.to_string());
    row("source addresses", report.info.source_ips.to_string());
    row("connect rate", format!("{}/s", a.rate));
    row(
        "window",
        format!(
            "{:?}{}",
            a.duration,
            a.events
                .map_or(String::new(), |n| format!(" or {n} events"))
        ),
    );
    row(
        "publish rate",
        a.publish_rate
            .map_or("none (the server publishes)".into(), |r| format!("{r}/s")),
    );
    row(
        "topics",
        if a.topics.is_empty() {
            "none".into()
        } else {
            a.topics.join(", ")
        },
    );
    let groups: Vec<String> = (0..plan.groups())
        .map(|g| format!("{g}: {}", plan.group_label(g as u16)))
        .collect();
    row("client groups (URL, topic)", groups.join("; "));
    row(
        "reconnect every",
        a.reconnect_every
            .map_or("never".into(), |d| format!("{d:?}")),
    );
    o.push_str("</table>\n<h2>Summary</h2>\n<pre id=\"summary\">");
    o.push_str(&esc(&report.table()));
    o.push_str("</pre>\n<h2>Charts</h2>\n<div class=\"charts\">\n");
    let s = &timeline.samples;
    let conn: Vec<(f64, f64)> = s.iter().map(|x| (x.t, x.streaming as f64)).collect();
    let rate: Vec<(f64, f64)> = s.iter().map(|x| (x.t, x.per_second)).collect();
    // A sample in which nothing arrived has no latency: no point (not a 0 ms point).
    let measured = || s.iter().filter(|x| x.per_second > 0.0);
    let p50: Vec<(f64, f64)> = measured().map(|x| (x.t, x.p50_ms)).collect();
    let p99: Vec<(f64, f64)> = measured().map(|x| (x.t, x.p99_ms)).collect();
    let max: Vec<(f64, f64)> = measured().map(|x| (x.t, x.max_ms)).collect();
    let complete: Vec<(f64, f64)> = report
        .outcomes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let pct = if e.expected == 0 {
                0.0
            } else {
                100.0 * e.received as f64 / e.expected as f64
            };
            (i as f64 + 1.0, pct)
        })
        .collect();
    let charts = [
        chart(
            "connections",
            "Streams open",
            "seconds",
            "streams",
            &[("open", &conn, BLUE)],
        )?,
        chart(
            "deliveries",
            "Deliveries per second",
            "seconds",
            "events/s",
            &[("received/s", &rate, GREEN)],
        )?,
        chart(
            "latency",
            "Latency over time",
            "seconds",
            "ms",
            &[
                ("p50", &p50, BLUE),
                ("p99", &p99, RGBColor(230, 120, 0)),
                ("max", &max, RED),
            ],
        )?,
        chart(
            "completeness",
            "Completeness per event",
            "event (by group, then time)",
            "% of clients",
            &[("received", &complete, MAGENTA)],
        )?,
    ];
    for c in charts {
        o.push_str(&c);
    }
    o.push_str("</div>\n</body></html>\n");
    Ok(o)
}

/// One line chart as an inline `<svg>` in a `<div class="chart" id=…>`.
fn chart(id: &str, title: &str, x: &str, y: &str, series: &[Series<'_>]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let pts = series.iter().flat_map(|s| s.1.iter());
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(px, py) in pts {
            x0 = x0.min(px);
            x1 = x1.max(px);
            y1 = y1.max(py);
        }
        if x0 > x1 {
            (x0, x1) = (0.0, 1.0);
        }
        if x1 - x0 < 1e-9 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.08 };
        let mut ch = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(|e| e.to_string())?;
        ch.configure_mesh()
            .x_desc(x)
            .y_desc(y)
            .x_label_formatter(&|v| trim_number(*v))
            .y_label_formatter(&|v| trim_number(*v))
            .draw()
            .map_err(|e| e.to_string())?;
        for &(name, data, color) in series {
            ch.draw_series(LineSeries::new(data.iter().copied(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(format!("{name} ({} points)", data.len()))
                .legend(move |(lx, ly)| {
                    PathElement::new(vec![(lx, ly), (lx + 18, ly)], color.stroke_width(2))
                });
            if data.len() < 60 {
                ch.draw_series(data.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
        }
        ch.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    let points: usize = series.iter().map(|s| s.1.len()).sum();
    Ok(format!(
        "<div class=\"chart\" id=\"{id}\" data-points=\"{points}\">{svg}</div>\n"
    ))
}

/// An axis label: whole numbers without decimals, others with at most two.
fn trim_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// `s` escaped for HTML text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::Args;
    use crate::report::{EventOutcome, RunInfo};
    use crate::timeline::Sample;
    use clap::Parser as _;

    #[test]
    fn axis_labels() {
        assert_eq!(trim_number(2000.0), "2000");
        assert_eq!(trim_number(2.5), "2.5");
        assert_eq!(trim_number(0.25), "0.25");
        assert_eq!(trim_number(1.5001), "1.5");
    }

    #[test]
    fn page_is_self_contained_with_four_charts() {
        let plan =
            Plan::new(Args::try_parse_from(["sse-load", "--clients", "3"]).unwrap()).unwrap();
        let mut report = Report {
            info: RunInfo {
                clients: 3,
                ..RunInfo::default()
            },
            ..Report::default()
        };
        report.outcomes.push(EventOutcome {
            group: 0,
            time_ns: Some(1),
            received: 3,
            expected: 3,
        });
        let mut t = Timeline::default();
        for i in 0..6 {
            t.samples.push(Sample {
                t: f64::from(i),
                streaming: 3,
                // The first sample saw no event: it has no latency to draw.
                per_second: if i == 0 { 0.0 } else { 30.0 },
                p50_ms: 1.0,
                p99_ms: 2.0,
                max_ms: 3.0,
            });
        }
        let html = page(&plan, &report, &t).unwrap();
        assert_eq!(html.matches("<svg").count(), 4);
        assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="));
        assert!(html.contains("id=\"latency\" data-points=\"15\""));
        assert!(
            html.contains("polyline") || html.contains("<path"),
            "lines drawn"
        );
    }
}
