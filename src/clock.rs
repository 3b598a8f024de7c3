//! The only place that reads the wall clock. Everything else takes `now` as a parameter, so
//! expiry and backoff math is testable.

use time::OffsetDateTime;

/// Current UTC time, truncated to milliseconds (the store's resolution).
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.millisecond() as u32 * 1_000_000)
        .unwrap_or(now)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The inverse of [`unix_ms`]; out-of-range values clamp to the epoch.
pub fn from_unix_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// RFC 3339 in UTC with milliseconds (`2026-11-29T02:33:51.484Z`), the one timestamp format of
/// the API and the store. Written by hand: the general-purpose formatter was ~5% of the
/// session-create CPU profile. Parsing accepts any RFC 3339 offset.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;

    pub fn format(t: OffsetDateTime) -> String {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, m, d) = t.to_calendar_date();
        let (hh, mm, ss, ms) = t.to_hms_milli();
        let mut out = String::with_capacity(24);
        digits(&mut out, y.clamp(0, 9999) as u32, 4);
        for (sep, n, width) in [
            ('-', m as u32, 2),
            ('-', u32::from(d), 2),
            ('T', u32::from(hh), 2),
            (':', u32::from(mm), 2),
            (':', u32::from(ss), 2),
            ('.', u32::from(ms), 3),
        ] {
            out.push(sep);
            digits(&mut out, n, width);
        }
        out.push('Z');
        out
    }

    /// `n` in decimal, zero-padded to `width` digits (n < 10^width).
    fn digits(out: &mut String, n: u32, width: u32) {
        for i in (0..width).rev() {
            let digit = (n / 10u32.pow(i)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <&str>::deserialize(d)?;
        OffsetDateTime::parse(s, &Rfc3339).map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => s.serialize_str(&format(*t)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let s = Option::<&str>::deserialize(d)?;
            s.map(|s| OffsetDateTime::parse(s, &Rfc3339).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn formats_like_the_general_formatter_and_round_trips() {
            let t = time::macros::datetime!(2026-01-05 03:04:05.067 UTC);
            assert_eq!(format(t), "2026-01-05T03:04:05.067Z");
            let now = crate::clock::now();
            let back = OffsetDateTime::parse(&format(now), &Rfc3339).unwrap();
            assert_eq!(back, now);
            let offset = time::macros::datetime!(2026-01-05 03:04:05 +02:00);
            assert_eq!(format(offset), "2026-01-05T01:04:05.000Z");
        }
    }
}
