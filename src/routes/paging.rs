//! Pages of the list routes: `?limit=` and an opaque `?cursor=` (the key of the page's last
//! item, base64url, handed back as `next_cursor`). Bad query parameters are 422, like bad bodies.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::ApiError;

/// The query of a paginated list.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    limit: Option<u32>,
    cursor: Option<String>,
}

/// What a page asks the store for: at most `limit` items after the key `after`.
pub struct Page {
    pub limit: usize,
    pub after: Option<String>,
}

/// A list route's query, its rejection (unknown parameter, not a number…) as a 422.
pub fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(q)| q)
        .map_err(|e| ApiError::Invalid(e.body_text()))
}

/// `?limit=` within 1–`max` (`default` when absent).
pub fn limit(limit: Option<u32>, default: usize, max: usize) -> Result<usize, ApiError> {
    match limit.map(|l| l as usize) {
        None => Ok(default),
        Some(l) if (1..=max).contains(&l) => Ok(l),
        Some(_) => Err(ApiError::Invalid(format!("limit must be 1-{max}"))),
    }
}

impl PageQuery {
    pub fn page(self, default: usize, max: usize) -> Result<Page, ApiError> {
        let limit = limit(self.limit, default, max)?;
        let after = self
            .cursor
            .map(|c| {
                URL_SAFE_NO_PAD
                    .decode(c)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        ApiError::Invalid("cursor is not one this API handed out".into())
                    })
            })
            .transpose()?;
        Ok(Page { limit, after })
    }
}

impl Page {
    /// The key the page starts after, parsed as the listing's key type (a cursor that is not
    /// one is a 422).
    pub fn after<T>(&self, parse: impl FnOnce(&str) -> Option<T>) -> Result<Option<T>, ApiError> {
        self.after
            .as_deref()
            .map(|a| {
                parse(a).ok_or_else(|| {
                    ApiError::Invalid("cursor is not one this API handed out".into())
                })
            })
            .transpose()
    }

    /// Split what the store returned for `limit + 1`: the page, and the cursor of the next one
    /// (`None` on the last page).
    pub fn finish<T>(
        &self,
        mut items: Vec<T>,
        key: impl Fn(&T) -> &str,
    ) -> (Vec<T>, Option<String>) {
        let more = items.len() > self.limit;
        items.truncate(self.limit);
        let next = more
            .then(|| items.last().map(|last| URL_SAFE_NO_PAD.encode(key(last))))
            .flatten();
        (items, next)
    }
}
