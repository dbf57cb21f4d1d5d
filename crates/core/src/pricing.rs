//! The API's model catalogue (`GET /v1/models`) and what its prices say a
//! request will cost, before it is sent.

use serde::Deserialize;
use serde_json::{Map, Value};

/// Credits per US dollar: the API bills in credits and reports both
/// (`x-aimlapi-credits-used`, `x-aimlapi-usd-spent`); its documented
/// figures put 2,480 credits at $0.00124.
pub const CREDITS_PER_USD: f64 = 2_000_000.0;

/// One model of the catalogue. Serialises back to the catalogue's shape.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct ModelListing {
    /// Canonical id, such as `google/veo3-1-fast-extend-video`.
    pub id: String,
    /// Other names it can still be requested under.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// The endpoint type it is served through.
    #[serde(rename = "type", default)]
    pub endpoint_type: String,
    /// Name, developer, links: which keys are present varies by model.
    #[serde(default)]
    pub info: Map<String, Value>,
    /// Free-form tags, such as `playground:video`.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Its price, when asked for ([`ModelQuery::with_pricing`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
}

impl ModelListing {
    /// Whether the model is requested as `name`: its id or one of its aliases.
    pub fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|alias| alias == name)
    }
}

/// The API's video models as one read of `GET /v1/models` listed them (with
/// their prices), and the ETag that read came with, so that the next read
/// can be a conditional one ([`crate::Client::live_catalogue`]). Serialises,
/// so that it can be cached.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct LiveCatalogue {
    /// The answer's ETag, if it had one.
    #[serde(default)]
    pub etag: Option<String>,
    /// Every video model listed, in the API's order.
    pub models: Vec<ModelListing>,
}

impl LiveCatalogue {
    /// A catalogue of these listings, read with this ETag.
    pub fn new(models: Vec<ModelListing>, etag: Option<String>) -> Self {
        LiveCatalogue { etag, models }
    }

    /// The model requested as `name`, by its id or an alias.
    pub fn get(&self, name: &str) -> Option<&ModelListing> {
        self.models.iter().find(|m| m.id == name).or_else(|| self.models.iter().find(|m| m.answers_to(name)))
    }

    /// Up to `n` listed ids most like `name`, the likest first: what to
    /// offer instead of a model the API no longer lists.
    pub fn nearest(&self, name: &str, n: usize) -> Vec<String> {
        let name = name.to_lowercase();
        // The developer's other models come first, then the likest names.
        let developer = name.split_once('/').map(|(d, _)| d.to_owned());
        let mut scored: Vec<(bool, f64, &str)> = self
            .models
            .iter()
            .map(|m| {
                let id = m.id.to_lowercase();
                let same = developer.as_ref().is_some_and(|d| id.starts_with(&format!("{d}/")));
                (same, strsim::jaro_winkler(&name, &id), m.id.as_str())
            })
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.total_cmp(&a.1)));
        scored.into_iter().take(n).map(|(_, _, id)| id.to_owned()).collect()
    }

    /// How this catalogue's models differ from the ones this build knows
    /// ([`crate::catalog::models`]).
    pub fn changes_from_build(&self) -> CatalogueChanges {
        let added = self
            .models
            .iter()
            .filter(|m| crate::catalog::model(&m.id).is_none())
            .map(|m| m.id.clone())
            .collect();
        let dropped = crate::catalog::models()
            .filter(|m| self.get(&m.id).is_none())
            .map(|m| (m.id.clone(), self.nearest(&m.id, 3)))
            .collect();
        CatalogueChanges { listed: self.models.len(), added, dropped }
    }
}

/// How the API's live catalogue differs from the build's
/// ([`LiveCatalogue::changes_from_build`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct CatalogueChanges {
    /// Video models the API lists.
    pub listed: usize,
    /// Ids the API lists that this build does not know: usable, checked by
    /// the API only (or by the schema its catalogue links).
    pub added: Vec<String>,
    /// Ids this build knows that the API no longer lists, each with up to
    /// three listed ids most like it: a create for one is refused.
    pub dropped: Vec<(String, Vec<String>)>,
}

impl CatalogueChanges {
    /// Whether the API lists exactly the models this build knows.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.dropped.is_empty()
    }
}

/// What a model costs. Read [`Pricing::quote_usd`] rather than the parts.
/// Serialises back to the catalogue's own shape, so it can be cached.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum Pricing {
    /// One rate per unit (per generation, per second of video, …).
    Fixed {
        /// Usually `USD`.
        #[serde(default)]
        currency: String,
        /// The rates; a request costs their sum.
        #[serde(default)]
        units: Vec<Rate>,
    },
    /// A rate per combination of request parameters.
    Variants {
        /// Usually `USD`.
        #[serde(default)]
        currency: String,
        /// The request parameters the rate depends on.
        #[serde(default)]
        dimensions: Vec<String>,
        /// One rate per combination: each object holds the dimensions'
        /// values beside `price` and `per`.
        #[serde(default)]
        variants: Vec<Map<String, Value>>,
    },
    /// Cannot be quoted before the request is made.
    Variable {
        /// Usually `USD`.
        #[serde(default)]
        currency: String,
    },
    /// A kind this version does not know.
    #[serde(other)]
    Unknown,
}

/// One rate: `price` for each `per`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[non_exhaustive]
pub struct Rate {
    /// In the pricing's currency.
    pub price: f64,
    /// The unit: `generation`, `request`, `video`, `second`, ….
    #[serde(default)]
    pub per: String,
}

impl Rate {
    /// The rate applied to one request with `params`, if its unit is one
    /// this crate can count: a whole request (`generation`, `request`,
    /// `video`, `job`) or a second of video (the request's `duration`).
    fn apply(&self, params: &Value) -> Option<f64> {
        let per = self.per.to_ascii_lowercase();
        match per.trim_end_matches('s') {
            "generation" | "request" | "video" | "job" | "call" | "" => Some(self.price),
            "second" => number(params.get("duration")?).map(|seconds| self.price * seconds),
            _ => None,
        }
    }
}

/// A JSON number, or a string holding one (the API's documents mix them).
fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().trim_end_matches('s').parse().ok(),
        _ => None,
    }
}

/// Whether a variant's value and a request's agree, `5` and `"5"` alike.
fn same(variant: &Value, asked: &Value) -> bool {
    variant == asked || matches!((number(variant), number(asked)), (Some(a), Some(b)) if a == b)
}

impl Pricing {
    /// What one request with `params` (the create body) is expected to
    /// cost, in the pricing's currency, or `None` where it cannot be said
    /// (`variable`, or units this crate cannot count). For `variants`, the
    /// variant the request's parameters pick, or the dearest one when they
    /// pick none: a budget should err high.
    pub fn quote_usd(&self, params: &Value) -> Option<f64> {
        match self {
            Pricing::Fixed { units, .. } if !units.is_empty() => {
                units.iter().map(|rate| rate.apply(params)).sum::<Option<f64>>()
            }
            Pricing::Variants { dimensions, variants, .. } => {
                let rate = |variant: &Map<String, Value>| {
                    let rate = Rate {
                        price: number(variant.get("price")?)?,
                        per: variant.get("per").and_then(Value::as_str).unwrap_or("").to_owned(),
                    };
                    rate.apply(params)
                };
                let picked = variants.iter().find(|variant| {
                    dimensions.iter().all(|dimension| match (variant.get(dimension), params.get(dimension)) {
                        (Some(wanted), Some(asked)) => same(wanted, asked),
                        _ => false,
                    })
                });
                match picked {
                    Some(variant) => rate(variant),
                    None => variants.iter().filter_map(rate).reduce(f64::max),
                }
            }
            _ => None,
        }
    }

    /// [`Pricing::quote_usd`] in credits ([`CREDITS_PER_USD`]), for a
    /// price in US dollars.
    pub fn quote_credits(&self, params: &Value) -> Option<f64> {
        let currency = match self {
            Pricing::Fixed { currency, .. } | Pricing::Variants { currency, .. } => currency,
            _ => return None,
        };
        if !(currency.is_empty() || currency.eq_ignore_ascii_case("USD")) {
            return None;
        }
        self.quote_usd(params).map(|usd| usd * CREDITS_PER_USD)
    }
}

/// Which models to list, and what to say of each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelQuery {
    /// Attach each model's [`Pricing`].
    pub pricing: bool,
    /// Only these ids (or aliases); empty for all.
    pub ids: Vec<String>,
    /// Only models producing this modality, such as `video`.
    pub output_modality: Option<String>,
}

impl ModelQuery {
    /// The video models.
    pub fn video() -> Self {
        ModelQuery { output_modality: Some("video".into()), ..ModelQuery::default() }
    }

    /// With each model's price.
    pub fn with_pricing(mut self) -> Self {
        self.pricing = true;
        self
    }

    /// Only `id` (and any other ids added).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.ids.push(id.into());
        self
    }

    pub(crate) fn to_query(&self) -> Vec<(&'static str, String)> {
        let mut query = Vec::new();
        if self.pricing {
            query.push(("include", "pricing".to_owned()));
        }
        if !self.ids.is_empty() {
            query.push(("id", self.ids.join(",")));
        }
        if let Some(modality) = &self.output_modality {
            query.push(("output_modalities", modality.clone()));
        }
        query
    }
}

/// The catalogue's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct ModelList {
    pub(crate) data: Vec<ModelListing>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pricing(value: Value) -> Pricing {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn fixed_prices_count_whole_requests_and_seconds() {
        let per_job = pricing(
            json!({"kind": "fixed", "currency": "USD", "units": [{"price": 0.06, "per": "generation"}]}),
        );
        assert_eq!(per_job.quote_usd(&json!({})), Some(0.06));
        assert_eq!(per_job.quote_credits(&json!({})), Some(120_000.0));
        let per_second =
            pricing(json!({"kind": "fixed", "currency": "USD", "units": [{"price": 0.1, "per": "second"}]}));
        assert_eq!(per_second.quote_usd(&json!({"duration": "8"})), Some(0.8));
        assert_eq!(per_second.quote_usd(&json!({})), None, "no duration, no quote");
        let odd = pricing(json!({"kind": "fixed", "units": [{"price": 1.0, "per": "megapixel"}]}));
        assert_eq!(odd.quote_usd(&json!({})), None);
    }

    #[test]
    fn variants_are_picked_by_the_request_or_the_dearest_is_quoted() {
        let by_resolution = pricing(json!({
            "kind": "variants", "currency": "USD", "dimensions": ["resolution", "duration"],
            "variants": [
                {"resolution": "720p", "duration": 5, "price": 0.2, "per": "generation"},
                {"resolution": "1080p", "duration": 5, "price": 0.5, "per": "generation"},
            ],
        }));
        assert_eq!(by_resolution.quote_usd(&json!({"resolution": "720p", "duration": "5"})), Some(0.2));
        assert_eq!(
            by_resolution.quote_usd(&json!({"resolution": "720p"})),
            Some(0.5),
            "unpicked: the dearest"
        );
    }

    #[test]
    fn variable_and_unknown_kinds_cannot_be_quoted() {
        assert_eq!(pricing(json!({"kind": "variable", "currency": "USD"})).quote_usd(&json!({})), None);
        assert_eq!(pricing(json!({"kind": "per-token"})), Pricing::Unknown);
        let euros =
            pricing(json!({"kind": "fixed", "currency": "EUR", "units": [{"price": 1.0, "per": "request"}]}));
        assert_eq!(euros.quote_credits(&json!({})), None, "credits are quoted from dollars only");
    }
}
