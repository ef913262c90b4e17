//! The reports of a simulation as a Markdown table, JSON and an HTML page.

use serde::Serialize;

use super::model::SystemModel;
use super::report::PolicyReport;

/// Everything one `simulate` compared, for machines (`--json`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation<'a> {
    /// The trace's file.
    pub trace: &'a str,
    /// The trace's length in seconds.
    pub trace_seconds: f64,
    /// The simulated system.
    pub model: &'a SystemModel,
    /// One report per policy, in the order given.
    pub policies: &'a [PolicyReport],
}

/// How a report fills one cell of the table.
type Cell = fn(&PolicyReport) -> String;

/// The table's columns: header and cell.
const COLUMNS: &[(&str, Cell)] = &[
    ("policy", |r| r.name.clone()),
    ("under-provisioned min", |r| {
        format!("{:.1}", r.under_provisioned_minutes)
    }),
    ("SLO-violation min", |r| {
        format!("{:.1}", r.slo_violation_minutes)
    }),
    ("replica-hours", |r| format!("{:.1}", r.replica_hours)),
    ("over-provisioned replica-hours", |r| {
        format!("{:.1}", r.over_provisioned_replica_hours)
    }),
    ("scale events", |r| r.scale_events.to_string()),
    ("peak backlog", |r| format!("{:.0}", r.peak_backlog)),
    ("dropped", |r| format!("{:.0}", r.dropped_units)),
    ("failed runs", |r| r.failed_runs.to_string()),
    ("decisions", |r| r.decisions.to_string()),
    ("decisions/s", |r| format!("{:.0}", r.decisions_per_second)),
];

/// The reports as a Markdown table, one row per policy.
pub fn markdown(reports: &[PolicyReport]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = COLUMNS.iter().map(|(h, _)| *h).collect();
    out.push_str(&format!("| {} |\n", header.join(" | ")));
    let rule: Vec<&str> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, _)| if i == 0 { "---" } else { "---:" })
        .collect();
    out.push_str(&format!("| {} |\n", rule.join(" | ")));
    for report in reports {
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|(_, cell)| cell(report).replace('|', "\\|"))
            .collect();
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    out
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page: the chart (an SVG document, inlined) above the table and the
/// model's parameters.
pub fn html(simulation: &Simulation<'_>, chart_svg: Option<&str>) -> String {
    let mut table = String::from("<table>\n<tr>");
    for (header, _) in COLUMNS {
        table.push_str(&format!("<th>{}</th>", escape(header)));
    }
    table.push_str("</tr>\n");
    for report in simulation.policies {
        table.push_str("<tr>");
        for (_, cell) in COLUMNS {
            table.push_str(&format!("<td>{}</td>", escape(&cell(report))));
        }
        table.push_str("</tr>\n");
    }
    table.push_str("</table>\n");
    let model = serde_json::to_string_pretty(simulation.model).unwrap_or_default();
    // The SVG is our own output; its XML prolog is not allowed inside HTML.
    let chart = chart_svg
        .map(|svg| {
            svg.trim_start()
                .strip_prefix("<?xml")
                .and_then(|rest| rest.split_once("?>").map(|(_, body)| body))
                .unwrap_or(svg)
                .to_owned()
        })
        .unwrap_or_else(|| "<p>(no chart: see the command's warning)</p>".into());
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>wasmscaler simulate: {trace}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #bbb; padding: 0.3em 0.6em; text-align: right; }}
th:first-child, td:first-child {{ text-align: left; }}
pre {{ background: #f4f4f4; padding: 0.8em; }}
</style>
</head>
<body>
<h1>wasmscaler simulate</h1>
<p>Trace <code>{trace}</code>, {seconds:.0} s.</p>
{chart}
{table}
<h2>Model</h2>
<pre>{model}</pre>
</body>
</html>
"#,
        trace = escape(simulation.trace),
        seconds = simulation.trace_seconds,
        model = escape(&model),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(name: &str) -> PolicyReport {
        PolicyReport {
            name: name.into(),
            decisions: 240,
            failed_runs: 1,
            under_provisioned_minutes: 1.24,
            slo_violation_minutes: 2.0,
            replica_hours: 3.5,
            over_provisioned_replica_hours: 0.76,
            scale_events: 4,
            peak_backlog: 12.0,
            dropped_units: 0.0,
            decisions_per_second: 1000.0,
            wall_seconds: 0.24,
            series: Vec::new(),
        }
    }

    #[test]
    fn the_table_has_one_row_per_policy_with_every_measure() {
        let table = markdown(&[report("hpa"), report("a|b")]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[0].starts_with("| policy | under-provisioned min |"));
        assert_eq!(
            lines[2],
            "| hpa | 1.2 | 2.0 | 3.5 | 0.8 | 4 | 12 | 0 | 1 | 240 | 1000 |"
        );
        assert!(lines[3].starts_with("| a\\|b |"), "{}", lines[3]);
    }

    #[test]
    fn the_page_escapes_names_and_inlines_the_chart() {
        let model = SystemModel::default();
        let reports = [report("<script>")];
        let simulation = Simulation {
            trace: "t.csv",
            trace_seconds: 60.0,
            model: &model,
            policies: &reports,
        };
        let page = html(
            &simulation,
            Some("<?xml version=\"1.0\"?>\n<svg width=\"1\"></svg>"),
        );
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<script>"));
        assert!(page.contains("<svg width=\"1\"></svg>"));
        assert!(!page.contains("<?xml"));
    }
}
