//! Timestamps as descriptions carry them (ISO 8601, UTC).

use chrono::{DateTime, Datelike as _, NaiveDateTime, SecondsFormat, Utc};

/// Writes a timestamp as the service does in descriptions: ISO 8601 UTC, milliseconds.
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads an ISO 8601 timestamp with or without zone and fraction (`Z` assumed). Years
/// outside 1 to 9999 (what the service's .NET `DateTime` holds) are refused.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = match DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.with_timezone(&Utc),
        Err(_) => NaiveDateTime::parse_from_str(text.trim_end_matches('Z'), "%Y-%m-%dT%H:%M:%S%.f")
            .ok()?
            .and_utc(),
    };
    (1..=9999).contains(&parsed.year()).then_some(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_stay_within_what_the_service_holds() {
        assert!(parse_timestamp("2024-01-02T03:04:05Z").is_some());
        assert!(parse_timestamp("9999-12-31T23:59:59").is_some());
        assert!(parse_timestamp("0001-01-01T00:00:00").is_some());
        for bad in [
            "+10000-01-01T00:00:00",
            "+99999-01-01T00:00:00Z",
            "-0001-01-01T00:00:00",
            "0000-01-01T00:00:00",
            "9999-12-31T23:00:00-05:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
