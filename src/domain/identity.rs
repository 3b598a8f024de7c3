//! Who signed in versus who was expected (SPEC §6). Emails and usernames compare
//! case-insensitively; provider user ids exactly. Every field the caller gave must match.

use super::grant::Identity;
use super::session::ExpectedIdentity;

pub fn matches(expected: &ExpectedIdentity, actual: &Identity) -> bool {
    let ci = |want: &Option<String>, got: &Option<String>| match want {
        None => true,
        Some(w) => got
            .as_deref()
            .is_some_and(|g| g.eq_ignore_ascii_case(w.trim())),
    };
    let exact = |want: &Option<String>, got: &Option<String>| match want {
        None => true,
        Some(w) => got.as_deref() == Some(w.trim()),
    };
    ci(&expected.email, &actual.email)
        && ci(&expected.username, &actual.username)
        && exact(&expected.user_id, &actual.user_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_given_fields_must_match() {
        let actual = Identity {
            user_id: Some("005A".into()),
            email: Some("Ada@Example.com".into()),
            username: Some("ada@example.com".into()),
            ..Default::default()
        };
        let want = |email: Option<&str>, user_id: Option<&str>| ExpectedIdentity {
            email: email.map(Into::into),
            username: None,
            user_id: user_id.map(Into::into),
        };
        assert!(matches(&want(Some("ada@example.COM"), None), &actual));
        assert!(matches(
            &want(Some("ada@example.com"), Some("005A")),
            &actual
        ));
        assert!(!matches(
            &want(Some("ada@example.com"), Some("005a")),
            &actual
        ));
        assert!(!matches(&want(Some("eve@example.com"), None), &actual));
        assert!(!matches(
            &want(Some("ada@example.com"), None),
            &Identity::default()
        ));
    }
}
