//! JSON text written by hand where serde_json's byte-by-byte escaping shows in profiles: log
//! lines (`telemetry::json`) and the access-token answer.

use std::fmt::Write as _;

/// `s` as a JSON string, quotes included.
pub fn string(buf: &mut String, s: &str) {
    buf.push('"');
    escape(buf, s);
    buf.push('"');
}

/// JSON string escaping (RFC 8259 §7): quote, backslash and control characters. By bytes: those
/// are all ASCII, and no byte of a multi-byte UTF-8 character is ASCII, so runs without them are
/// copied whole (char by char, this was most of a log line's cost under callgrind).
pub fn escape(buf: &mut String, s: &str) {
    let bytes = s.as_bytes();
    // Nearly every string needs nothing: one pass without branches (the compiler vectorizes
    // it), then a single copy.
    let special = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
    if !bytes.iter().fold(false, |seen, &b| seen | special(b)) {
        buf.push_str(s);
        return;
    }
    let mut plain = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        // `plain..i` ends before an ASCII byte: a character boundary.
        buf.push_str(&s[plain..i]);
        if escaped.is_empty() {
            let _ = write!(buf, "\\u{:04x}", b);
        } else {
            buf.push_str(escaped);
        }
        plain = i + 1;
    }
    buf.push_str(&s[plain..]);
}
