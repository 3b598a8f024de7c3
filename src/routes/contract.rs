//! The OpenAPI document as the API's contract: the `Problem` every error answers with, the path
//! parameters with the patterns the handlers parse them by, and the links a stateful client (or
//! fuzzer) follows from one operation to the next (bot → key → integration → session → status).
//! The operations themselves are described on their handlers; this module only adds what is
//! common to all of them, in one place.

use utoipa::openapi::path::Operation;

use crate::error::ApiError;
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};

/// An RFC 9457 problem: every error of the API (`application/problem+json`). Some problems carry
/// extension members beside these (e.g. `session` and `mcp` on `authorization_required`).
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "a schema only: problems are built in crate::error"
)]
pub struct Problem {
    /// `https://authlink.dev/problems/{code}`.
    #[schema(format = Uri)]
    r#type: String,
    /// The status's reason phrase.
    title: String,
    #[schema(minimum = 400, maximum = 599)]
    status: u16,
    /// What went wrong, for a person.
    detail: String,
    /// The stable machine-readable code (`validation_failed`, `not_found`, …).
    #[schema(pattern = "^[a-z_]+$")]
    code: String,
}

// The patterns are literals (the attribute takes no paths); a test below holds them equal to
// the constants beside the parsers in `domain::ids`. Key, secret, profile and delivery ids are
// the handlers' own tokens (`key_…`, `whs_…`, `prof_…`, a UUID): another string is not found.
/// `/v1/bots/{bot}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct BotPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
}

/// `/v1/bots/{bot}/integrations/{integration}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct IntegrationPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    integration: String,
}

/// `/v1/bots/{bot}/integrations/{integration}/connections/{user}`: a user id, or `_bot` for the bot-wide grant.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct ConnectionPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    integration: String,
    #[param(
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$",
        min_length = 1,
        max_length = 256
    )]
    user: String,
}

/// `/v1/bots/{bot}/auth-sessions/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct SessionPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(pattern = "^0[0-9a-f]{33}$", min_length = 34, max_length = 34)]
    id: String,
}

/// `/v1/bots/{bot}/channels/{name}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct ChannelPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    name: String,
}

/// `/v1/bots/{bot}/api-keys/{key}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct KeyPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    key: String,
}

/// `/v1/bots/{bot}/webhook-secrets/{id}`, `…/webhook-deliveries/{id}`, `…/auth-profiles/{id}`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct IdPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64
    )]
    bot: String,
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$", min_length = 1, max_length = 64)]
    id: String,
}

/// The document the routes were collected into, completed and serialized: the problem+json
/// body of each error response of the API, the errors every API route can answer (401 without a
/// valid key, 503 while the store is unavailable or the request outlives its deadline), the
/// links, and what the deployment decides (`max_wait_seconds`: the longest `?wait=` of a status
/// long-poll).
pub fn document(mut openapi: OpenApi, max_wait_seconds: u64) -> String {
    let components = openapi.components.get_or_insert_with(Default::default);
    for (name, schema) in [
        ("Problem", <Problem as utoipa::PartialSchema>::schema()),
        (
            "Status",
            <crate::domain::session::Status as utoipa::PartialSchema>::schema(),
        ),
        (
            "DeliveryState",
            <DeliveryState as utoipa::PartialSchema>::schema(),
        ),
    ] {
        components.schemas.insert(name.into(), schema);
    }
    for (path, item) in openapi.paths.paths.iter_mut() {
        // The browser routes answer with pages, not problems.
        if !path.starts_with("/v1/") {
            continue;
        }
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            problems(op);
        }
    }
    max_wait(&mut openapi, max_wait_seconds);
    // Links are written as JSON: utoipa 5 serializes a Link's fields in snake_case
    // (`operation_id`), which OpenAPI tools do not read.
    let mut doc = serde_json::to_value(&openapi).unwrap_or_default();
    for (from, status, name, to, parameters, body) in LINKS {
        let Some(response) = doc["paths"]
            .as_object_mut()
            .into_iter()
            .flat_map(|paths| paths.values_mut())
            .flat_map(|item| {
                item.as_object_mut()
                    .into_iter()
                    .flat_map(|i| i.values_mut())
            })
            .find(|op| op["operationId"] == *from)
            .and_then(|op| op["responses"].get_mut(*status))
        else {
            continue;
        };
        let mut link = serde_json::json!({
            "operationId": to,
            "parameters": parameters.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        if let Some(body) = body {
            link["requestBody"] = serde_json::from_str(body).unwrap_or_default();
        }
        response["links"][*name] = link;
    }
    // What the derive cannot say: which keys a map may have.
    if let Some(params) = doc
        .pointer_mut("/components/schemas/ProfileBody/properties/extra_authorize_params")
        .and_then(serde_json::Value::as_object_mut)
    {
        params.insert("maxProperties".into(), 20.into());
        params.insert(
            "propertyNames".into(),
            serde_json::json!({
                "minLength": 1,
                "not": {"enum": RESERVED_PARAMS},
            }),
        );
    }
    doc.to_string()
}

fn problems(op: &mut Operation) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut common = vec![(
        "503",
        "the store is unavailable or the request outlived its deadline (Retry-After)",
    )];
    if authenticated {
        common.push(("401", "no valid key (WWW-Authenticate: Bearer)"));
        common.push((
            "429",
            "over the key's (or, without a valid key, the address's) rate limit: Retry-After, RateLimit, RateLimit-Policy",
        ));
    }
    for (status, description) in common {
        op.responses
            .responses
            .entry(status.into())
            .or_insert_with(|| RefOr::T(ResponseBuilder::new().description(description).build()));
    }
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(r) = response
            && (status.starts_with('4') || status.starts_with('5'))
            && r.content.is_empty()
        {
            r.content.insert(
                "application/problem+json".into(),
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            );
        }
    }
}

fn operation<'a>(openapi: &'a mut OpenApi, id: &str) -> Option<&'a mut Operation> {
    openapi.paths.paths.values_mut().find_map(|item| {
        [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        .find(|op| op.operation_id.as_deref() == Some(id))
    })
}

/// The longest `?wait=` of a status long-poll is the deployment's `sessions.max_wait_seconds`.
fn max_wait(openapi: &mut OpenApi, max_wait_seconds: u64) {
    use utoipa::openapi::schema::{Object, Schema};
    if let Some(op) = operation(openapi, "sessions_status") {
        for p in op.parameters.iter_mut().flatten() {
            if p.name == "wait"
                && let Some(RefOr::T(Schema::Object(o))) = &mut p.schema
            {
                let o: &mut Object = o;
                o.maximum = Some((max_wait_seconds as f64).into());
            }
        }
    }
}

type Link = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

const BOT: (&str, &str) = ("bot", "$request.path.bot");
const INTEGRATION: (&str, &str) = ("integration", "$request.path.integration");

/// From (operation, status) by `name` to an operation, with its parameters (and body) taken from
/// the request or the response: the resources a client creates, walked.
const LINKS: &[Link] = &[
    // A bot: its keys, integrations, sessions, channels, profiles, webhooks.
    (
        "admin_put_bot",
        "201",
        "GetBot",
        "admin_get_bot",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "GetBot",
        "admin_get_bot",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "201",
        "CreateApiKey",
        "admin_create_api_key",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "CreateApiKey",
        "admin_create_api_key",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "PutIntegration",
        "admin_put_integration",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "201",
        "PutIntegration",
        "admin_put_integration",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "ListIntegrations",
        "admin_list_integrations",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "ListSessions",
        "sessions_list",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "PutChannel",
        "channels_put",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "CreateProfile",
        "profiles_create",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "CreateWebhookSecret",
        "admin_create_webhook_secret",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "ListDeliveries",
        "admin_list_deliveries",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        "200",
        "DeleteBot",
        "admin_delete_bot",
        &[BOT],
        None,
    ),
    // A key.
    (
        "admin_create_api_key",
        "201",
        "ListApiKeys",
        "admin_list_api_keys",
        &[BOT],
        None,
    ),
    (
        "admin_create_api_key",
        "201",
        "DeleteApiKey",
        "admin_delete_api_key",
        &[BOT, ("key", "$response.body#/id")],
        None,
    ),
    // An integration: its sessions, tokens, connections, pre-authorization.
    (
        "admin_put_integration",
        "201",
        "GetIntegration",
        "admin_get_integration",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "GetIntegration",
        "admin_get_integration",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "CreateSession",
        "sessions_create",
        &[BOT],
        Some(r#"{"integration": "$request.path.integration", "user_id": "u-1"}"#),
    ),
    (
        "admin_put_integration",
        "201",
        "CreateSession",
        "sessions_create",
        &[BOT],
        Some(r#"{"integration": "$request.path.integration", "user_id": "u-1"}"#),
    ),
    (
        "admin_put_integration",
        "200",
        "AccessToken",
        "tokens_access_token",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "ListConnections",
        "tokens_list_connections",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "BotConnection",
        "tokens_connection",
        &[BOT, INTEGRATION, ("user", "_bot")],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "PreAuthorize",
        "sessions_pre_authorize",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        "200",
        "DeleteIntegration",
        "admin_delete_integration",
        &[BOT, INTEGRATION],
        None,
    ),
    // A session: its status, events, verification, cancellation — and the user's connection.
    (
        "sessions_create",
        "201",
        "GetSession",
        "sessions_status",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_create",
        "201",
        "SessionEvents",
        "sessions_events",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_create",
        "201",
        "VerifySession",
        "sessions_verify",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_create",
        "201",
        "CancelSession",
        "sessions_cancel",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_create",
        "201",
        "AccessToken",
        "tokens_access_token",
        &[BOT, ("integration", "$response.body#/integration")],
        Some(r#"{"session_id": "$response.body#/id", "user_id": "$response.body#/user_id"}"#),
    ),
    (
        "sessions_create",
        "200",
        "GetConnection",
        "tokens_connection",
        &[
            BOT,
            ("integration", "$response.body#/integration"),
            ("user", "$response.body#/user_id"),
        ],
        None,
    ),
    (
        "sessions_pre_authorize",
        "201",
        "GetSession",
        "sessions_status",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_pre_authorize",
        "201",
        "CancelSession",
        "sessions_cancel",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "sessions_cancel",
        "200",
        "GetSession",
        "sessions_status",
        &[BOT, ("id", "$request.path.id")],
        None,
    ),
    // A channel, a profile, a webhook secret.
    (
        "channels_put",
        "201",
        "GetChannel",
        "channels_get",
        &[BOT, ("name", "$request.path.name")],
        None,
    ),
    (
        "channels_put",
        "201",
        "DeleteChannel",
        "channels_delete",
        &[BOT, ("name", "$request.path.name")],
        None,
    ),
    (
        "profiles_create",
        "201",
        "GetProfile",
        "profiles_get",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "profiles_create",
        "201",
        "UpdateProfile",
        "profiles_update",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "profiles_create",
        "201",
        "DeleteProfile",
        "profiles_delete",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "admin_create_webhook_secret",
        "201",
        "DeleteWebhookSecret",
        "admin_delete_webhook_secret",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
];

/// Schema-only names for the strings the handlers check by rule rather than by type.
mod strings {
    #![allow(
        dead_code,
        reason = "schemas only: the fields are plain strings and Urls"
    )]

    /// A host a bot allows: `example.com` or `*.example.com` (`check_hosts`).
    #[derive(utoipa::ToSchema)]
    #[schema(pattern = "^(\\*\\.)?[A-Za-z0-9.-]{1,253}$")]
    pub struct HostName(String);

    /// A URL the daemon calls (a provider, an issuer, a chat API, a channel gateway): https, a
    /// host name, no credentials (`admin::check_url`; a local trial also takes loopback http).
    #[derive(utoipa::ToSchema)]
    #[schema(
        format = Uri,
        pattern = "^https://([a-z0-9]+(-[a-z0-9]+)*\\.)*[a-z][a-z0-9]*(-[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$"
    )]
    pub struct HttpsUrl(String);

    /// A webhook or return URL: http(s), a host name, no credentials.
    #[derive(utoipa::ToSchema)]
    #[schema(
        format = Uri,
        pattern = "^https?://([a-z0-9]+(-[a-z0-9]+)*\\.)*[a-z][a-z0-9]*(-[a-z0-9]+)*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$"
    )]
    pub struct HttpUrl(String);

    /// An OAuth scope: printable ASCII without spaces, quotes or backslashes (`check_scopes`).
    #[derive(utoipa::ToSchema)]
    #[schema(pattern = "^[!#-\\[\\]-~]{1,200}$")]
    pub struct Scope(String);

    /// Free text shown or passed on: no control characters (`check_text`).
    #[derive(utoipa::ToSchema)]
    #[schema(pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub struct Text(String);
}
pub use strings::{HostName, HttpUrl, HttpsUrl, Scope, Text};

/// A request body that the schema calls an object (or, where the body is optional, `null`): serde
/// would also read a struct from a JSON array (`[null, null]`), which no schema here allows.
/// Malformed JSON is a 400, well-formed JSON of the wrong shape a 422.
pub fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let classify = |e: serde_json::Error| match e.classify() {
        serde_json::error::Category::Data => ApiError::Invalid(e.to_string()),
        _ => ApiError::BadRequest(e.to_string()),
    };
    if bytes.trim_ascii_start().first() == Some(&b'[') {
        serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map_err(classify)?;
        return Err(ApiError::Invalid("the body must be a JSON object".into()));
    }
    serde_json::from_slice(bytes).map_err(classify)
}

/// JSON numbers the contract calls integers: JSON Schema counts `600.0` as the integer 600, so
/// the handlers take it too (serde's `u32` would refuse it).
pub mod integer {
    use serde::{Deserialize, Deserializer};

    pub fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
            return Ok(None);
        };
        if let Some(v) = n.as_u64() {
            return u32::try_from(v)
                .map(Some)
                .map_err(|_| serde::de::Error::custom(format!("{n} is out of range")));
        }
        match n.as_f64() {
            Some(f) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
                Ok(Some(f as u32))
            }
            _ => Err(serde::de::Error::custom(format!(
                "{n} is not a non-negative integer"
            ))),
        }
    }
}

/// Which deliveries `GET …/webhook-deliveries` lists.
#[derive(serde::Deserialize, Clone, Copy, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    Dead,
    Pending,
}

/// The authorization request's own parameters, which `extra_authorize_params` may not set.
pub(crate) const RESERVED_PARAMS: [&str; 8] = [
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "scope",
    "code_challenge",
    "code_challenge_method",
    "client_secret",
];

#[cfg(test)]
mod tests {
    use utoipa::IntoParams;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::Schema;

    use super::*;
    use crate::domain::ids::{SESSION_ID_PATTERN, SLUG_PATTERN, USER_ID_PATTERN};

    fn patterns<P: IntoParams>() -> Vec<(String, String)> {
        P::into_params(|| None)
            .into_iter()
            .map(|p| match p.schema {
                Some(RefOr::T(Schema::Object(o))) => (p.name, o.pattern.unwrap_or_default()),
                _ => (p.name, String::new()),
            })
            .collect()
    }

    #[test]
    fn path_patterns_are_the_parsers_patterns() {
        let all = [
            patterns::<BotPath>(),
            patterns::<IntegrationPath>(),
            patterns::<ConnectionPath>(),
            patterns::<SessionPath>(),
            patterns::<ChannelPath>(),
        ]
        .concat();
        for (name, pattern) in all {
            let expected = match name.as_str() {
                "bot" | "integration" | "name" => SLUG_PATTERN,
                "id" => SESSION_ID_PATTERN,
                "user" => USER_ID_PATTERN,
                other => panic!("unexpected parameter {other}"),
            };
            assert_eq!(pattern, expected, "{name}");
        }
    }

    #[test]
    fn bodies_are_objects_and_integral_floats_are_integers() {
        #[derive(serde::Deserialize, Debug, Default)]
        #[serde(deny_unknown_fields)]
        struct Body {
            #[serde(default, deserialize_with = "integer::option_u32")]
            ttl: Option<u32>,
        }
        assert!(matches!(
            json_object::<Body>(b" [null]"),
            Err(ApiError::Invalid(_))
        ));
        assert!(matches!(
            json_object::<Body>(b"[nul"),
            Err(ApiError::BadRequest(_))
        ));
        assert!(json_object::<Option<Body>>(b"null").unwrap().is_none());
        assert_eq!(
            json_object::<Body>(br#"{"ttl": 600.0}"#).unwrap().ttl,
            Some(600)
        );
        for bad in [
            r#"{"ttl": 1.5}"#,
            r#"{"ttl": -1}"#,
            r#"{"ttl": 5000000000}"#,
        ] {
            assert!(
                matches!(
                    json_object::<Body>(bad.as_bytes()),
                    Err(ApiError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }
}
