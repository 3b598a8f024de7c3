//! JSON log lines: one object per event with the event's fields at the top level and its spans,
//! outermost first, under `spans` (the innermost again under `span`), the shape
//! `tracing-subscriber`'s JSON format writes. Written for the request path: a span's fields are
//! rendered to JSON text once, as they are recorded, and an event copies that text into its line
//! — the stock formatter re-parses and re-serializes a span's fields on every `record` and on
//! every event, which was a fifth of the daemon's CPU on the create-session path (perf).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::json::{escape, string};

/// The layer; `W` makes the writer each line goes to (whole, in one `write_all`).
pub struct JsonLines<W> {
    make_writer: W,
}

impl<W> JsonLines<W> {
    pub fn new(make_writer: W) -> Self {
        Self { make_writer }
    }
}

/// A span's fields as JSON members (`"k":v,"k2":v2`), without braces; kept in the span's
/// extensions.
struct Members(String);

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut members = Members(String::with_capacity(96));
        attrs.record(&mut Fields::new(&mut members.0));
        span.extensions_mut().insert(members);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut extensions = span.extensions_mut();
        if let Some(members) = extensions.get_mut::<Members>() {
            values.record(&mut Fields::new(&mut members.0));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        thread_local! {
            static LINE: RefCell<String> = RefCell::new(String::with_capacity(1024));
        }
        LINE.with(|line| {
            // A re-entrant event (logged while formatting one) gets a buffer of its own.
            let mut own = String::new();
            let mut borrowed = line.try_borrow_mut();
            let buf = match borrowed.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut own,
            };
            buf.clear();
            self.format(event, &ctx, buf);
            let mut writer = self.make_writer.make_writer_for(event.metadata());
            let _ = writer.write_all(buf.as_bytes());
            if buf.capacity() > 64 * 1024 {
                *buf = String::with_capacity(1024); // one huge event does not pin its buffer
            }
        });
    }
}

impl<W> JsonLines<W> {
    fn format<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>, buf: &mut String)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        let meta = event.metadata();
        buf.push_str("{\"timestamp\":\"");
        timestamp(buf);
        buf.push_str("\",\"level\":\"");
        buf.push_str(meta.level().as_str());
        buf.push('"');
        {
            let mut fields = Fields::new(buf);
            fields.first = false;
            event.record(&mut fields);
        }
        buf.push_str(",\"target\":");
        string(buf, meta.target());
        let Some(scope) = ctx.event_scope(event) else {
            buf.push_str("}\n");
            return;
        };
        let mut spans = String::new();
        let mut innermost = None;
        for span in scope.from_root() {
            spans.push_str(if spans.is_empty() { "[" } else { "," });
            let start = spans.len();
            spans.push('{');
            if let Some(members) = span.extensions().get::<Members>() {
                spans.push_str(&members.0);
                if !members.0.is_empty() {
                    spans.push(',');
                }
            }
            spans.push_str("\"name\":");
            string(&mut spans, span.name());
            spans.push('}');
            innermost = Some(start..spans.len());
        }
        if let Some(innermost) = innermost {
            buf.push_str(",\"span\":");
            buf.push_str(&spans[innermost]);
            buf.push_str(",\"spans\":");
            buf.push_str(&spans);
            buf.push(']');
        }
        buf.push_str("}\n");
    }
}

/// UTC, RFC 3339 with microseconds (`2026-12-01T14:34:12.605663Z`), digit by digit (`write!`
/// with seven integer formats was a visible part of a line's cost).
fn timestamp(buf: &mut String) {
    let now = time::OffsetDateTime::now_utc();
    let (y, m, d) = now.to_calendar_date();
    let (hh, mm, ss, us) = now.to_hms_micro();
    let mut out = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |at: usize, width: usize, mut n: u32| {
        for i in (at..at + width).rev() {
            out[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    put(0, 4, y.clamp(0, 9999) as u32);
    put(5, 2, u32::from(u8::from(m)));
    put(8, 2, u32::from(d));
    put(11, 2, u32::from(hh));
    put(14, 2, u32::from(mm));
    put(17, 2, u32::from(ss));
    put(20, 6, us);
    buf.push_str(std::str::from_utf8(&out).expect("ASCII digits"));
}

/// Appends fields as `,"name":value` (no leading comma for the first of a span).
struct Fields<'a> {
    buf: &'a mut String,
    first: bool,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a mut String) -> Self {
        let first = buf.is_empty();
        Self { buf, first }
    }

    fn name(&mut self, field: &Field) {
        if !std::mem::take(&mut self.first) {
            self.buf.push(',');
        }
        self.buf.push('"');
        escape(self.buf, field.name());
        self.buf.push_str("\":");
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.name(field);
        string(self.buf, value);
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.name(field);
        self.buf.push('"');
        let _ = write!(Escaped(self.buf), "{value:?}");
        self.buf.push('"');
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.name(field);
        self.buf.push('"');
        let _ = write!(Escaped(self.buf), "{value}");
        self.buf.push('"');
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.name(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.name(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        self.name(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        self.name(field);
        let _ = write!(self.buf, "{value}");
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.name(field);
        self.buf.push_str(if value { "true" } else { "false" });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.name(field);
        if value.is_finite() {
            let _ = write!(self.buf, "{value}");
        } else {
            self.buf.push_str("null");
        }
    }
}

/// `fmt::Write` that escapes what it is given, for `Debug` and `Display` values.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape(self.0, s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;
    use crate::telemetry::tests::Sink;

    fn lines(f: impl FnOnce()) -> Vec<serde_json::Value> {
        let sink = Sink::default();
        let out = sink.clone();
        let subscriber = tracing_subscriber::registry().with(JsonLines::new(move || out.clone()));
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text}");
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    #[test]
    fn an_event_carries_its_fields_and_its_spans_outermost_first() {
        let lines = lines(|| {
            let outer = tracing::info_span!("request", route = "/v1/x", request_id = %"r\"1");
            let _o = outer.enter();
            let inner = tracing::info_span!(
                "create_session",
                bot = "acme",
                session_id = tracing::field::Empty
            );
            let _i = inner.enter();
            inner.record("session_id", "s1");
            tracing::info!(n = 3u64, ok = true, ratio = 0.5, who = ?"ada", "auth session {}", "created");
            drop(_i);
            drop(_o);
            tracing::warn!("outside");
        });
        assert_eq!(lines.len(), 2);
        let l = &lines[0];
        assert_eq!(l["level"], "INFO");
        assert_eq!(l["message"], "auth session created");
        assert_eq!(l["n"], 3);
        assert_eq!(l["ok"], true);
        assert_eq!(l["ratio"], 0.5);
        assert_eq!(
            l["who"], "\"ada\"",
            "Debug, as the stock formatter writes it"
        );
        assert_eq!(l["target"], module_path!());
        let spans = l["spans"].as_array().unwrap();
        assert_eq!(spans[0]["name"], "request");
        assert_eq!(spans[0]["request_id"], "r\"1");
        assert_eq!(spans[0]["route"], "/v1/x");
        assert_eq!(spans[1]["name"], "create_session");
        assert_eq!(spans[1]["bot"], "acme");
        assert_eq!(
            spans[1]["session_id"], "s1",
            "recorded after the span began"
        );
        assert_eq!(l["span"], spans[1]);
        let outside = &lines[1];
        assert_eq!(outside["message"], "outside");
        assert!(outside.get("spans").is_none() && outside.get("span").is_none());
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut buf = String::new();
        string(&mut buf, "a\"b\\c\nd\u{1}é");
        assert_eq!(buf, r#""a\"b\\c\nd\u0001é""#);
        let back: String = serde_json::from_str(&buf).unwrap();
        assert_eq!(back, "a\"b\\c\nd\u{1}é");
        for s in ["日本\"語\u{1f}\u{7f}\t", "", "plain", "\\", "€\r\n€"] {
            let mut buf = String::new();
            string(&mut buf, s);
            assert_eq!(serde_json::from_str::<String>(&buf).unwrap(), s, "{buf}");
        }
    }

    #[test]
    fn timestamps_are_rfc3339_with_microseconds() {
        let mut buf = String::new();
        timestamp(&mut buf);
        assert_eq!(buf.len(), "2026-12-01T14:34:12.605663Z".len(), "{buf}");
        let at = time::OffsetDateTime::parse(&buf, &time::format_description::well_known::Rfc3339)
            .unwrap();
        let off = (time::OffsetDateTime::now_utc() - at).abs();
        assert!(off < time::Duration::seconds(60), "{buf}");
    }
}
