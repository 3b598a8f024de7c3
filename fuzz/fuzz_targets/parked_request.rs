//! A connection's first bytes, as `parked` decides whether to read the request itself (a request
//! that waits, complete and plain) or leave it to hyper. Invariants: no panic; what it takes is a
//! complete head that httparse also reads, plus exactly its `Content-Length` of body, within the
//! bytes there; only GET and POST on `/v1/bots/…`; never a request with `Transfer-Encoding`.
//! The same bytes as the first request of a connection over the cap: taken only as a `GET` of
//! `/healthz` or `/readyz`.
#![no_main]

use authlink::fuzzing::{health_probe, parked_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((len, method, target)) = health_probe(data) {
        assert!(len <= data.len());
        assert_eq!(method, "GET");
        let path = target.split('?').next().unwrap();
        assert!(path == "/healthz" || path == "/readyz", "{target}");
    }
    let Some((len, method, target)) = parked_request(data) else {
        return;
    };
    assert!(len <= data.len());
    assert!(method == "GET" || method == "POST", "{method}");
    assert!(target.starts_with("/v1/bots/"), "{target}");
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut head = httparse::Request::new(&mut headers);
    let httparse::Status::Complete(head_len) = head.parse(data).unwrap() else {
        panic!("taken with an incomplete head");
    };
    let mut length = 0;
    for h in head.headers.iter() {
        assert!(!h.name.eq_ignore_ascii_case("transfer-encoding"));
        if h.name.eq_ignore_ascii_case("content-length") {
            length = std::str::from_utf8(h.value).unwrap().parse().unwrap();
        }
    }
    assert_eq!(len, head_len + length);
});
