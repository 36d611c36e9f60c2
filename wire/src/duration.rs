//! `xs:duration` values as Service Bus writes them: a .NET `TimeSpan` in 100 ns ticks.

use std::fmt;
use std::time::Duration;

use crate::error::WireError;

const TICKS_PER_SECOND: i64 = 10_000_000;
const TICKS_PER_MINUTE: i64 = 60 * TICKS_PER_SECOND;
const TICKS_PER_HOUR: i64 = 60 * TICKS_PER_MINUTE;
const TICKS_PER_DAY: i64 = 24 * TICKS_PER_HOUR;

/// A non-negative span of time with .NET `TimeSpan` precision (100 ns ticks).
///
/// [`TimeSpan::MAX`] is the service's "infinite" (`P10675199DT2H48M5.4775807S`); any parsed
/// value at or above `P10675199D` is taken as infinite, since clients truncate it differently
/// (Python writes `...5.477539S`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TimeSpan(i64);

impl TimeSpan {
    /// `TimeSpan.MaxValue`, the service's "never".
    pub const MAX: TimeSpan = TimeSpan(i64::MAX);
    /// Zero length.
    pub const ZERO: TimeSpan = TimeSpan(0);

    /// A span of whole seconds.
    pub const fn from_secs(secs: i64) -> Self {
        TimeSpan(secs.saturating_mul(TICKS_PER_SECOND))
    }

    /// A span of whole minutes.
    pub const fn from_mins(mins: i64) -> Self {
        TimeSpan(mins.saturating_mul(TICKS_PER_MINUTE))
    }

    /// A span from 100 ns ticks (negative values clamp to zero).
    pub const fn from_ticks(ticks: i64) -> Self {
        TimeSpan(if ticks < 0 { 0 } else { ticks })
    }

    /// The number of 100 ns ticks.
    pub const fn ticks(self) -> i64 {
        self.0
    }

    /// Whether this is the "infinite" value.
    pub const fn is_infinite(self) -> bool {
        self.0 == i64::MAX
    }

    /// Whole seconds, rounded down.
    pub const fn as_secs(self) -> i64 {
        self.0 / TICKS_PER_SECOND
    }

    /// Seconds with their fraction (as `TimeToLive` is written).
    pub const fn as_secs_f64(self) -> f64 {
        self.0 as f64 / TICKS_PER_SECOND as f64
    }

    /// As a std [`Duration`].
    pub fn to_std(self) -> Duration {
        let secs = (self.0 / TICKS_PER_SECOND) as u64;
        let nanos = ((self.0 % TICKS_PER_SECOND) * 100) as u32;
        Duration::new(secs, nanos)
    }

    /// From a std [`Duration`], saturating at [`TimeSpan::MAX`].
    pub fn from_std(d: Duration) -> Self {
        let ticks = d.as_nanos() / 100;
        TimeSpan(i64::try_from(ticks).unwrap_or(i64::MAX))
    }

    /// Parses an `xs:duration` (`PT30S`, `P1DT2H3M4.5S`, `P10675199DT2H48M5.4775807S`).
    ///
    /// Years count 365 days and months 30, as .NET `XmlConvert` does.
    ///
    /// # Errors
    ///
    /// [`WireError::Duration`] for anything that is not a non-negative `xs:duration`.
    pub fn parse(text: &str) -> Result<Self, WireError> {
        let bad = |why: &str| WireError::Duration {
            value: text.to_string(),
            reason: why.to_string(),
        };
        let s = text.trim();
        if s.starts_with('-') {
            return Err(bad("negative durations are not allowed"));
        }
        let rest = s
            .strip_prefix('P')
            .ok_or_else(|| bad("a duration starts with 'P'"))?;
        if rest.is_empty() {
            return Err(bad("no duration components after 'P'"));
        }
        let (date_part, time_part) = match rest.split_once('T') {
            Some((d, t)) => {
                if t.is_empty() {
                    return Err(bad("no time components after 'T'"));
                }
                (d, Some(t))
            }
            None => (rest, None),
        };
        let mut total: i128 = 0;
        let mut any = false;
        let mut add = |number: &str, unit: char, in_time: bool| -> Result<(), WireError> {
            any = true;
            let per_unit: i128 = match (unit, in_time) {
                ('Y', false) => 365 * TICKS_PER_DAY as i128,
                ('M', false) => 30 * TICKS_PER_DAY as i128,
                ('D', false) => TICKS_PER_DAY as i128,
                ('H', true) => TICKS_PER_HOUR as i128,
                ('M', true) => TICKS_PER_MINUTE as i128,
                ('S', true) => TICKS_PER_SECOND as i128,
                _ => return Err(bad(&format!("unexpected unit '{unit}'"))),
            };
            let (whole, frac) = match number.split_once('.') {
                Some((w, f)) if unit == 'S' && in_time => (w, f),
                Some(_) => return Err(bad("only seconds may have a fraction")),
                None => (number, ""),
            };
            if whole.is_empty() && frac.is_empty() {
                return Err(bad(&format!("'{unit}' has no number")));
            }
            if !whole.bytes().all(|b| b.is_ascii_digit())
                || !frac.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(bad("components must be decimal numbers"));
            }
            let whole: i128 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| bad("number too large"))?
            };
            let mut frac_ticks: i128 = 0;
            for (i, digit) in frac.bytes().take(7).enumerate() {
                frac_ticks += i128::from(digit - b'0') * 10i128.pow(6 - i as u32);
            }
            total = total
                .checked_add(
                    whole
                        .checked_mul(per_unit)
                        .ok_or_else(|| bad("number too large"))?,
                )
                .and_then(|t| t.checked_add(frac_ticks))
                .ok_or_else(|| bad("number too large"))?;
            Ok(())
        };
        for (part, in_time, units) in [
            (date_part, false, "YMD"),
            (time_part.unwrap_or(""), true, "HMS"),
        ] {
            let mut number = String::new();
            let mut last_unit: Option<usize> = None;
            for c in part.chars() {
                if c.is_ascii_digit() || c == '.' {
                    number.push(c);
                    continue;
                }
                let index = units
                    .find(c)
                    .ok_or_else(|| bad(&format!("unexpected character '{c}'")))?;
                if last_unit.is_some_and(|l| index <= l) {
                    return Err(bad("components out of order or repeated"));
                }
                last_unit = Some(index);
                add(&number, c, in_time)?;
                number.clear();
            }
            if !number.is_empty() {
                return Err(bad("number without a unit"));
            }
        }
        if !any {
            return Err(bad("no duration components"));
        }
        if total >= 10_675_199 * TICKS_PER_DAY as i128 {
            return Ok(TimeSpan::MAX);
        }
        Ok(TimeSpan(total as i64))
    }
}

impl fmt::Display for TimeSpan {
    /// Writes the value as .NET `XmlConvert.ToString(TimeSpan)` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = self.0;
        let days = t / TICKS_PER_DAY;
        t %= TICKS_PER_DAY;
        let hours = t / TICKS_PER_HOUR;
        t %= TICKS_PER_HOUR;
        let minutes = t / TICKS_PER_MINUTE;
        t %= TICKS_PER_MINUTE;
        let seconds = t / TICKS_PER_SECOND;
        let fraction = t % TICKS_PER_SECOND;
        f.write_str("P")?;
        if days != 0 {
            write!(f, "{days}D")?;
        }
        if hours != 0 || minutes != 0 || seconds != 0 || fraction != 0 || days == 0 {
            f.write_str("T")?;
            if hours != 0 {
                write!(f, "{hours}H")?;
            }
            if minutes != 0 {
                write!(f, "{minutes}M")?;
            }
            if seconds != 0 || fraction != 0 || (hours == 0 && minutes == 0) {
                write!(f, "{seconds}")?;
                if fraction != 0 {
                    let digits = format!("{fraction:07}");
                    write!(f, ".{}", digits.trim_end_matches('0'))?;
                }
                f.write_str("S")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn service_values_round_trip() {
        for s in [
            "PT30S",
            "PT1M",
            "PT10M",
            "PT1H",
            "P14D",
            "P1DT2H3M",
            "PT0S",
            "PT0.5S",
            "P10675199DT2H48M5.4775807S",
            "PT45S",
            "PT2H",
        ] {
            assert_eq!(TimeSpan::parse(s).unwrap().to_string(), s, "{s}");
        }
    }

    #[test]
    fn infinity_variants() {
        assert!(
            TimeSpan::parse("P10675199DT2H48M5.477539S")
                .unwrap()
                .is_infinite()
        );
        assert!(TimeSpan::parse("P10675199D").unwrap().is_infinite());
        assert!(TimeSpan::parse("P99999999D").unwrap().is_infinite());
        assert!(!TimeSpan::parse("P10675198D").unwrap().is_infinite());
    }

    #[test]
    fn units_and_fractions() {
        assert_eq!(TimeSpan::parse("PT1.25S").unwrap().ticks(), 12_500_000);
        assert_eq!(
            TimeSpan::parse("P1Y").unwrap(),
            TimeSpan::parse("P365D").unwrap()
        );
        assert_eq!(TimeSpan::parse("PT90M").unwrap().to_string(), "PT1H30M");
        assert_eq!(TimeSpan::parse(" PT1M ").unwrap(), TimeSpan::from_mins(1));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", "P", "PT", "1H", "PT1", "PTH", "-PT1S", "PT1.5M", "PT1S1M", "P1H", "PT1M1M", "abc",
            "PT1X",
        ] {
            assert!(TimeSpan::parse(s).is_err(), "{s} should be rejected");
        }
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(ticks in 0i64..=i64::MAX) {
            let span = TimeSpan::from_ticks(ticks);
            let parsed = TimeSpan::parse(&span.to_string()).unwrap();
            if ticks >= 10_675_199 * TICKS_PER_DAY {
                prop_assert!(parsed.is_infinite());
            } else {
                prop_assert_eq!(parsed, span);
            }
        }
    }
}
