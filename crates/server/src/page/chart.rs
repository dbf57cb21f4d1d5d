//! Usage per key per day as a bar chart, drawn on the server as SVG: no
//! script, nothing to load, and the page's strict policy allows it (only
//! presentation attributes, no inline styles).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::store::DailyUsage;

/// Colours for keys, in turn; readable on white and told apart.
const COLOURS: [&str; 8] =
    ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

/// One key's colour in the chart and its legend.
#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) colour: &'static str,
    pub(crate) credits: f64,
}

/// The chart: `days` days ending with `last_day` (unix seconds of its
/// start), a stack of each day's credits per key. Returns the SVG and its
/// legend; names are escaped here, since the SVG is put into the page as is.
pub(crate) fn usage_chart(
    usage: &[DailyUsage],
    names: &BTreeMap<i64, String>,
    last_day: i64,
    days: i64,
) -> (String, Vec<Series>) {
    let first_day = last_day - (days - 1) * 86_400;
    let mut keys: Vec<i64> = usage.iter().map(|u| u.key_id).collect();
    keys.sort_unstable();
    keys.dedup();
    let colour = |key: i64| COLOURS[keys.iter().position(|k| *k == key).unwrap_or(0) % COLOURS.len()];
    let mut per_day: BTreeMap<i64, Vec<&DailyUsage>> = BTreeMap::new();
    for u in usage.iter().filter(|u| u.day >= first_day && u.day <= last_day) {
        per_day.entry(u.day).or_default().push(u);
    }
    let top = per_day.values().map(|d| d.iter().map(|u| u.credits).sum::<f64>()).fold(0.0, f64::max);
    let scale_top = nice_ceiling(top);
    let (width, height, left, bottom, top_pad) = (720.0, 240.0, 56.0, 28.0, 12.0);
    let plot_h = height - bottom - top_pad;
    let slot = (width - left - 8.0) / days as f64;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img" aria-label="Credits per key per day" class="chart">"##
    );
    for step in 0..=4 {
        let value = scale_top * f64::from(step) / 4.0;
        let y = top_pad + plot_h - plot_h * f64::from(step) / 4.0;
        let _ = write!(
            svg,
            r##"<line x1="{left}" x2="{width}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end" fill="#4b5563">{}</text>"##,
            left - 6.0,
            y + 4.0,
            format_credits(value)
        );
    }
    for i in 0..days {
        let day = first_day + i * 86_400;
        let x = left + slot * i as f64 + slot * 0.15;
        let mut y = top_pad + plot_h;
        for u in per_day.get(&day).into_iter().flatten() {
            let h = if scale_top > 0.0 { plot_h * u.credits / scale_top } else { 0.0 };
            y -= h;
            let name = names.get(&u.key_id).map_or("?", String::as_str);
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{} · {}: {} credits, {} jobs</title></rect>"##,
                slot * 0.7,
                colour(u.key_id),
                escape(name),
                day_label(day),
                format_credits(u.credits),
                u.jobs
            );
        }
        if days <= 14 || i % 2 == 0 {
            let _ = write!(
                svg,
                r##"<text x="{:.1}" y="{:.1}" font-size="11" text-anchor="middle" fill="#4b5563">{}</text>"##,
                x + slot * 0.35,
                height - 10.0,
                &day_label(day)[5..]
            );
        }
    }
    svg.push_str("</svg>");
    let legend = keys
        .iter()
        .map(|k| Series {
            name: names.get(k).cloned().unwrap_or_else(|| format!("key {k}")),
            colour: colour(*k),
            credits: usage.iter().filter(|u| u.key_id == *k && u.day >= first_day).map(|u| u.credits).sum(),
        })
        .collect();
    (svg, legend)
}

/// A round number at or above `v`, for the scale's top.
fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|c| *c >= v).unwrap_or(10.0 * magnitude)
}

fn format_credits(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
}

/// `2026-11-30` for a day's first second.
pub(crate) fn day_label(day: i64) -> String {
    let (y, m, d) = crate::calendar::civil_from_days(day.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Text made safe inside SVG/HTML.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_per_day_and_names_are_escaped() {
        let day = 20_000 * 86_400;
        let usage = [
            DailyUsage { key_id: 1, day, credits: 30.0, jobs: 3 },
            DailyUsage { key_id: 2, day, credits: 10.0, jobs: 1 },
            DailyUsage { key_id: 1, day: day - 86_400, credits: 5.0, jobs: 1 },
        ];
        let names = BTreeMap::from([(1, "alice".to_owned()), (2, "<b>bob</b>".to_owned())]);
        let (svg, legend) = usage_chart(&usage, &names, day, 7);
        assert_eq!(svg.matches("<rect").count(), 3);
        assert!(svg.contains("&lt;b&gt;bob&lt;/b&gt;") && !svg.contains("<b>"), "{svg}");
        // 40 credits on the busiest day: the scale tops out at 50.
        assert!(svg.contains(">50</text>"), "{svg}");
        assert_eq!(
            legend.iter().map(|s| (s.name.as_str(), s.credits)).collect::<Vec<_>>(),
            [("alice", 35.0), ("<b>bob</b>", 10.0)]
        );
        assert_eq!(day_label(day), "2024-10-04");
    }

    #[test]
    fn scales_end_on_round_numbers() {
        assert_eq!(nice_ceiling(40.0), 50.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(180.0), 200.0);
    }
}
