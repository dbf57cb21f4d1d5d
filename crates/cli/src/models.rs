//! `aimlvid models`: the catalog of video models, and one model's
//! parameters and price.

use std::fmt::Write as _;

use aimlvid::catalog::{self, Family, ModelSpec, Parameter};
use serde_json::{Value, json};

use crate::exit::{self, Failure};
use crate::jobs::App;

/// `aimlvid models [SEARCH] [--family F]`.
pub(crate) fn list(app: &App<'_>, search: Option<&str>, family: Option<Family>) -> anyhow::Result<u8> {
    let models = catalog::search(search.unwrap_or_default(), family);
    let listed: Vec<Value> = models.iter().map(|m| summary(m)).collect();
    let mut table = String::new();
    let width = models.iter().map(|m| m.id.len()).max().unwrap_or(0);
    for model in &models {
        let _ = writeln!(table, "{:width$}  {:15}  {}", model.id, model.family.as_str(), inputs(model));
    }
    let note = match models.len() {
        0 => "no model matches; `aimlvid models` lists them all".to_owned(),
        n => format!("{n} models · `aimlvid models show ID` for one's parameters and price"),
    };
    app.report.result(
        json!({"event": "result", "ok": true, "models": listed}),
        Some(note),
        (!table.is_empty()).then(|| table.trim_end().to_owned()),
    )?;
    Ok(exit::OK)
}

/// `aimlvid models --check`: the built-in catalog against the API's live
/// one, read again (conditionally) whatever the cache's age.
pub(crate) async fn check(app: &App<'_>) -> anyhow::Result<u8> {
    let client = app.client(None)?;
    let read = crate::prices::live_catalogue(&client, &app.journal, true).await;
    let Some(live) = read.now else {
        return Err(Failure::new(
            exit::NETWORK,
            "the API's model catalogue (GET /v1/models) could not be read; try again later",
        )
        .into());
    };
    let diff = Diff::of(&live, read.before.as_ref());
    let mut text = String::new();
    let _ = writeln!(
        text,
        "the API lists {} video models; this build knows {}{}",
        live.models.len(),
        catalog::models().count(),
        if read.read_now { "" } else { " (the API could not be reached: its catalogue as last read)" }
    );
    if !diff.added.is_empty() {
        let _ = writeln!(text, "\nlisted by the API, not in this build (usable; checked by the API only):");
        for id in &diff.added {
            let _ = writeln!(text, "  {id}");
        }
    }
    if !diff.dropped.is_empty() {
        let _ = writeln!(text, "\nin this build, no longer listed by the API (creates are refused):");
        for (id, nearest) in &diff.dropped {
            let _ = writeln!(text, "  {id}  (nearest: {})", nearest.join(", "));
        }
    }
    match &read.before {
        None => {
            let _ = writeln!(text, "\nprices: first read, nothing earlier to compare with");
        }
        Some(_) if diff.repriced.is_empty() => {
            let _ = writeln!(text, "\nprices: unchanged since the last read");
        }
        Some(_) => {
            let _ = writeln!(text, "\nprices changed since the last read:");
            for (id, before, after) in &diff.repriced {
                let _ = writeln!(text, "  {id}  {} → {}", usd(*before), usd(*after));
            }
        }
    }
    let summary = match (diff.added.len(), diff.dropped.len()) {
        (0, 0) => "this build's catalog matches the API's".to_owned(),
        (added, dropped) => format!("{added} model(s) new in the API, {dropped} no longer listed"),
    };
    app.report.result(
        json!({
            "event": "result",
            "ok": true,
            "listed": live.models.len(),
            "added": diff.added,
            "dropped": diff.dropped.iter().map(|(id, nearest)| json!({"id": id, "nearest": nearest})).collect::<Vec<_>>(),
            "repriced": diff.repriced.iter().map(|(id, before, after)| json!({"id": id, "before_usd": before, "after_usd": after})).collect::<Vec<_>>(),
            "compared_prices": read.before.is_some(),
        }),
        Some(summary),
        Some(text.trim_end().to_owned()),
    )?;
    Ok(exit::OK)
}

/// How the live catalogue differs from the build's, and its prices from
/// the last read's.
#[derive(Debug, Default, PartialEq)]
struct Diff {
    /// Listed ids the build does not know.
    added: Vec<String>,
    /// Built-in ids not listed, each with the nearest listed ones.
    dropped: Vec<(String, Vec<String>)>,
    /// Listed ids whose smallest request's price moved: before, after (USD).
    repriced: Vec<(String, Option<f64>, Option<f64>)>,
}

impl Diff {
    fn of(live: &aimlvid::LiveCatalogue, before: Option<&aimlvid::LiveCatalogue>) -> Diff {
        let aimlvid::CatalogueChanges { added, dropped, .. } = live.changes_from_build();
        // The price of a model's smallest request, as `models show` quotes it.
        let price = |listing: &aimlvid::ModelListing| {
            let example = catalog::model(&listing.id).map(ModelSpec::example).unwrap_or_else(|| json!({}));
            listing.pricing.as_ref().and_then(|p| p.quote_usd(&example))
        };
        let repriced = before
            .map(|before| {
                live.models
                    .iter()
                    .filter_map(|now| {
                        let then = before.get(&now.id)?;
                        (then.pricing != now.pricing).then(|| (now.id.clone(), price(then), price(now)))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Diff { added, dropped, repriced }
    }
}

/// A price as the check shows it.
fn usd(price: Option<f64>) -> String {
    match price {
        Some(usd) => format!("${usd:.4}"),
        None => "not quotable".to_owned(),
    }
}

/// `aimlvid models show ID`.
pub(crate) async fn show(app: &App<'_>, id: &str) -> anyhow::Result<u8> {
    let model = catalog::model(id).ok_or_else(|| {
        let hint = catalog::suggest(id).map(|s| format!(" (did you mean {s}?)")).unwrap_or_default();
        Failure::new(exit::USAGE, format!("unknown model {id:?}{hint}; `aimlvid models` lists them"))
    })?;
    let price = price_of(app, model).await;
    let mut text = format!("{}  ({})\n\n", model.id, model.family);
    let rows: Vec<[String; 5]> = model.parameters.iter().map(row).collect();
    let header = ["PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "ALLOWED"].map(str::to_owned);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for r in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, w)) in r.iter().zip(widths).enumerate() {
            if i + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:w$}  ");
            }
        }
        let _ = writeln!(text, "{}", line.trim_end());
    }
    let price_line = match &price {
        Some(credits) => {
            format!("price: {credits:.0} credits for the smallest request (by the API's catalogue)")
        }
        None => "price: unknown (the API's catalogue could not be read)".to_owned(),
    };
    let (durations, source) = match app.client(None) {
        Ok(client) => crate::timing::durations_of(&client, &app.journal, &model.id).await,
        Err(_) => (Some(aimlvid::JobDurations::typical_of(model.family)), crate::timing::Source::Family),
    };
    let duration_line = match durations {
        Some(d) => format!(
            "duration: p50 {}, p90 {} ({})",
            crate::report::short_duration(d.p50),
            crate::report::short_duration(d.p90),
            match source {
                crate::timing::Source::Metrics => "the API's recent metrics",
                crate::timing::Source::Journal => "jobs in the journal",
                _ => "a guess for its family; no recent metrics",
            }
        ),
        None => "duration: unknown".to_owned(),
    };
    let _ = write!(text, "\n{price_line}\n{duration_line}");
    let mut result = summary(model);
    result["event"] = json!("result");
    result["ok"] = json!(true);
    result["parameters"] = model.parameters.iter().map(parameter_json).collect();
    result["price_credits"] = json!(price);
    result["duration_p50_secs"] = json!(durations.map(|d| d.p50.as_secs_f64()));
    result["duration_p90_secs"] = json!(durations.map(|d| d.p90.as_secs_f64()));
    app.report.result(result, None, Some(text))?;
    Ok(exit::OK)
}

/// What the API's catalogue says the model's smallest request costs; none
/// when it cannot be read (no key needed, but it may be unreachable).
async fn price_of(app: &App<'_>, model: &ModelSpec) -> Option<f64> {
    let client = app.client(None).ok()?;
    crate::prices::pricing_of(&client, &app.journal, &model.id).await?.quote_credits(&model.example())
}

fn summary(model: &ModelSpec) -> Value {
    json!({
        "id": model.id,
        "family": model.family.as_str(),
        "media": model.media_parameters().map(|p| json!({"name": p.name, "kind": p.media.map(|k| k.as_str()), "list": p.is_list(), "required": p.required})).collect::<Vec<_>>(),
    })
}

/// The media a model takes, required ones marked: `image_url* last_image_url`.
fn inputs(model: &ModelSpec) -> String {
    let media: Vec<String> = model
        .media_parameters()
        .map(|p| format!("{}{}", p.name, if p.required { "*" } else { "" }))
        .collect();
    if media.is_empty() { "text only".to_owned() } else { media.join(" ") }
}

fn row(p: &Parameter) -> [String; 5] {
    let ty = match p.media {
        Some(kind) if p.is_list() => format!("{kind} list"),
        Some(kind) => kind.to_string(),
        None => p.ty.to_string(),
    };
    let allowed = if !p.allowed.is_empty() {
        p.allowed.iter().map(plain).collect::<Vec<_>>().join(", ")
    } else {
        match (p.minimum, p.maximum) {
            (Some(min), Some(max)) => format!("{min} to {max}"),
            (Some(min), None) => format!("at least {min}"),
            (None, Some(max)) => format!("at most {max}"),
            (None, None) => String::new(),
        }
    };
    [
        p.name.clone(),
        ty,
        if p.required { "yes".into() } else { String::new() },
        p.default.as_ref().map(plain).unwrap_or_default(),
        allowed,
    ]
}

fn parameter_json(p: &Parameter) -> Value {
    json!({
        "name": p.name,
        "type": p.ty.as_str(),
        "required": p.required,
        "default": p.default,
        "allowed": p.allowed,
        "minimum": p.minimum,
        "maximum": p.maximum,
        "media": p.media.map(|k| k.as_str()),
    })
}

/// A value as a table shows it: strings without quotes.
fn plain(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue(prices: &[(&str, f64)]) -> aimlvid::LiveCatalogue {
        let models = prices
            .iter()
            .map(|(id, usd)| {
                serde_json::from_value(json!({
                    "id": id,
                    "pricing": {"kind": "fixed", "currency": "USD", "units": [{"price": usd, "per": "generation"}]},
                }))
                .unwrap()
            })
            .collect();
        aimlvid::LiveCatalogue::new(models, None)
    }

    #[test]
    fn a_price_change_since_the_last_read_is_listed_with_both_prices() {
        let ids: Vec<&str> = catalog::models().map(|m| m.id.as_str()).collect();
        let before = catalogue(&ids.iter().map(|id| (*id, 0.06)).collect::<Vec<_>>());
        let mut now_prices: Vec<(&str, f64)> = ids.iter().skip(1).map(|id| (*id, 0.06)).collect();
        now_prices[0].1 = 0.08;
        now_prices.push(("acme/lumen-1", 0.1));
        let diff = Diff::of(&catalogue(&now_prices), Some(&before));
        assert_eq!(diff.added, ["acme/lumen-1"]);
        assert_eq!(diff.dropped.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), [ids[0]]);
        assert_eq!(diff.repriced, [(ids[1].to_owned(), Some(0.06), Some(0.08))]);
        assert_eq!(Diff::of(&before, None).repriced, [], "nothing earlier to compare with");
    }
}
