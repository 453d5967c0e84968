//! The pieces every page is drawn with: escaping, the page frame, tables,
//! and the charts, as inline SVG drawn on the server (no script needed to
//! see them, nothing fetched from elsewhere).

use std::fmt::Write;

use chuyi_common::size::ByteSize;

/// `text` safe inside an element or a quoted attribute.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub fn bytes(n: u64) -> String {
    ByteSize(n).approx().to_string()
}

pub fn percent(f: f64) -> String {
    format!("{:.1}%", f * 100.0)
}

/// Seconds as an operator reads a wait: `45 s`, `12 min`, `3.5 h`.
pub fn seconds(s: f64) -> String {
    if s < 120.0 {
        format!("{s:.0} s")
    } else if s < 7200.0 {
        format!("{:.0} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// The console's pages, as the navigation lists them.
pub const NAV: [(&str, &str); 5] =
    [("/", "Overview"), ("/nodes", "Nodes"), ("/pgs", "PGs"), ("/volumes", "Volumes"), ("/buckets", "Buckets")];

/// A whole page: `body` (already HTML) in the frame, `path`'s tab marked,
/// the logged-in `user` with a logout button, and when the survey the
/// page shows was taken.
pub fn page(title: &str, path: &str, user: &str, survey_ms: Option<u64>, body: &str) -> String {
    let mut nav = String::new();
    for (href, name) in NAV {
        let current = if href == path { " aria-current=\"page\"" } else { "" };
        let _ = write!(nav, "<a href=\"{href}\"{current}>{name}</a>");
    }
    let taken = survey_ms.map_or(String::new(), |ms| {
        format!("<footer>The map as of this page; nodes last surveyed <span class=\"age\" data-taken-ms=\"{ms}\">{ms}</span>. The page reloads itself every 10 s.</footer>")
    });
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>Chuyi · {}</title><link rel=\"stylesheet\" href=\"/static/console.css\">\
         <script src=\"/static/console.js\" defer></script></head>\n<body>\
         <header><span class=\"brand\">Chuyi</span><nav>{nav}</nav>\
         <form method=\"post\" action=\"/logout\"><span class=\"user\">{}</span> <button>Log out</button></form></header>\n\
         <main><h1>{}</h1>\n{body}</main>{taken}</body></html>\n",
        esc(title),
        esc(user),
        esc(title)
    )
}

/// A table: the header cells as given, each row's cells already HTML.
pub fn table(id: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table id=\"{id}\"><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(out, "<tr><td colspan=\"{}\" class=\"none\">none</td></tr>", header.len());
    }
    out.push_str("</tbody></table>\n");
    out
}

/// A state word styled by its meaning (`ok`, `warning`, `error`).
pub fn badge(level: &str, text: &str) -> String {
    format!("<span class=\"badge {level}\">{}</span>", esc(text))
}

/// A progress bar with its percent written beside it.
pub fn progress(percent: f64) -> String {
    format!("<progress max=\"100\" value=\"{percent:.1}\"></progress> {percent:.1}%")
}

/// One line of a chart.
#[derive(Debug)]
pub struct Series {
    pub name: &'static str,
    /// `(unix ms, value)`, oldest first.
    pub points: Vec<(u64, f64)>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 630.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 120.0;

/// A line chart of `series` from `from_ms` to `to_ms`, values from zero
/// to the largest (labelled with `label`).
pub fn chart(title: &str, label: fn(f64) -> String, series: &[Series], from_ms: u64, to_ms: u64) -> String {
    let most = series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0f64, f64::max);
    let top = if most > 0.0 { most } else { 1.0 };
    let span = to_ms.saturating_sub(from_ms).max(1) as f64;
    let x = |ms: u64| LEFT + (ms.saturating_sub(from_ms) as f64 / span) * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top) * (BOTTOM - TOP);
    let mut svg = format!(
        "<figure class=\"chart\"><figcaption>{}</figcaption>\
         <svg viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" aria-label=\"{}\">\
         <line class=\"axis\" x1=\"{LEFT}\" y1=\"{BOTTOM}\" x2=\"{RIGHT}\" y2=\"{BOTTOM}\"/>\
         <line class=\"grid\" x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{RIGHT}\" y2=\"{TOP}\"/>\
         <text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"{BOTTOM}\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{}\">{}</text><text x=\"{RIGHT}\" y=\"{}\" text-anchor=\"end\">now</text>",
        esc(title),
        esc(title),
        LEFT - 4.0,
        TOP + 4.0,
        esc(&label(top)),
        LEFT - 4.0,
        BOTTOM + 16.0,
        esc(&format!("{} ago", seconds(span / 1000.0))),
        BOTTOM + 16.0,
    );
    for (i, s) in series.iter().enumerate() {
        let points: Vec<String> = s.points.iter().map(|&(ms, v)| format!("{:.1},{:.1}", x(ms), y(v))).collect();
        let _ = write!(svg, "<polyline class=\"s{i}\" points=\"{}\"/>", points.join(" "));
    }
    svg.push_str("</svg><div class=\"legend\">");
    for (i, s) in series.iter().enumerate() {
        let now = s.points.last().map_or("-".into(), |p| label(p.1));
        let _ = write!(svg, "<span class=\"s{i}\">{}: {}</span>", esc(s.name), esc(&now));
    }
    svg.push_str("</div></figure>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_for_elements_and_attributes() {
        assert_eq!(esc("<b a=\"x\">'&'</b>"), "&lt;b a=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;");
        assert_eq!(esc("卷-vm0"), "卷-vm0");
    }

    #[test]
    fn a_page_marks_its_tab_and_escapes_the_user() {
        let html = page("Nodes", "/nodes", "<admin>", Some(5), "<p>x</p>");
        assert!(html.contains("<a href=\"/nodes\" aria-current=\"page\">Nodes</a>"));
        assert!(html.contains("<a href=\"/\">Overview</a>"));
        assert!(html.contains("&lt;admin&gt;") && !html.contains("<admin>"));
        assert!(html.contains("data-taken-ms=\"5\""));
    }

    #[test]
    fn a_chart_spans_its_window_and_scales_to_its_largest_value() {
        let series = [Series { name: "reads", points: vec![(1_000, 0.0), (61_000, 50.0), (121_000, 100.0)] }];
        let svg = chart("IOPS", |v| format!("{v:.0}/s"), &series, 1_000, 121_000);
        assert!(svg.contains("points=\"70.0,120.0 350.0,66.0 630.0,12.0\""), "{svg}");
        assert!(svg.contains(">100/s</text>"), "the top is labelled with the largest value");
        assert!(svg.contains("2 min ago") && svg.contains("reads: 100/s"), "{svg}");
        let empty = chart("none", |v| format!("{v}"), &[Series { name: "x", points: vec![] }], 0, 0);
        assert!(empty.contains("x: -"), "no point, no value, no panic");
    }

    #[test]
    fn an_empty_table_says_none() {
        assert!(table("t", &["A", "B"], &[]).contains("<td colspan=\"2\" class=\"none\">none</td>"));
        assert!(table("t", &["A"], &[vec!["<b>1</b>".into()]]).contains("<td><b>1</b></td>"));
    }

    #[test]
    fn waits_read_as_an_operator_says_them() {
        assert_eq!(seconds(45.0), "45 s");
        assert_eq!(seconds(720.0), "12 min");
        assert_eq!(seconds(12_600.0), "3.5 h");
    }
}
