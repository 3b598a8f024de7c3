//! The only place that reads the wall clock. Everything else takes `now` as a parameter, or asks
//! the application's [`Clock`], so expiry, refresh, backoff and lease math is testable.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// The application's clock: the wall clock, unless a test has frozen it ([`freeze`]) or moved it
/// forward ([`advance`]) — so that a test can stand still at, or jump past, a token's refresh
/// point or a backoff without waiting for it. Clones share the setting (replicas in one test
/// process can share one clock). The daemon itself never freezes or moves its clock.
///
/// [`freeze`]: Clock::freeze
/// [`advance`]: Clock::advance
#[derive(Clone, Debug, Default)]
pub struct Clock {
    /// Added to the wall clock.
    offset_ms: Arc<AtomicI64>,
    /// Unix ms the clock stands at, or 0: running.
    frozen_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now(&self) -> OffsetDateTime {
        match (
            self.frozen_ms.load(Ordering::Relaxed),
            self.offset_ms.load(Ordering::Relaxed),
        ) {
            (0, 0) => now(),
            (0, offset) => now() + time::Duration::milliseconds(offset),
            (frozen, _) => from_unix_ms(frozen),
        }
    }

    /// Stop the clock where it is now; only [`advance`](Clock::advance) moves it from then on.
    pub fn freeze(&self) {
        self.frozen_ms
            .store(unix_ms(self.now()).max(1), Ordering::Relaxed);
    }

    /// Move this clock (and its clones) forward.
    pub fn advance(&self, by: std::time::Duration) {
        let ms = i64::try_from(by.as_millis()).unwrap_or(i64::MAX / 2);
        if self.frozen_ms.load(Ordering::Relaxed) != 0 {
            self.frozen_ms.fetch_add(ms, Ordering::Relaxed);
        } else {
            self.offset_ms.fetch_add(ms, Ordering::Relaxed);
        }
    }
}

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
        String::from_utf8(ascii(t).to_vec()).expect("ASCII digits")
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` on the stack.
    fn ascii(t: OffsetDateTime) -> [u8; 24] {
        let t = t.to_offset(time::UtcOffset::UTC);
        let (y, m, d) = t.to_calendar_date();
        let (hh, mm, ss, ms) = t.to_hms_milli();
        let y = y.clamp(0, 9999) as u32;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        put(&mut out[0..2], y / 100);
        put(&mut out[2..4], y % 100);
        put(&mut out[5..7], m as u32);
        put(&mut out[8..10], u32::from(d));
        put(&mut out[11..13], u32::from(hh));
        put(&mut out[14..16], u32::from(mm));
        put(&mut out[17..19], u32::from(ss));
        out[20] = b'0' + (ms / 100) as u8;
        put(&mut out[21..23], u32::from(ms % 100));
        out
    }

    fn serialize_str<S: Serializer>(t: OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        let buf = ascii(t);
        s.serialize_str(std::str::from_utf8(&buf).expect("ASCII digits"))
    }

    /// Two decimal digits of `n` (< 100) into `out`.
    fn put(out: &mut [u8], n: u32) {
        out[0] = b'0' + (n / 10) as u8;
        out[1] = b'0' + (n % 10) as u8;
    }

    pub fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        serialize_str(*t, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
        let s = <&str>::deserialize(d)?;
        parse(s).map_err(serde::de::Error::custom)
    }

    /// RFC 3339. The form `format` writes (`YYYY-MM-DDTHH:MM:SS.mmmZ`, every timestamp in a
    /// record) is read digit by digit; anything else goes to the general parser. Grants carry
    /// several, and they are read on every token request.
    pub fn parse(s: &str) -> Result<OffsetDateTime, time::error::Parse> {
        own(s.as_bytes()).map_or_else(|| OffsetDateTime::parse(s, &Rfc3339), Ok)
    }

    fn own(b: &[u8]) -> Option<OffsetDateTime> {
        let shape = b.len() == 24
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
            && b[23] == b'Z';
        if !shape {
            return None;
        }
        let num = |from: usize, to: usize| -> Option<u32> {
            b[from..to].iter().try_fold(0u32, |n, &c| {
                c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
            })
        };
        let month = time::Month::try_from(u8::try_from(num(5, 7)?).ok()?).ok()?;
        let date = time::Date::from_calendar_date(
            i32::try_from(num(0, 4)?).ok()?,
            month,
            u8::try_from(num(8, 10)?).ok()?,
        )
        .ok()?;
        let t = time::Time::from_hms_milli(
            u8::try_from(num(11, 13)?).ok()?,
            u8::try_from(num(14, 16)?).ok()?,
            u8::try_from(num(17, 19)?).ok()?,
            u16::try_from(num(20, 23)?).ok()?,
        )
        .ok()?;
        Some(time::PrimitiveDateTime::new(date, t).assume_utc())
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(
            t: &Option<OffsetDateTime>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => serialize_str(*t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            let s = Option::<&str>::deserialize(d)?;
            s.map(|s| super::parse(s).map_err(serde::de::Error::custom))
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

        #[test]
        fn parses_its_own_form_and_any_other_rfc3339_alike() {
            for text in [
                "2026-01-05T03:04:05.067Z",
                "1999-12-31T23:59:59.999Z",
                "2024-02-29T00:00:00.000Z",
                "2026-01-05T03:04:05Z",
                "2026-01-05T05:04:05.067+02:00",
                "2026-01-05T03:04:05.067891Z",
            ] {
                assert_eq!(
                    parse(text).unwrap(),
                    OffsetDateTime::parse(text, &Rfc3339).unwrap(),
                    "{text}"
                );
            }
            for bad in [
                "2026-13-05T03:04:05.067Z",
                "2025-02-29T03:04:05.067Z",
                "2026-01-05T24:04:05.067Z",
                "2026-01-05T03:04:05.06xZ",
                "",
            ] {
                assert!(parse(bad).is_err(), "{bad}");
            }
            let now = crate::clock::now();
            assert_eq!(parse(&format(now)).unwrap(), now);
        }
    }
}
