//! The provider callback's query (`code`, `state`, `error`, `error_description`), read by the
//! same `Query` extractor as `routes::callback`. Invariants: no panic; an error shown or stored
//! from it is at most 300 characters without control characters; `error` always wins over
//! `code`; fields written with a form encoder are read back unchanged.
#![no_main]

use authlink::fuzzing::{CallbackQuery, callback_query};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fn check(q: CallbackQuery) {
    let had_error = q.error.is_some();
    let code = q.code.clone();
    match q.into_code() {
        Ok(c) => {
            assert!(!had_error);
            assert_eq!(Some(c), code);
        }
        Err(e) => {
            assert!(e.chars().count() <= 300);
            assert!(!e.chars().any(char::is_control), "{e:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(query) = std::str::from_utf8(data)
        && let Some(q) = callback_query(query)
    {
        check(q);
    }

    let f = common::fields(data, 4);
    let names = ["code", "state", "error", "error_description"];
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in names.iter().zip(&f) {
        form.append_pair(name, value);
    }
    let q = callback_query(&form.finish()).expect("a form-encoded query parses");
    let got = [&q.code, &q.state, &q.error, &q.error_description];
    for (i, value) in got.iter().enumerate() {
        assert_eq!(
            value.as_deref(),
            f.get(i).map(String::as_str),
            "{}",
            names[i]
        );
    }
    check(q);
});
