//! A key's limits as the three ways of issuing one give them (the `keys`
//! command's flags, the admin API's JSON, the team page's form): one parser
//! for limits written as text, one set of defaults and one check, so that a
//! limit means the same thing whichever way it came in.

use serde::Deserialize;

use crate::store::{BudgetPeriod, KeyLimits, KeyUpdate};

/// Unfinished jobs a new key may have at once unless its issuer says
/// otherwise: a leaked key cannot start thousands of paid jobs at once.
pub const DEFAULT_MAX_UNFINISHED: u32 = 10;

/// Words that lift a limit, wherever a limit is written as text.
const NO_LIMIT: [&str; 3] = ["unlimited", "none", "any"];

/// Why a key's limits were refused: what was wrong, and what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// A count (requests per minute, unfinished jobs) that is not one.
    #[error("{what} must be a whole number from 0 to 4294967295, or `unlimited` for no limit; not {text:?}")]
    NotACount {
        /// Which limit.
        what: &'static str,
        /// What was written.
        text: String,
    },
    /// A credit budget that is not a number of credits, 0 or more.
    #[error("the credit budget must be a number of credits, 0 or more, or `unlimited` for none; not {0:?}")]
    BadBudget(String),
    /// A budget in dollars that is not an exact amount.
    #[error("the budget in dollars: {0}")]
    BadUsd(String),
    /// A budget given both in credits and in dollars.
    #[error("give the budget in credits or in dollars, not both")]
    TwoBudgets,
    /// A budget period that is not one.
    #[error(
        "the budget period must be day, week or month, or `none` for one budget for the key's life; not {0:?}"
    )]
    BadPeriod(String),
    /// An allowed-models entry that is not a model id or pattern.
    #[error("allowed models: {0}; list model ids or patterns such as google/*, or `any` for every model")]
    BadModel(String),
    /// An allowed-models list with nothing in it, which would allow no model.
    #[error(
        "allowed models: none given, which would allow no model; list model ids or patterns such as \
         google/*, or `any` for every model"
    )]
    NoModels,
    /// A webhook format that is not one; says which there are.
    #[error("{0}")]
    BadWebhookFormat(String),
    /// A budget too large to be meant.
    #[error("the credit budget must be at most 1e15 credits ($500,000,000); not {0}")]
    BudgetTooLarge(String),
}

/// The largest budget a key may have, in credits ($500,000,000): anything
/// larger is a typo, and would print as hundreds of digits.
pub const MAX_BUDGET: f64 = 1e15;

/// A key's limits written as text, as the `keys` command's flags and the
/// team page's form give them. `None`, or blank, is "not given": the
/// default for a new key ([`with_defaults`]), unchanged for an update.
#[derive(Debug, Clone, Copy, Default)]
pub struct LimitsText<'a> {
    /// Model ids or patterns, separated by commas or spaces, or `any`.
    pub models: Option<&'a str>,
    /// Requests per minute, or `unlimited`.
    pub rpm: Option<&'a str>,
    /// Unfinished jobs at once, or `unlimited`.
    pub max_unfinished: Option<&'a str>,
    /// Credits the key may spend, or `unlimited`.
    pub budget: Option<&'a str>,
    /// The budget in US dollars instead, converted exactly.
    pub budget_usd: Option<&'a str>,
    /// `day`, `week`, `month`, or `none`.
    pub budget_period: Option<&'a str>,
    /// A webhook URL, or `none` to remove the webhook. (The URL itself is
    /// checked where it is saved, against the server's webhook rules.)
    pub webhook_url: Option<&'a str>,
    /// The shape of the webhook's deliveries: `aimlvid` or `openai`.
    pub webhook_format: Option<&'a str>,
}

impl LimitsText<'_> {
    /// The change these texts ask for, checked ([`check_update`]).
    pub fn parse(&self) -> Result<KeyUpdate, LimitsError> {
        let credit_budget = match (given(self.budget), given(self.budget_usd)) {
            (Some(_), Some(_)) => return Err(LimitsError::TwoBudgets),
            (Some(text), None) => Some(lifted_or(text, credits)?),
            (None, Some(text)) => Some(lifted_or(text, usd)?),
            (None, None) => None,
        };
        let update = KeyUpdate {
            allowed_models: given(self.models).map(|text| models_of([text])).transpose()?,
            rpm: given(self.rpm).map(|t| lifted_or(t, |t| count("requests per minute", t))).transpose()?,
            max_unfinished: given(self.max_unfinished)
                .map(|t| lifted_or(t, |t| count("unfinished jobs", t)))
                .transpose()?,
            credit_budget,
            budget_period: given(self.budget_period).map(|t| lifted_or(t, period)).transpose()?,
            enabled: None,
            webhook_url: given(self.webhook_url).map(|url| (url != "none").then(|| url.to_owned())),
            webhook_format: given(self.webhook_format)
                .map(str::parse)
                .transpose()
                .map_err(LimitsError::BadWebhookFormat)?,
        };
        check_update(&update)?;
        Ok(update)
    }
}

/// Text that says something: trimmed, blank being "not given".
fn given(text: Option<&str>) -> Option<&str> {
    text.map(str::trim).filter(|t| !t.is_empty())
}

/// `None` for a word that lifts the limit, else the parsed value.
fn lifted_or<T>(
    text: &str,
    parse: impl FnOnce(&str) -> Result<T, LimitsError>,
) -> Result<Option<T>, LimitsError> {
    if NO_LIMIT.contains(&text) { Ok(None) } else { parse(text).map(Some) }
}

/// An allowlist as written, by text or as a JSON list: ids and patterns
/// separated by commas or white space (ids have neither), `any` alone for
/// every model. Nothing at all is refused: it would allow no model.
pub fn models_of<'a>(written: impl IntoIterator<Item = &'a str>) -> Result<Option<Vec<String>>, LimitsError> {
    let models: Vec<String> = written
        .into_iter()
        .flat_map(|item| item.split(|c: char| c == ',' || c.is_whitespace()))
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect();
    match models.as_slice() {
        [] => Err(LimitsError::NoModels),
        [only] if only == "any" => Ok(None),
        many if many.iter().any(|m| m == "any") => {
            Err(LimitsError::BadModel("`any` stands alone, not beside other models".into()))
        }
        _ => Ok(Some(models)),
    }
}

/// A budget as given: refused if negative, not a number, or past [`MAX_BUDGET`].
fn budget(credits: f64) -> Result<f64, LimitsError> {
    if !budget_ok(credits) {
        return Err(LimitsError::BadBudget(credits.to_string()));
    }
    if credits > MAX_BUDGET {
        return Err(LimitsError::BudgetTooLarge(format!("{credits:e}")));
    }
    // `+ 0.0`: -0.0 is stored and shown as 0.
    Ok(credits + 0.0)
}

/// A change to a key as every front gives it, made the same whichever way
/// it came in: its allowlist read as [`models_of`] reads one (so `["any"]`
/// in JSON is every model, as `any` is on the command line), its budget
/// checked. Every way of issuing or changing a key goes through this.
pub fn normalize(mut update: KeyUpdate) -> Result<KeyUpdate, LimitsError> {
    if let Some(Some(list)) = &update.allowed_models {
        update.allowed_models = Some(models_of(list.iter().map(String::as_str))?);
    }
    if let Some(Some(credits)) = update.credit_budget {
        update.credit_budget = Some(Some(budget(credits)?));
    }
    check_update(&update)?;
    Ok(update)
}

fn count(what: &'static str, text: &str) -> Result<u32, LimitsError> {
    text.parse().map_err(|_| LimitsError::NotACount { what, text: text.to_owned() })
}

fn credits(text: &str) -> Result<f64, LimitsError> {
    budget(text.parse::<f64>().map_err(|_| LimitsError::BadBudget(text.to_owned()))?)
}

/// Dollars, exactly, as the credits they are.
fn usd(text: &str) -> Result<f64, LimitsError> {
    let credits = aimlvid::Credits::parse_usd(text).map_err(|e| LimitsError::BadUsd(e.to_string()))?;
    // The error quotes what was written, not the credits it came to.
    budget(credits.get() as f64).map_err(|e| match e {
        LimitsError::BadBudget(_) => LimitsError::BadBudget(text.to_owned()),
        LimitsError::BudgetTooLarge(_) => LimitsError::BudgetTooLarge(text.to_owned()),
        other => other,
    })
}

fn period(text: &str) -> Result<BudgetPeriod, LimitsError> {
    text.parse().map_err(|_| LimitsError::BadPeriod(text.to_owned()))
}

fn budget_ok(budget: f64) -> bool {
    budget.is_finite() && budget >= 0.0
}

/// A new key's limits: the defaults every way of issuing a key shares (a
/// finite [`DEFAULT_MAX_UNFINISHED`], no other limit), with what was asked.
pub fn with_defaults(asked: &KeyUpdate) -> KeyLimits {
    let mut limits = KeyLimits { max_unfinished: Some(DEFAULT_MAX_UNFINISHED), ..KeyLimits::default() };
    asked.apply(&mut limits, &mut true);
    limits
}

/// Every limit `update` leaves as it is, lifted instead: for a form that
/// shows all of a key's limits, where a field left blank means no limit.
pub fn lift_unset(update: KeyUpdate) -> KeyUpdate {
    KeyUpdate {
        allowed_models: update.allowed_models.or(Some(None)),
        rpm: update.rpm.or(Some(None)),
        max_unfinished: update.max_unfinished.or(Some(None)),
        credit_budget: update.credit_budget.or(Some(None)),
        budget_period: update.budget_period.or(Some(None)),
        ..update
    }
}

/// Refuses limits no way of issuing a key accepts: an empty model pattern,
/// a budget that is negative or not a number. Typed limits (the admin API's
/// JSON, a caller's [`KeyLimits`]) come here as text does.
pub fn check(limits: &KeyLimits) -> Result<(), LimitsError> {
    for pattern in limits.allowed_models.iter().flatten() {
        aimlvid::catalog::ModelPattern::new(pattern.as_str())
            .map_err(|e| LimitsError::BadModel(format!("{pattern:?}: {e}")))?;
    }
    match limits.credit_budget {
        Some(budget) if !budget_ok(budget) => Err(LimitsError::BadBudget(budget.to_string())),
        _ => Ok(()),
    }
}

/// [`check`] for the limits a change sets.
pub fn check_update(update: &KeyUpdate) -> Result<(), LimitsError> {
    let mut set = KeyLimits::default();
    update.apply(&mut set, &mut true);
    check(&set)
}

/// A limit given in JSON as a number, or as the word `unlimited`.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub(crate) enum NumberOrUnlimited {
    Number(u32),
    Word(Unlimited),
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Unlimited {
    Unlimited,
}

impl NumberOrUnlimited {
    /// The limit: `None` is no limit.
    pub(crate) fn limit(self) -> Option<u32> {
        match self {
            NumberOrUnlimited::Number(n) => Some(n),
            NumberOrUnlimited::Word(Unlimited::Unlimited) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_allowlist_reads_alike_as_text_and_as_a_list() {
        let every = Ok(None);
        assert_eq!(models_of(["any"]), every);
        assert_eq!(models_of([" any "]), every);
        assert_eq!(models_of(["google/*, kling/*"]), models_of(["google/*", " kling/* "]));
        assert_eq!(models_of(["a,,b"]), Ok(Some(vec!["a".into(), "b".into()])));
        for nothing in [&[][..], &[","], &[" , "], &[""]] {
            assert_eq!(models_of(nothing.iter().copied()), Err(LimitsError::NoModels), "{nothing:?}");
        }
        assert!(matches!(models_of(["any", "google/*"]), Err(LimitsError::BadModel(_))));
        let text = LimitsText { models: Some(","), ..LimitsText::default() };
        assert_eq!(text.parse(), Err(LimitsError::NoModels), "the command and the page refuse it too");
    }

    #[test]
    fn a_budget_is_refused_past_the_largest_and_never_kept_as_minus_zero() {
        let update = |credits: f64| KeyUpdate { credit_budget: Some(Some(credits)), ..KeyUpdate::default() };
        assert!(matches!(normalize(update(1e300)), Err(LimitsError::BudgetTooLarge(_))));
        assert!(matches!(normalize(update(f64::NAN)), Err(LimitsError::BadBudget(_))));
        let zero = normalize(update(-0.0)).unwrap().credit_budget.flatten().unwrap();
        assert!(zero.is_sign_positive());
        let text = LimitsText { budget: Some("1e300"), ..LimitsText::default() };
        assert!(matches!(text.parse(), Err(LimitsError::BudgetTooLarge(_))));
    }

    fn parse(text: LimitsText<'_>) -> Result<KeyUpdate, LimitsError> {
        text.parse()
    }

    #[test]
    fn blank_is_not_given_and_a_new_key_gets_the_defaults() {
        let blank = LimitsText {
            models: Some(" "),
            rpm: Some(""),
            max_unfinished: Some(""),
            budget: Some(""),
            budget_period: Some(""),
            webhook_url: Some(""),
            webhook_format: Some(" "),
            ..LimitsText::default()
        };
        let asked = parse(blank).unwrap();
        assert_eq!(asked, KeyUpdate::default());
        let limits = with_defaults(&asked);
        assert_eq!(
            limits,
            KeyLimits { max_unfinished: Some(DEFAULT_MAX_UNFINISHED), ..KeyLimits::default() }
        );
    }

    #[test]
    fn every_limit_reads_numbers_and_the_words_that_lift_it() {
        let asked = parse(LimitsText {
            models: Some("google/*, kling/v2\nalibaba/wan"),
            rpm: Some("60"),
            max_unfinished: Some("unlimited"),
            budget: Some("2.5e6"),
            budget_period: Some("monthly"),
            webhook_url: Some(" https://hooks.example.com/a "),
            ..LimitsText::default()
        })
        .unwrap();
        assert_eq!(
            asked.allowed_models,
            Some(Some(vec!["google/*".into(), "kling/v2".into(), "alibaba/wan".into()]))
        );
        assert_eq!(asked.rpm, Some(Some(60)));
        assert_eq!(asked.max_unfinished, Some(None));
        assert_eq!(asked.credit_budget, Some(Some(2_500_000.0)));
        assert_eq!(asked.budget_period, Some(Some(BudgetPeriod::Month)));
        assert_eq!(asked.webhook_url, Some(Some("https://hooks.example.com/a".into())));
        assert_eq!(with_defaults(&asked).max_unfinished, None, "`unlimited` overrides the default");

        let lifted = parse(LimitsText {
            models: Some("any"),
            rpm: Some("none"),
            budget: Some("unlimited"),
            budget_period: Some("none"),
            webhook_url: Some("none"),
            ..LimitsText::default()
        })
        .unwrap();
        assert_eq!(lifted.allowed_models, Some(None));
        assert_eq!(
            (lifted.rpm, lifted.credit_budget, lifted.budget_period),
            (Some(None), Some(None), Some(None))
        );
        assert_eq!(lifted.webhook_url, Some(None));
    }

    #[test]
    fn dollars_are_exact_credits_and_not_beside_credits() {
        let asked = parse(LimitsText { budget_usd: Some("25"), ..LimitsText::default() }).unwrap();
        assert_eq!(asked.credit_budget, Some(Some(50_000_000.0)));
        let finer = parse(LimitsText { budget_usd: Some("0.0000001"), ..LimitsText::default() });
        assert!(matches!(finer, Err(LimitsError::BadUsd(_))), "{finer:?}");
        let both = LimitsText { budget: Some("5"), budget_usd: Some("1"), ..LimitsText::default() };
        assert_eq!(parse(both), Err(LimitsError::TwoBudgets));
        let negative = parse(LimitsText { budget_usd: Some("-1"), ..LimitsText::default() });
        assert_eq!(negative, Err(LimitsError::BadBudget("-1".into())));
    }

    #[test]
    fn mistakes_say_what_was_wrong_and_what_to_write() {
        let rpm = parse(LimitsText { rpm: Some("fast"), ..LimitsText::default() }).unwrap_err();
        assert_eq!(rpm, LimitsError::NotACount { what: "requests per minute", text: "fast".into() });
        assert!(rpm.to_string().contains("or `unlimited` for no limit"), "{rpm}");
        let negative = parse(LimitsText { max_unfinished: Some("-1"), ..LimitsText::default() }).unwrap_err();
        assert!(negative.to_string().starts_with("unfinished jobs must be a whole number"), "{negative}");
        for budget in ["-5", "NaN", "inf", "lots"] {
            let refused = parse(LimitsText { budget: Some(budget), ..LimitsText::default() });
            assert_eq!(refused, Err(LimitsError::BadBudget(budget.into())));
        }
        let period =
            parse(LimitsText { budget_period: Some("fortnight"), ..LimitsText::default() }).unwrap_err();
        assert!(period.to_string().contains("day, week or month"), "{period}");
        let format = parse(LimitsText { webhook_format: Some("svix"), ..LimitsText::default() }).unwrap_err();
        assert_eq!(format.to_string(), "the webhook format must be aimlvid or openai, not \"svix\"");
        let openai = parse(LimitsText { webhook_format: Some(" openai "), ..LimitsText::default() }).unwrap();
        assert_eq!(openai.webhook_format, Some(crate::store::WebhookFormat::Openai));
    }

    #[test]
    fn typed_limits_pass_the_same_check() {
        assert_eq!(check(&KeyLimits::default()), Ok(()));
        let empty = KeyLimits { allowed_models: Some(vec![" ".into()]), ..KeyLimits::default() };
        let refused = check(&empty).unwrap_err();
        assert!(matches!(refused, LimitsError::BadModel(_)) && refused.to_string().contains("google/*"));
        let negative = KeyUpdate { credit_budget: Some(Some(-1.0)), ..KeyUpdate::default() };
        assert_eq!(check_update(&negative), Err(LimitsError::BadBudget("-1".into())));
        assert_eq!(check_update(&KeyUpdate { credit_budget: Some(None), ..KeyUpdate::default() }), Ok(()));
    }

    #[test]
    fn a_whole_form_lifts_what_it_leaves_blank() {
        let update =
            lift_unset(KeyUpdate { rpm: Some(Some(5)), enabled: Some(false), ..KeyUpdate::default() });
        assert_eq!(update.rpm, Some(Some(5)));
        assert_eq!(update.max_unfinished, Some(None));
        assert_eq!(update.allowed_models, Some(None));
        assert_eq!(update.enabled, Some(false));
        assert_eq!(update.webhook_url, None, "the webhook is not one of the limits");
    }

    #[test]
    fn json_takes_a_number_or_unlimited() {
        let read = |json: &str| serde_json::from_str::<NumberOrUnlimited>(json).map(NumberOrUnlimited::limit);
        assert_eq!(read("3").unwrap(), Some(3));
        assert_eq!(read(r#""unlimited""#).unwrap(), None);
        assert!(read(r#""lots""#).is_err());
    }
}
