//! The HTML report: one self-contained page (inline CSS, inline SVG drawn with plotters, no
//! JavaScript, nothing fetched) with the latency percentile curves (test vs production), the
//! throughput over time and the figures of the table.

use super::{escape, CurvePoint, Report};
use plotters::prelude::*;
use std::fmt::Write as _;

const TEST_COLOR: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const PROD_COLOR: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const TEST_LIGHT: RGBColor = RGBColor(0x9e, 0xc9, 0xe8);
const PROD_LIGHT: RGBColor = RGBColor(0xf0, 0xa0, 0xa0);

/// The verdicts (first: what CI looks at), the endpoint table, the field differences and the
/// learned noise.
fn verdicts_and_endpoints(h: &mut String, r: &Report) {
    if !r.verdicts.is_empty() {
        let failed = r.verdicts.iter().filter(|v| v.failed).count();
        let _ = writeln!(
            h,
            "<h2 id=\"verdicts\" class=\"{}\">Verdicts: {}</h2>\n<table><tr><th>rule</th><th>endpoint</th><th>result</th><th>values</th></tr>",
            if failed > 0 { "fail" } else { "pass" },
            if failed > 0 { format!("{failed} failed") } else { "all passed".to_string() }
        );
        for v in &r.verdicts {
            let _ = writeln!(
                h,
                "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if v.failed { "fail" } else { "pass" },
                html_escape(&v.rule),
                html_escape(v.endpoint.as_deref().unwrap_or("(run)")),
                if v.failed { "FAILED" } else { "passed" },
                html_escape(&v.detail)
            );
        }
        h.push_str("</table>\n");
    }
    if !r.endpoints.is_empty() {
        h.push_str("<h2 id=\"endpoints\">Endpoints (largest regressions first)</h2>\n<table><tr><th>endpoint</th><th>requests</th><th>errors test</th><th>errors production</th><th>p50 test</th><th>p50 prod</th><th>p99 test</th><th>p99 prod</th><th>p99.9 test</th><th>p99.9 prod</th><th>p99 ×</th><th>differing</th></tr>\n");
        for e in &r.endpoints {
            let p = e.production.as_ref();
            let ms = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
            let errs = |s: &super::EndpointSide| {
                if s.errors == 0 {
                    "0".to_string()
                } else {
                    format!(
                        "{} ({})",
                        s.errors,
                        super::table::classes_text(&s.errors_by_class)
                    )
                }
            };
            // Marked: an endpoint a rule failed on; without rules, a p99 20 % and 1 ms worse
            // than production's, or more errors.
            let slow = if e.gone {
                false
            } else if r.verdicts.is_empty() {
                let worse = p.is_some_and(|p| e.test.latency_ms.p99 > p.latency_ms.p99 + 1.0);
                (e.p99_ratio.is_some_and(|x| x > 1.2) && worse)
                    || p.map_or(e.test.errors > 0, |p| e.test.error_rate > p.error_rate)
            } else {
                r.verdicts
                    .iter()
                    .any(|v| v.failed && v.endpoint.as_deref() == Some(e.endpoint.as_str()))
            };
            let _ = writeln!(
                h,
                "<tr{}><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                if slow { " class=\"fail\"" } else { "" },
                html_escape(&e.endpoint),
                if e.gone { " <em>(gone: only in OLD)</em>" } else { "" },
                e.test.requests,
                html_escape(&errs(&e.test)),
                html_escape(&p.map_or("–".to_string(), errs)),
                ms(Some(e.test.latency_ms.p50)),
                ms(p.map(|p| p.latency_ms.p50)),
                ms(Some(e.test.latency_ms.p99)),
                ms(p.map(|p| p.latency_ms.p99)),
                ms(Some(e.test.latency_ms.p999)),
                ms(p.map(|p| p.latency_ms.p999)),
                e.p99_ratio.map_or("–".to_string(), |x| format!("{x:.2}")),
                e.diff.as_ref().map_or("–".to_string(), |d| format!("{}/{}", d.differing, d.compared)),
            );
        }
        h.push_str("</table>\n");
    }
    if let Some(d) = &r.decode {
        let _ = writeln!(
            h,
            "<p>decoded: {} · opaque: {} requests in {} sessions, {} responses</p>",
            html_escape(&super::table::classes_text(&d.decoded)),
            d.opaque_requests,
            d.opaque_sessions,
            d.opaque_responses
        );
    }
    if let Some(d) = &r.diff {
        if !d.fields.is_empty() {
            h.push_str("<h2 id=\"differences\">Differing responses</h2>\n<table><tr><th>endpoint</th><th>key</th><th>field</th><th>production</th><th>test</th></tr>\n");
            for e in &d.fields {
                for f in &e.fields {
                    let _ = writeln!(
                        h,
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        html_escape(&e.endpoint),
                        html_escape(e.key.as_deref().unwrap_or("")),
                        html_escape(&f.path),
                        html_escape(f.production.as_deref().unwrap_or("(absent)")),
                        html_escape(f.test.as_deref().unwrap_or("(absent)"))
                    );
                }
            }
            h.push_str("</table>\n");
        }
        if !d.noise.is_empty() {
            let _ = writeln!(
                h,
                "<h2 id=\"noise\">Noise learned from the baseline ({} responses)</h2>\n<table><tr><th>endpoint</th><th>ignored fields</th></tr>",
                d.baseline_compared
            );
            for (ep, paths) in &d.noise {
                let _ = writeln!(
                    h,
                    "<tr><td>{}</td><td>{}</td></tr>",
                    html_escape(ep),
                    html_escape(&paths.join(", "))
                );
            }
            h.push_str("</table>\n");
        }
    }
}

/// Percentile → position on the "nines" axis (0 → 0, 90 → 1, 99 → 2, 99.9 → 3, …).
fn nines(p: f64) -> f64 {
    let rest = (1.0 - p / 100.0).max(1e-6);
    -rest.log10()
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

type Series<'a> = (&'a str, RGBColor, Vec<(f64, f64)>);

/// Draws one line chart to an SVG string.
fn line_chart(
    title: &str,
    x_desc: &str,
    y_desc: &str,
    series: &[Series<'_>],
    x_fmt: &dyn Fn(&f64) -> String,
) -> Result<String, String> {
    let mut svg = String::new();
    let xmax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1e-3);
    let ymax = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.1))
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    {
        let root = SVGBackend::with_string(&mut svg, (860, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .x_labels(9)
            .x_label_formatter(x_fmt)
            .draw()
            .map_err(|e| e.to_string())?;
        for (name, color, pts) in series {
            if pts.is_empty() {
                continue;
            }
            let c = *color;
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            // Markers, so that a series of one point still shows.
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 2, c.filled())))
                .map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn curve_points(c: &[CurvePoint]) -> Vec<(f64, f64)> {
    c.iter().map(|p| (nines(p.percentile), p.ms)).collect()
}

/// Renders the whole page.
pub fn render_html(r: &Report) -> Result<String, String> {
    let latency = line_chart(
        "Latency by percentile (first response byte − last request byte)",
        "percentile",
        "latency (ms)",
        &[
            ("test", TEST_COLOR, curve_points(&r.latency_curve.test)),
            (
                "production",
                PROD_COLOR,
                curve_points(&r.latency_curve.production),
            ),
        ],
        // Labels at whole nines only: 0 %, 90 %, 99 %, 99.9 %, 99.99 %.
        &|x: &f64| {
            if (x - x.round()).abs() > 1e-6 {
                return String::new();
            }
            let p = 100.0 * (1.0 - 10f64.powf(-x.round()));
            format!("{p:.*}%", (x.round() as usize).saturating_sub(2))
        },
    )?;
    let tp = |v: &[f64]| -> Vec<(f64, f64)> {
        v.iter()
            .enumerate()
            .map(|(i, c)| ((i as f64 + 0.5) * r.throughput.bucket_s, *c))
            .collect()
    };
    let throughput = line_chart(
        "Throughput over time",
        "seconds since start (test: run; production: capture)",
        "requests/s",
        &[
            ("test", TEST_COLOR, tp(&r.throughput.test)),
            ("production", PROD_COLOR, tp(&r.throughput.production)),
        ],
        // Enough decimals that the labels of a short run differ (0.00 … 0.05, not 0.0 … 0.1).
        &|x: &f64| {
            let span = r.throughput.test.len().max(r.throughput.production.len()) as f64
                * r.throughput.bucket_s;
            let decimals = if span < 1.0 {
                2
            } else if span < 10.0 {
                1
            } else {
                0
            };
            format!("{x:.decimals$}")
        },
    )?;
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tcpclone report</title>\n<style>\
body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}\
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}th:first-child,td:first-child{{text-align:left}}\
pre{{background:#f6f6f6;padding:8px;overflow:auto}}figure{{margin:1em 0}}\
tr.fail td{{background:#fde2e2}}h2.fail{{color:#b00}}h2.pass{{color:#080}}</style></head><body>\n\
<h1>tcpclone {} report</h1>\n<p>schema {} v{} · duration {:.3} s</p>\n",
        html_escape(&r.mode),
        super::SCHEMA,
        r.version,
        r.duration_s
    );
    verdicts_and_endpoints(&mut h, r);
    h.push_str("<h2>Totals</h2>\n<table><tr><th></th><th>test</th><th>production</th></tr>\n");
    let p = r.production.as_ref();
    let t = &r.test;
    let mut row = |name: &str, tv: String, pv: Option<String>| {
        let _ = writeln!(
            h,
            "<tr><td>{name}</td><td>{tv}</td><td>{}</td></tr>",
            pv.unwrap_or_else(|| "–".into())
        );
    };
    row(
        "requests",
        t.requests.to_string(),
        p.map(|p| p.requests.to_string()),
    );
    row(
        "errors",
        t.errors.to_string(),
        p.map(|p| p.errors.to_string()),
    );
    row(
        "requests/s",
        format!("{:.1}", t.rps),
        p.map(|p| format!("{:.1}", p.rps)),
    );
    row(
        "latency p50 (ms)",
        format!("{:.3}", t.latency_ms.p50),
        p.map(|p| format!("{:.3}", p.latency_ms.p50)),
    );
    row(
        "latency p90 (ms)",
        format!("{:.3}", t.latency_ms.p90),
        p.map(|p| format!("{:.3}", p.latency_ms.p90)),
    );
    row(
        "latency p99 (ms)",
        format!("{:.3}", t.latency_ms.p99),
        p.map(|p| format!("{:.3}", p.latency_ms.p99)),
    );
    row(
        "latency p99.9 (ms)",
        format!("{:.3}", t.latency_ms.p999),
        p.map(|p| format!("{:.3}", p.latency_ms.p999)),
    );
    row(
        "latency max (ms)",
        format!("{:.3}", t.latency_ms.max),
        p.map(|p| format!("{:.3}", p.latency_ms.max)),
    );
    h.push_str("</table>\n");
    let _ = writeln!(
        h,
        "<p>reset {} · refused {} · timed out {} · closed {} · sessions {} replayed, {} partial, {} dropped, {} repeats (redelivered){}</p>",
        t.reset, t.refused, t.timed_out, t.closed, r.sessions.replayed, r.sessions.partial, r.sessions.dropped, r.sessions.repeats,
        r.merged_from.map_or(String::new(), |n| format!(" · merged from {n} reports"))
    );
    if let Some(tls) = &r.tls {
        let mut lines = String::new();
        super::render_tls(&mut lines, tls);
        let _ = writeln!(h, "<h2>TLS</h2><pre>{}</pre>", html_escape(&lines));
    }
    let _ = writeln!(h, "<figure id=\"latency\">{latency}</figure>");
    let _ = writeln!(h, "<figure id=\"throughput\">{throughput}</figure>");
    if let Some(t) = &r.latency_over_time {
        let pts = |v: &[super::endpoints::TimePoint],
                   f: fn(&super::endpoints::TimePoint) -> f64| {
            v.iter()
                .map(|p| (p.t_s + t.bucket_s / 2.0, f(p)))
                .collect::<Vec<_>>()
        };
        let chart = line_chart(
            &format!("Latency over time (p50 and p99 per {} s)", t.bucket_s),
            "seconds since start (test: run; production: capture)",
            "latency (ms)",
            &[
                ("test p99", TEST_COLOR, pts(&t.test, |p| p.p99)),
                ("test p50", TEST_LIGHT, pts(&t.test, |p| p.p50)),
                ("production p99", PROD_COLOR, pts(&t.production, |p| p.p99)),
                ("production p50", PROD_LIGHT, pts(&t.production, |p| p.p50)),
            ],
            &|x: &f64| {
                let span = t.test.len().max(t.production.len()) as f64 * t.bucket_s;
                let decimals = if span < 1.0 {
                    2
                } else if span < 10.0 {
                    1
                } else {
                    0
                };
                format!("{x:.decimals$}")
            },
        )?;
        let _ = writeln!(h, "<figure id=\"latency-over-time\">{chart}</figure>");
    }
    if let Some(d) = &r.diff {
        let _ = writeln!(
            h,
            "<h2>Response comparison</h2><p>{}/{} match ({:.1} %)</p>",
            d.matched,
            d.compared,
            d.match_rate * 100.0
        );
        for e in &d.examples {
            let _ = writeln!(
                h,
                "<pre>session {} request {}: {}\nproduction ({} B): {}\ntest ({} B):       {}</pre>",
                e.session,
                e.index,
                html_escape(&e.request),
                e.production_len,
                html_escape(&e.production_excerpt),
                e.test_len,
                html_escape(&e.test_excerpt)
            );
        }
    }
    let _ = writeln!(
        h,
        "<p><small>{}</small></p></body></html>",
        html_escape(&escape(b"generated by tcpcopy", 64))
    );
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use std::time::Duration;

    #[test]
    fn page_has_two_charts_with_points() {
        let mut c = Collector::new("stream", None).unwrap();
        for i in 0..500u32 {
            c.record(RequestSample {
                index: i,
                sent_at: Duration::from_millis(u64::from(i) * 7),
                latency: Some(Duration::from_micros(200 + u64::from(i))),
                outcome: Some(Outcome::Answered),
                production: Some(ProductionSample {
                    latency: Duration::from_micros(100 + u64::from(i) / 2),
                    ttlb: Duration::from_micros(150),
                    bytes_in: 1,
                    at: Duration::from_millis(u64::from(i) * 7),
                }),
                ..Default::default()
            });
        }
        let page = html::render_html(&c.finish(Duration::from_secs(4))).unwrap();
        assert!(!page.contains("<script"));
        assert_eq!(page.matches("<svg").count(), 2);
        // Two curves on each chart (plus legend samples): every data line has many points.
        let lines: Vec<&str> = page.split("<polyline").skip(1).collect();
        let long = lines
            .iter()
            .filter(|l| {
                l.split("points=\"")
                    .nth(1)
                    .is_some_and(|p| p.split('"').next().unwrap_or("").split(' ').count() >= 4)
            })
            .count();
        assert!(long >= 4, "{long} long polylines");
        assert!(super::nines(99.0) > 1.99 && super::nines(99.0) < 2.01);
    }
}
