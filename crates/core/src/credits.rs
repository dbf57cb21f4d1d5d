//! Credits, the API's unit of account, and their exact value in US dollars.
//!
//! The API bills in dollars and counts in credits: 2,000,000 credits a
//! dollar (its documented 2,480 credits = $0.00124), so one credit is
//! $0.0000005 and every whole number of credits has an exact decimal
//! dollar value with at most seven places. [`Credits`] keeps the integer,
//! so sums never drift, and writes dollars from it exactly.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde::{Deserialize, Serialize};

/// Credits in a US dollar, as an integer ([`CREDITS_PER_USD`](crate::CREDITS_PER_USD)
/// as a float, for quotes).
const CREDITS_PER_DOLLAR: i64 = 2_000_000;

/// One credit is 5 ten-millionths of a dollar.
const TEN_MILLIONTHS_PER_CREDIT: i64 = 5;

/// A whole number of credits, negative for a difference or a refund.
///
/// ```
/// use aimlvid::Credits;
/// let charge = Credits::new(2480);
/// assert_eq!(charge.usd_decimal(), "0.00124");
/// assert_eq!(charge.to_string(), "2,480 credits ($0.00124)");
/// assert_eq!(Credits::parse_usd("25").unwrap(), Credits::new(50_000_000));
/// ```
///
/// It serialises as the bare integer, as the API writes credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Credits(i64);

impl Credits {
    /// None at all.
    pub const ZERO: Credits = Credits(0);

    /// `credits` credits.
    pub const fn new(credits: i64) -> Credits {
        Credits(credits)
    }

    /// The number of credits.
    pub const fn get(self) -> i64 {
        self.0
    }

    /// The nearest whole number of credits to `credits`, for figures the
    /// API writes as JSON numbers that may carry a fraction
    /// (`meta.usage.credits_used`); `None` for a value that is not finite
    /// or does not fit.
    pub fn from_f64_rounded(credits: f64) -> Option<Credits> {
        let rounded = credits.round();
        // i64::MAX is not exactly representable; stay strictly inside it.
        (rounded.is_finite() && rounded.abs() < 9.2e18).then_some(Credits(rounded as i64))
    }

    /// The value in US dollars as a float: the nearest `f64` to the exact
    /// quotient, which prints as the API prints it (`0.00124`).
    pub fn usd(self) -> f64 {
        self.0 as f64 / CREDITS_PER_DOLLAR as f64
    }

    /// The exact value in US dollars as a decimal, without a currency
    /// sign: at least two places, at most seven, no trailing zeros beyond
    /// two (`0.00124`, `25.00`, `-0.0000005`).
    pub fn usd_decimal(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let magnitude = self.0.unsigned_abs();
        let per_dollar = CREDITS_PER_DOLLAR as u64;
        let dollars = magnitude / per_dollar;
        let fraction = (magnitude % per_dollar) * TEN_MILLIONTHS_PER_CREDIT as u64;
        let mut digits = format!("{fraction:07}");
        while digits.len() > 2 && digits.ends_with('0') {
            digits.pop();
        }
        format!("{sign}{dollars}.{digits}")
    }

    /// Dollars written as a decimal (`25`, `0.00124`, `1e-3` is refused),
    /// converted exactly: an amount that is not a whole number of credits
    /// (a multiple of $0.0000005) is refused rather than rounded, and so is
    /// one too large to count.
    pub fn parse_usd(text: &str) -> Result<Credits, UsdParseError> {
        let invalid = || UsdParseError::NotADecimal(text.to_owned());
        let trimmed = text.trim();
        let trimmed = trimmed.strip_prefix('$').unwrap_or(trimmed);
        let (negative, digits) = match trimmed.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (whole.is_empty() && fraction.is_empty()) || !all_digits(whole) || !all_digits(fraction) {
            return Err(invalid());
        }
        let fraction = fraction.trim_end_matches('0');
        if fraction.len() > 7 {
            return Err(UsdParseError::NotWholeCredits(text.to_owned()));
        }
        let ten_millionths: i64 = format!("{fraction:0<7}").parse().map_err(|_| invalid())?;
        if ten_millionths % TEN_MILLIONTHS_PER_CREDIT != 0 {
            return Err(UsdParseError::NotWholeCredits(text.to_owned()));
        }
        let too_large = || UsdParseError::TooLarge(text.to_owned());
        let whole: i64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| too_large())? };
        let credits = whole
            .checked_mul(CREDITS_PER_DOLLAR)
            .and_then(|c| c.checked_add(ten_millionths / TEN_MILLIONTHS_PER_CREDIT))
            .ok_or_else(too_large)?;
        Ok(Credits(if negative { -credits } else { credits }))
    }
}

/// Why [`Credits::parse_usd`] refused an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UsdParseError {
    /// Not a plain decimal number of dollars.
    #[error("{0:?} is not an amount in dollars; write it as a decimal such as 25 or 0.50")]
    NotADecimal(String),
    /// Finer than a credit ($0.0000005).
    #[error("${0} is not a whole number of credits; the smallest step is $0.0000005 (one credit)")]
    NotWholeCredits(String),
    /// More credits than can be counted.
    #[error("${0} is too large an amount")]
    TooLarge(String),
}

/// `2,480 credits ($0.00124)`: both units, the credits grouped by
/// thousands and the dollars exact.
impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.0.unsigned_abs().to_string();
        let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, digit) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                grouped.push(',');
            }
            grouped.push(digit);
        }
        let sign = if self.0 < 0 { "-" } else { "" };
        let unit = if self.0.unsigned_abs() == 1 { "credit" } else { "credits" };
        let usd = self.usd_decimal();
        let usd = usd.strip_prefix('-').unwrap_or(&usd);
        write!(f, "{sign}{grouped} {unit} ({sign}${usd})")
    }
}

/// Reads an integer, or a JSON number with no fraction (`3120000.0`), so
/// that a writer that formats every number as a float is still read exactly.
impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Credits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number of credits")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Credits, E> {
                Ok(Credits(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Credits, E> {
                i64::try_from(v).map(Credits).map_err(|_| E::custom("too many credits"))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Credits, E> {
                if v.fract() != 0.0 {
                    return Err(E::custom(format!("{v} is not a whole number of credits")));
                }
                Credits::from_f64_rounded(v).ok_or_else(|| E::custom("too many credits"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl Add for Credits {
    type Output = Credits;
    fn add(self, other: Credits) -> Credits {
        Credits(self.0 + other.0)
    }
}

impl Sub for Credits {
    type Output = Credits;
    fn sub(self, other: Credits) -> Credits {
        Credits(self.0 - other.0)
    }
}

impl Neg for Credits {
    type Output = Credits;
    fn neg(self) -> Credits {
        Credits(-self.0)
    }
}

impl AddAssign for Credits {
    fn add_assign(&mut self, other: Credits) {
        self.0 += other.0;
    }
}

impl SubAssign for Credits {
    fn sub_assign(&mut self, other: Credits) {
        self.0 -= other.0;
    }
}

impl Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        iter.fold(Credits::ZERO, Add::add)
    }
}

impl<'a> Sum<&'a Credits> for Credits {
    fn sum<I: Iterator<Item = &'a Credits>>(iter: I) -> Credits {
        iter.copied().sum()
    }
}

impl From<i64> for Credits {
    fn from(credits: i64) -> Credits {
        Credits(credits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_rate_holds_exactly() {
        assert_eq!(Credits::new(2480).usd(), 0.00124);
        assert_eq!(Credits::new(2480).usd_decimal(), "0.00124");
        assert_eq!(Credits::new(3_120_000).usd_decimal(), "1.56");
        assert_eq!(Credits::new(120_000).usd(), 0.06);
        assert_eq!(Credits::new(CREDITS_PER_DOLLAR).usd(), 1.0);
        assert_eq!(CREDITS_PER_DOLLAR as f64, crate::CREDITS_PER_USD);
    }

    #[test]
    fn dollars_are_written_exactly_with_two_to_seven_places() {
        for (credits, usd) in [
            (0, "0.00"),
            (1, "0.0000005"),
            (2, "0.000001"),
            (20_000, "0.01"),
            (50_000_000, "25.00"),
            (50_000_001, "25.0000005"),
            (-2480, "-0.00124"),
            (i64::MAX, "4611686018427.3879035"),
            (i64::MIN, "-4611686018427.387904"),
        ] {
            assert_eq!(Credits::new(credits).usd_decimal(), usd, "{credits}");
        }
    }

    #[test]
    fn display_shows_both_units() {
        assert_eq!(Credits::new(2480).to_string(), "2,480 credits ($0.00124)");
        assert_eq!(Credits::new(1).to_string(), "1 credit ($0.0000005)");
        assert_eq!(Credits::new(123_456_789).to_string(), "123,456,789 credits ($61.7283945)");
        assert_eq!(Credits::new(-120_000).to_string(), "-120,000 credits (-$0.06)");
        assert_eq!(Credits::ZERO.to_string(), "0 credits ($0.00)");
    }

    #[test]
    fn dollars_parse_exactly_or_not_at_all() {
        for (text, credits) in [
            ("25", 50_000_000),
            ("$25.00", 50_000_000),
            ("0.00124", 2480),
            (".5", 1_000_000),
            ("3.", 6_000_000),
            ("0.0000005", 1),
            ("0.00000050000", 1),
            ("-1.56", -3_120_000),
            (" 1 ", 2_000_000),
        ] {
            assert_eq!(Credits::parse_usd(text), Ok(Credits::new(credits)), "{text}");
        }
        for text in ["", ".", "abc", "1e3", "1,000", "--1", "0x10", "1.2.3"] {
            assert!(matches!(Credits::parse_usd(text), Err(UsdParseError::NotADecimal(_))), "{text}");
        }
        for text in ["0.0000001", "0.00000051", "0.12345678"] {
            assert!(matches!(Credits::parse_usd(text), Err(UsdParseError::NotWholeCredits(_))), "{text}");
        }
        assert!(matches!(Credits::parse_usd("99999999999999999999"), Err(UsdParseError::TooLarge(_))));
        let shown = Credits::parse_usd("0.0000001").unwrap_err().to_string();
        assert!(shown.contains("$0.0000005"), "{shown}");
    }

    #[test]
    fn sums_stay_exact_and_serde_is_the_bare_integer() {
        let total: Credits = std::iter::repeat_n(Credits::new(1), 3_000_000).sum();
        assert_eq!(total.usd_decimal(), "1.50");
        assert_eq!(Credits::new(5) - Credits::new(7), Credits::new(-2));
        assert_eq!(serde_json::to_string(&Credits::new(2480)).unwrap(), "2480");
        assert_eq!(serde_json::from_str::<Credits>("2480").unwrap(), Credits::new(2480));
        assert_eq!(serde_json::from_str::<Credits>("3120000.0").unwrap(), Credits::new(3_120_000));
        assert!(serde_json::from_str::<Credits>("2480.5").is_err());
        assert!(serde_json::from_str::<Credits>("\"2480\"").is_err());
        assert_eq!(Credits::from_f64_rounded(119_999.6), Some(Credits::new(120_000)));
        assert_eq!(Credits::from_f64_rounded(f64::NAN), None);
        assert_eq!(Credits::from_f64_rounded(1e30), None);
    }
}
