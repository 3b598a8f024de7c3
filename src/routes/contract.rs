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
        max_length = 64,
        example = "acme"
    )]
    bot: String,
}

/// `/v1/bots/{bot}` when creating or deleting it: a bot of one's own (no example to share).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct NewBotPath {
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
        max_length = 64,
        example = "acme"
    )]
    bot: String,
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64,
        example = "crm"
    )]
    integration: String,
}

/// `/v1/bots/{bot}/integrations/{integration}` when configuring or deleting it: an
/// integration of one's own (no example to share).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(
    dead_code,
    reason = "parameters of the schema only: handlers take Path<String>"
)]
pub struct NewIntegrationPath {
    #[param(
        pattern = "^[a-z0-9][a-z0-9_-]{0,63}$",
        min_length = 1,
        max_length = 64,
        example = "acme"
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
/// `session` is the session view's schema (`sessions::session_schema`, passed in by the router:
/// this module describes the handlers, it does not call them).
pub fn document(mut openapi: OpenApi, max_wait_seconds: u64, session: serde_json::Value) -> String {
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
    for (from, statuses, name, to, parameters, body) in links() {
        for status in statuses {
            let Some(response) =
                operation_json(&mut doc, from).and_then(|op| op["responses"].get_mut(*status))
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
            response["links"][name] = link;
        }
    }
    // The success bodies: the views, and which response has which.
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(serde_json::Value::as_object_mut)
    {
        schemas.extend(views(session).into_iter().map(|(k, v)| (k.to_owned(), v)));
    }
    for (id, status, view) in SUCCESS {
        if let Some(response) =
            operation_json(&mut doc, id).and_then(|op| op["responses"].get_mut(*status))
        {
            response["content"] = serde_json::json!({
                "application/json": {"schema": {"$ref": format!("#/components/schemas/{view}")}},
            });
        }
    }
    // What the derive cannot say: rules across fields, and which keys a map may have.
    cross_field_rules(&mut doc);
    // Which keys a map may have.
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

/// The rules the handlers hold between fields (or against reserved values), where JSON Schema
/// can say them: `_bot` names the bot-wide grant, never a user; `salesforce` settings belong to
/// provider `salesforce`, their `host` to (and is required by) environment `my_domain`.
fn cross_field_rules(doc: &mut serde_json::Value) {
    use serde_json::json;
    for body in ["CreateBody", "TokenBody"] {
        if let Some(user) = doc
            .pointer_mut(&format!("/components/schemas/{body}/properties/user_id"))
            .and_then(serde_json::Value::as_object_mut)
        {
            user.insert(
                "not".into(),
                json!({"const": crate::domain::ids::UserId::BOT}),
            );
            user.insert(
                "description".into(),
                "the user's id in the bot's world; not `_bot` (the bot-wide grant's name)".into(),
            );
        }
    }
    if let Some(body) = doc
        .pointer_mut("/components/schemas/IntegrationBody")
        .and_then(serde_json::Value::as_object_mut)
    {
        body.insert(
            "if".into(),
            json!({"required": ["provider"], "properties": {"provider": {"const": "oauth2"}}}),
        );
        body.insert(
            "then".into(),
            json!({"properties": {"salesforce": {"type": "null"}}}),
        );
        if let Some(sf) = body
            .get_mut("properties")
            .and_then(|p| p.get_mut("salesforce"))
            .and_then(serde_json::Value::as_object_mut)
        {
            sf.insert(
                "description".into(),
                "only with provider `salesforce`".into(),
            );
        }
    }
    if let Some(sf) = doc
        .pointer_mut("/components/schemas/SalesforceSettings")
        .and_then(serde_json::Value::as_object_mut)
    {
        sf.insert(
            "description".into(),
            "`host` (https://<name>.my.salesforce.com) is required with environment `my_domain`; with the others it must be absent (or null)".into(),
        );
    }
}

/// The operation `id` of the serialized document.
fn operation_json<'a>(
    doc: &'a mut serde_json::Value,
    id: &str,
) -> Option<&'a mut serde_json::Value> {
    doc["paths"]
        .as_object_mut()?
        .values_mut()
        .flat_map(|item| {
            item.as_object_mut()
                .into_iter()
                .flat_map(|i| i.values_mut())
        })
        .find(|op| op["operationId"] == id)
}

fn problems(op: &mut Operation) {
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let mut common = vec![(
        "503",
        "the store is unavailable, the request outlived its deadline, or the server holds as many connections as it may (over_capacity) (Retry-After)",
    )];
    if authenticated {
        common.push(("401", "no valid key (WWW-Authenticate: Bearer)"));
        common.push((
            "429",
            "over the key's (or, without a valid key, the address's) rate limit: Retry-After, RateLimit, RateLimit-Policy; or, for a request that waits (long-poll, event stream, agent retry), as many requests of the key or its bot waiting as limits allow (too_many_waiting, Retry-After)",
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

/// `(from, the statuses it answers with, link name, to, parameters, request body)`.
type Link = (
    &'static str,
    &'static [&'static str],
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

const BOT: (&str, &str) = ("bot", "$request.path.bot");
const INTEGRATION: (&str, &str) = ("integration", "$request.path.integration");
const SESSION: (&str, &str) = ("id", "$response.body#/id");
/// A create-or-update answers 201 (created) or 200 (updated): the same links from both.
const PUT: &[&str] = &["200", "201"];
const CREATED: &[&str] = &["201"];
const OK: &[&str] = &["200"];

/// What a bot leads to, `(link name, operation)` with the bot as `bot`: from its creation or
/// update and from reading it (a bot's admin key may read its bot, not put it).
const BOT_LINKS: &[(&str, &str)] = &[
    ("CreateApiKey", "admin_create_api_key"),
    ("ListApiKeys", "admin_list_api_keys"),
    ("PutIntegration", "admin_put_integration"),
    ("ListIntegrations", "admin_list_integrations"),
    ("ListSessions", "sessions_list"),
    ("PutChannel", "channels_put"),
    ("ListChannels", "channels_list"),
    ("CreateProfile", "profiles_create"),
    ("ListProfiles", "profiles_list"),
    ("CreateWebhookSecret", "admin_create_webhook_secret"),
    ("ListWebhookSecrets", "admin_list_webhook_secrets"),
    ("ListDeliveries", "admin_list_deliveries"),
];

/// What an integration leads to (its sessions, tokens, connections, pre-authorization), from its
/// configuration and from reading it: `(link name, operation, parameters, request body)`.
type IntegrationLink = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);
const INTEGRATION_LINKS: &[IntegrationLink] = &[
    (
        "CreateSession",
        "sessions_create",
        &[BOT],
        Some(r#"{"integration": "$request.path.integration", "user_id": "u-1"}"#),
    ),
    (
        "AccessToken",
        "tokens_access_token",
        &[BOT, INTEGRATION],
        Some(r#"{"user_id": "u-1"}"#),
    ),
    (
        "ListConnections",
        "tokens_list_connections",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "BotConnection",
        "tokens_connection",
        &[BOT, INTEGRATION, ("user", "_bot")],
        None,
    ),
    (
        "PreAuthorize",
        "sessions_pre_authorize",
        &[BOT, INTEGRATION],
        None,
    ),
];

/// Every link: LINKS, and BOT_LINKS and INTEGRATION_LINKS from the operations they start at.
fn links() -> Vec<Link> {
    let bot = BOT_LINKS.iter().flat_map(|&(name, to)| {
        [("admin_put_bot", PUT), ("admin_get_bot", OK)]
            .map(|(from, statuses)| (from, statuses, name, to, &[BOT][..], None))
    });
    let integration = INTEGRATION_LINKS
        .iter()
        .flat_map(|&(name, to, parameters, body)| {
            [
                ("admin_put_integration", PUT),
                ("admin_get_integration", OK),
            ]
            .map(|(from, statuses)| (from, statuses, name, to, parameters, body))
        });
    LINKS
        .iter()
        .copied()
        .chain(bot)
        .chain(integration)
        .collect()
}

/// From (operation, status) by `name` to an operation, with its parameters (and body) taken from
/// the request or the response: the resources a client creates, walked.
const LINKS: &[Link] = &[
    // A bot: see BOT_LINKS; and what only its creation or update leads to.
    (
        "admin_put_bot",
        PUT,
        "GetBot",
        "admin_get_bot",
        &[BOT],
        None,
    ),
    (
        "admin_put_bot",
        PUT,
        "DeleteBot",
        "admin_delete_bot",
        &[BOT],
        None,
    ),
    // A key.
    (
        "admin_create_api_key",
        CREATED,
        "ListApiKeys",
        "admin_list_api_keys",
        &[BOT],
        None,
    ),
    (
        "admin_create_api_key",
        CREATED,
        "DeleteApiKey",
        "admin_delete_api_key",
        &[BOT, ("key", "$response.body#/id")],
        None,
    ),
    // An integration: see INTEGRATION_LINKS; and what only its configuration leads to.
    (
        "admin_put_integration",
        PUT,
        "GetIntegration",
        "admin_get_integration",
        &[BOT, INTEGRATION],
        None,
    ),
    (
        "admin_put_integration",
        PUT,
        "DeleteIntegration",
        "admin_delete_integration",
        &[BOT, INTEGRATION],
        None,
    ),
    // A session: its status, events, verification, cancellation — and the user's connection.
    (
        "sessions_create",
        CREATED,
        "GetSession",
        "sessions_status",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_create",
        CREATED,
        "SessionEvents",
        "sessions_events",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_create",
        CREATED,
        "VerifySession",
        "sessions_verify",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_create",
        CREATED,
        "CancelSession",
        "sessions_cancel",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_create",
        CREATED,
        "AccessToken",
        "tokens_access_token",
        &[BOT, ("integration", "$response.body#/integration")],
        Some(r#"{"session_id": "$response.body#/id", "user_id": "$response.body#/user_id"}"#),
    ),
    (
        "sessions_create",
        CREATED,
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
        "sessions_create",
        OK,
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
        CREATED,
        "GetSession",
        "sessions_status",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_pre_authorize",
        CREATED,
        "CancelSession",
        "sessions_cancel",
        &[BOT, SESSION],
        None,
    ),
    (
        "sessions_cancel",
        OK,
        "GetSession",
        "sessions_status",
        &[BOT, ("id", "$request.path.id")],
        None,
    ),
    // A channel, a profile, a webhook secret.
    (
        "channels_put",
        PUT,
        "GetChannel",
        "channels_get",
        &[BOT, ("name", "$request.path.name")],
        None,
    ),
    (
        "channels_put",
        PUT,
        "DeleteChannel",
        "channels_delete",
        &[BOT, ("name", "$request.path.name")],
        None,
    ),
    (
        "profiles_create",
        CREATED,
        "GetProfile",
        "profiles_get",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "profiles_create",
        CREATED,
        "UpdateProfile",
        "profiles_update",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "profiles_create",
        CREATED,
        "DeleteProfile",
        "profiles_delete",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
    (
        "profiles_create",
        CREATED,
        "PutIntegration",
        "admin_put_integration",
        &[BOT],
        Some(r#"{"provider": "oauth2", "profile": "$response.body#/id"}"#),
    ),
    (
        "admin_create_webhook_secret",
        CREATED,
        "ListWebhookSecrets",
        "admin_list_webhook_secrets",
        &[BOT],
        None,
    ),
    (
        "admin_create_webhook_secret",
        CREATED,
        "DeleteWebhookSecret",
        "admin_delete_webhook_secret",
        &[BOT, ("id", "$response.body#/id")],
        None,
    ),
];

/// The success bodies, named after what they describe (so a client — or a fuzzer building a
/// pool of resources — knows which `id` is which). Written here beside the other additions
/// because the views are built with `json!` from the stored records (`admin::bot_view`,
/// `profiles::view`, `tokens::connection_view`, …); `Session` is derived from the typed
/// `sessions::SessionView`. Where a view shows every field of a record, `additionalProperties:
/// false` holds it to exactly these: a secret added to a record cannot slip into its view.
fn views(session: serde_json::Value) -> Vec<(&'static str, serde_json::Value)> {
    use crate::domain::ids::{SESSION_ID_PATTERN, SLUG_PATTERN, USER_ID_PATTERN};
    use serde_json::json;
    let time = json!({"type": "string", "format": "date-time"});
    let url = json!({"type": "string", "format": "uri"});
    let slug = json!({"type": "string", "pattern": SLUG_PATTERN});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let nullable = |t: &str| json!({"type": [t, "null"]});
    let list = |field: &str, item: &str, cursor: bool| {
        let mut v = json!({
            "type": "object",
            "required": [field],
            "properties": {field: {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")}}},
            "additionalProperties": false,
        });
        if cursor {
            v["required"] = json!([field, "next_cursor"]);
            v["properties"]["next_cursor"] = json!({
                "type": ["string", "null"],
                "description": "the cursor of the next page; null on the last page",
            });
        }
        v
    };
    vec![
        (
            "Bot",
            json!({
                "type": "object",
                "required": ["id", "name", "allowed_return_hosts", "allowed_webhook_hosts", "created_at", "updated_at"],
                "properties": {
                    "id": slug,
                    "name": {"type": "string"},
                    "webhook_url": url,
                    "allowed_return_hosts": strings,
                    "allowed_webhook_hosts": strings,
                    "disabled_webhooks": {
                        "description": "webhook URLs that answered 410 Gone: nothing is sent to them until the bot is updated",
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["url", "since"],
                            "properties": {"url": url, "since": time},
                            "additionalProperties": false,
                        },
                    },
                    "identity_issuer": {
                        "type": "object",
                        "required": ["issuer", "client_id", "client_secret_set"],
                        "properties": {
                            "issuer": {"type": "string"},
                            "client_id": {"type": "string"},
                            "client_secret_set": {"type": "boolean"},
                        },
                        "additionalProperties": false,
                    },
                    "created_at": time,
                    "updated_at": time,
                },
                "additionalProperties": false,
            }),
        ),
        ("BotList", list("bots", "Bot", true)),
        (
            "ApiKey",
            json!({
                "type": "object",
                "required": ["id", "bot", "role", "name", "created_at"],
                "properties": {
                    "id": {"type": "string", "pattern": "^key_[A-Za-z0-9_-]+$"},
                    "bot": slug,
                    "role": {"type": "string", "enum": ["runtime", "admin"]},
                    "name": nullable("string"),
                    "created_at": time,
                },
                "additionalProperties": false,
            }),
        ),
        (
            "NewApiKey",
            json!({
                "description": "a key as created: the only time `key` is shown",
                "type": "object",
                "required": ["id", "bot", "role", "name", "created_at", "key", "note"],
                "properties": {
                    "id": {"type": "string", "pattern": "^key_[A-Za-z0-9_-]+$"},
                    "bot": slug,
                    "role": {"type": "string", "enum": ["runtime", "admin"]},
                    "name": nullable("string"),
                    "created_at": time,
                    "key": {"type": "string", "pattern": "^alk_[A-Za-z0-9_-]+$"},
                    "note": {"type": "string"},
                },
                "additionalProperties": false,
            }),
        ),
        ("ApiKeyList", list("keys", "ApiKey", false)),
        (
            "Integration",
            json!({
                "type": "object",
                "required": ["bot", "name", "provider", "mode", "profile", "verification", "display_name", "enabled", "created_at", "updated_at"],
                "properties": {
                    "bot": slug,
                    "name": slug,
                    "provider": {"type": "string", "enum": ["salesforce", "oauth2"]},
                    "mode": {"type": "string", "enum": ["user", "pre_authorized"]},
                    "profile": {"type": "string", "description": "`system`, or the id of a custom profile"},
                    "scopes": strings,
                    "link_ttl_seconds": {"type": "integer"},
                    "verification": {"type": "string", "enum": ["none", "code"]},
                    "salesforce": {
                        "type": "object",
                        "required": ["environment"],
                        "properties": {
                            "environment": {"type": "string", "enum": ["production", "sandbox", "my_domain"]},
                            "host": url,
                        },
                        "additionalProperties": false,
                    },
                    "display_name": {"type": "string"},
                    "enabled": {"type": "boolean"},
                    "callback_url": {
                        "description": "the redirect URI to register at the app (when the app is configured; not on PUT)",
                        "type": "string",
                        "format": "uri",
                    },
                    "created_at": time,
                    "updated_at": time,
                },
                "additionalProperties": false,
            }),
        ),
        (
            "IntegrationList",
            list("integrations", "Integration", false),
        ),
        ("Session", session),
        ("SessionList", list("sessions", "Session", false)),
        (
            "AlreadyAuthorized",
            json!({
                "description": "no session: the user already has a working connection (create without `force`)",
                "type": "object",
                "required": ["status", "integration", "user_id", "conversation_id", "connection"],
                "properties": {
                    "status": {"const": "already_authorized"},
                    "integration": slug,
                    "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
                    "conversation_id": nullable("string"),
                    "connection": {
                        "type": "object",
                        "required": ["identity", "scopes", "created_at"],
                        "properties": {"identity": {"type": "object"}, "scopes": strings, "created_at": time},
                        "additionalProperties": false,
                    },
                },
                "additionalProperties": false,
            }),
        ),
        (
            "WebhookSecret",
            json!({
                "type": "object",
                "required": ["id", "created_at"],
                "properties": {"id": {"type": "string", "pattern": "^whs_[A-Za-z0-9_-]+$"}, "created_at": time},
                "additionalProperties": false,
            }),
        ),
        (
            "NewWebhookSecret",
            json!({
                "description": "a signing secret as created: the only time `secret` is shown",
                "type": "object",
                "required": ["id", "secret", "created_at", "note"],
                "properties": {
                    "id": {"type": "string", "pattern": "^whs_[A-Za-z0-9_-]+$"},
                    "secret": {"type": "string"},
                    "created_at": time,
                    "note": {"type": "string"},
                },
                "additionalProperties": false,
            }),
        ),
        ("WebhookSecretList", list("secrets", "WebhookSecret", false)),
        (
            "Delivery",
            json!({
                "type": "object",
                "required": ["id", "type", "session_id", "url", "state", "attempts", "last_error", "created_at"],
                "properties": {
                    "id": {"type": "string"},
                    "type": {"type": "string"},
                    "session_id": {"description": "null for an event about a connection", "type": ["string", "null"], "pattern": SESSION_ID_PATTERN},
                    "url": nullable("string"),
                    "state": {"type": "string", "enum": ["dead", "pending"]},
                    "attempts": {"type": "integer", "minimum": 0},
                    "last_error": nullable("string"),
                    "created_at": time,
                },
                "additionalProperties": false,
            }),
        ),
        ("DeliveryList", list("deliveries", "Delivery", false)),
        (
            "Channel",
            json!({
                "description": "the channel's settings (those of its `type`), never its secrets: `secret_set` (not for `webhook`) and, for Slack, `signing_secret_set` and the `interactions_url` to register",
                "type": "object",
                "required": ["type", "name", "created_at", "updated_at"],
                "properties": {
                    "type": {"type": "string", "enum": ["slack", "teams", "telegram", "whatsapp", "matrix", "webhook"]},
                    "name": slug,
                    "secret_set": {"type": "boolean"},
                    "signing_secret_set": {"type": "boolean"},
                    "interactions_url": url,
                    "created_at": time,
                    "updated_at": time,
                },
            }),
        ),
        ("ChannelList", list("channels", "Channel", false)),
        (
            "Profile",
            json!({
                "type": "object",
                "required": ["id", "name", "type", "client_id", "client_secret_set", "authorization_url", "token_url", "refresh_token_url", "scopes", "revoke_url", "userinfo_url", "extra_authorize_params", "client_auth", "callback_url", "created_at", "updated_at"],
                "properties": {
                    "id": {"type": "string", "pattern": "^prof_[A-Za-z0-9_-]+$"},
                    "name": {"type": "string"},
                    "type": {"const": "oauth2"},
                    "client_id": {"type": "string"},
                    "client_secret_set": {"type": "boolean"},
                    "authorization_url": url,
                    "token_url": url,
                    "refresh_token_url": url,
                    "scopes": strings,
                    "revoke_url": {"type": ["string", "null"], "format": "uri"},
                    "userinfo_url": {"type": ["string", "null"], "format": "uri"},
                    "extra_authorize_params": {"type": "object", "additionalProperties": {"type": "string"}},
                    "client_auth": {"type": "string", "enum": ["basic", "body"]},
                    "callback_url": url,
                    "created_at": time,
                    "updated_at": time,
                },
                "additionalProperties": false,
            }),
        ),
        ("ProfileList", list("profiles", "Profile", false)),
        (
            "Connection",
            json!({
                "description": "a user's (or, as `_bot`, the bot-wide) connection: never its tokens",
                "type": "object",
                "required": ["user_id", "status", "identity", "scopes", "instance_url", "created_at", "refreshed_at", "access_expires_at", "last_error"],
                "properties": {
                    "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
                    "status": {"type": "string"},
                    "identity": {"type": "object"},
                    "scopes": strings,
                    "instance_url": nullable("string"),
                    "created_at": time,
                    "refreshed_at": {"type": ["string", "null"], "format": "date-time"},
                    "access_expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "last_error": nullable("string"),
                },
                "additionalProperties": false,
            }),
        ),
        ("ConnectionList", list("connections", "Connection", true)),
        (
            "AccessToken",
            json!({
                "type": "object",
                "required": ["access_token", "token_type", "expires_at", "instance_url", "scopes", "identity"],
                "properties": {
                    "access_token": {"type": "string"},
                    "token_type": {"type": "string"},
                    "expires_at": {"type": ["string", "null"], "format": "date-time"},
                    "instance_url": nullable("string"),
                    "scopes": strings,
                    "identity": {"type": "object"},
                },
                "additionalProperties": false,
            }),
        ),
        (
            "Disconnected",
            json!({
                "type": "object",
                "required": ["user_id", "status", "revoked_at_provider"],
                "properties": {
                    "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
                    "status": {"const": "revoked"},
                    "revoked_at_provider": {"type": "boolean"},
                },
                "additionalProperties": false,
            }),
        ),
        (
            "ConnectionCheck",
            json!({
                "description": "`ok` with the identity the provider returned, or not `ok` with the error",
                "type": "object",
                "required": ["ok", "checked_at"],
                "properties": {
                    "ok": {"type": "boolean"},
                    "identity": {"type": "object"},
                    "error": {"type": "string"},
                    "checked_at": time,
                },
                "additionalProperties": false,
            }),
        ),
    ]
}

/// Which success response has which body (a component of [`views`]).
const SUCCESS: &[(&str, &str, &str)] = &[
    ("admin_put_bot", "200", "Bot"),
    ("admin_put_bot", "201", "Bot"),
    ("admin_get_bot", "200", "Bot"),
    ("admin_list_bots", "200", "BotList"),
    ("admin_create_api_key", "201", "NewApiKey"),
    ("admin_list_api_keys", "200", "ApiKeyList"),
    ("admin_put_integration", "200", "Integration"),
    ("admin_put_integration", "201", "Integration"),
    ("admin_get_integration", "200", "Integration"),
    ("admin_list_integrations", "200", "IntegrationList"),
    ("admin_create_webhook_secret", "201", "NewWebhookSecret"),
    ("admin_list_webhook_secrets", "200", "WebhookSecretList"),
    ("admin_list_deliveries", "200", "DeliveryList"),
    ("channels_put", "200", "Channel"),
    ("channels_put", "201", "Channel"),
    ("channels_get", "200", "Channel"),
    ("channels_list", "200", "ChannelList"),
    ("profiles_create", "201", "Profile"),
    ("profiles_get", "200", "Profile"),
    ("profiles_update", "200", "Profile"),
    ("profiles_list", "200", "ProfileList"),
    ("sessions_create", "201", "Session"),
    ("sessions_create", "200", "AlreadyAuthorized"),
    ("sessions_pre_authorize", "201", "Session"),
    ("sessions_status", "200", "Session"),
    ("sessions_cancel", "200", "Session"),
    ("sessions_verify", "200", "Session"),
    ("sessions_list", "200", "SessionList"),
    ("tokens_access_token", "200", "AccessToken"),
    ("tokens_connection", "200", "Connection"),
    ("tokens_list_connections", "200", "ConnectionList"),
    ("tokens_disconnect", "200", "Disconnected"),
    ("tokens_check", "200", "ConnectionCheck"),
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
            patterns::<NewBotPath>(),
            patterns::<IntegrationPath>(),
            patterns::<NewIntegrationPath>(),
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
