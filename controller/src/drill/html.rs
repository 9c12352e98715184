//! The drill's report as one self-contained HTML page (no script, no external resource): the
//! table of the text report and an SVG timeline, one bar per instance with its phases coloured.

use std::fmt::Write;

use super::report::DrillReport;

const PHASES: [(&str, &str); 5] = [
    ("terminating", "#9aa5b1"),
    ("waiting", "#f0b429"),
    ("steps", "#2f80ed"),
    ("archive", "#27ae60"),
    ("leaving", "#cbd2d9"),
];

fn escape(text: &str) -> String {
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

fn cell(value: Option<f64>) -> String {
    value.map_or("-".to_string(), |s| format!("{s:.1} s"))
}

pub fn page(report: &DrillReport) -> String {
    let mut out = String::new();
    let title = format!("lifeguard drill of {}", escape(&report.group));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font:14px system-ui,sans-serif;margin:2em;color:#1f2933}}\
         table{{border-collapse:collapse}}td,th{{border:1px solid #cbd2d9;padding:4px 8px;text-align:left}}\
         .lost{{color:#c0392b;font-weight:bold}}.legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style>\
         </head><body>\n<h1>{title}</h1>\n<p>Started {}; {} instance(s), {} archived ({} bytes), {} with losses, {} ended by timeout: <b>{}</b>.</p>\n",
        report.started_at,
        report.summary.instances,
        report.summary.archived,
        report.summary.bytes,
        report.summary.lost,
        report.summary.timed_out,
        if report.failed() {
            "FAILED"
        } else {
            "nothing lost"
        }
    );
    out.push_str(
        "<table><tr><th>Instance</th><th>Zone</th><th>To Terminating:Wait</th><th>To drain</th>\
         <th>Steps</th><th>Archive</th><th>Archive and upload</th><th>Result</th><th>By</th><th>Lost</th></tr>\n",
    );
    for i in &report.instances {
        let steps: Vec<String> = i
            .steps
            .iter()
            .map(|s| format!("{} {} {:.1} s", escape(&s.name), escape(&s.outcome), s.secs))
            .collect();
        let lost = if i.lost.is_empty() {
            "nothing".to_string()
        } else {
            format!(
                "<span class=\"lost\">{}</span>",
                i.lost
                    .iter()
                    .map(|l| escape(l))
                    .collect::<Vec<_>>()
                    .join("<br>")
            )
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.instance_id),
            escape(&i.zone),
            cell(i.to_wait_secs),
            cell(i.to_drain_secs),
            steps.join("<br>"),
            i.archive_bytes
                .map_or("-".to_string(), |b| format!("{b} B")),
            cell(i.archive_secs),
            escape(i.result.as_deref().unwrap_or("-")),
            escape(i.completed_by.as_deref().unwrap_or("-")),
            lost
        );
    }
    out.push_str("</table>\n<h2>Timeline</h2>\n<p class=\"legend\">");
    for (phase, colour) in PHASES {
        let _ = write!(out, "<span style=\"background:{colour}\"></span>{phase}");
    }
    out.push_str("</p>\n");
    out.push_str(&chart(report));
    out.push_str("</body></html>\n");
    out
}

fn chart(report: &DrillReport) -> String {
    let (label, width, row) = (170.0, 720.0, 26.0);
    let end = report
        .instances
        .iter()
        .flat_map(|i| i.spans.iter().map(|s| s.to))
        .fold(report.summary.took_secs, f64::max)
        .max(1.0);
    let scale = width / end;
    let height = row * report.instances.len() as f64 + 30.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" role=\"img\">\n",
        label + width + 20.0
    );
    for (n, i) in report.instances.iter().enumerate() {
        let y = row * n as f64;
        let _ = writeln!(
            svg,
            "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text>",
            y + 16.0,
            escape(&i.instance_id)
        );
        for span in &i.spans {
            let colour = PHASES
                .iter()
                .find(|(p, _)| *p == span.phase)
                .map_or("#000", |(_, c)| c);
            let _ = writeln!(
                svg,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"18\" fill=\"{colour}\"><title>{} {}: {:.1}–{:.1} s</title></rect>",
                label + span.from * scale,
                y + 4.0,
                ((span.to - span.from) * scale).max(1.0),
                escape(&i.instance_id),
                span.phase,
                span.from,
                span.to
            );
        }
    }
    let axis_y = row * report.instances.len() as f64 + 20.0;
    let _ = writeln!(
        svg,
        "<text x=\"{label}\" y=\"{axis_y}\" font-size=\"11\">0 s</text><text x=\"{}\" y=\"{axis_y}\" font-size=\"11\" text-anchor=\"end\">{end:.0} s</text>",
        label + width
    );
    svg.push_str("</svg>\n");
    svg
}
