//! A fake Microsoft Teams bot back end: the Entra ID (AAD) client-credentials token endpoint
//! and the Bot Framework Connector's activity API, on one server (CHANNELS.md §2).
//!
//! Daemon settings: `login_base_url` = [`TeamsFake::login_base_url`] (`{base}`), tokens from
//! `POST {login_base_url}/{tenant}/oauth2/v2.0/token` where `tenant` is `botframework.com`
//! (multi-tenant app) or the tenant id ([`TeamsFake::spawn_single_tenant`]); `service_url` =
//! [`TeamsFake::service_url`] (`{base}/teams/`, trailing slash), activities at
//! `POST {service_url}v3/conversations/{conversationId}/activities[/{activityId}]`,
//! `PUT`/`DELETE …/activities/{activityId}`.
//!
//! Documented behaviours it enforces:
//! - Token: form body `grant_type=client_credentials&client_id&client_secret&scope=
//!   https://api.botframework.com/.default`; success `{"token_type":"Bearer","expires_in":N,
//!   "ext_expires_in":N,"access_token":"…"}` (N = 3600 unless [`TeamsFake::set_expires_in`]);
//!   failures in AAD's shape `{"error","error_description":"AADSTS…","error_codes",
//!   "timestamp","trace_id","correlation_id","error_uri"}`: wrong secret → 401 `invalid_client`
//!   AADSTS7000215; unknown client id, or a single-tenant app asking `botframework.com` → 400
//!   `unauthorized_client` AADSTS700016; unknown tenant → 400 `invalid_request` AADSTS90002;
//!   another scope → 400 `invalid_scope` AADSTS70011; another grant → 400
//!   `unsupported_grant_type` AADSTS70003; a missing `grant_type`/`client_id`/`scope` (or a body
//!   that is not a form) → 400 `invalid_request` AADSTS900144, a missing secret → 401
//!   `invalid_client` AADSTS7000218. Every request is recorded with the token it was issued, if
//!   any ([`TeamsFake::token_requests`]); only the registered app id with its own secret gets
//!   one, and every token issued is a fresh random string.
//! - Connector calls need `Authorization: Bearer <token this fake issued, not expired>`, else
//!   401 with exactly `{"message":"Authorization has been denied for this request."}` (not the
//!   ErrorResponse shape). Every call is recorded with the bearer token it carried
//!   ([`TeamsFake::requests`]), so a test can see a token that reached a Connector it was not
//!   issued for.
//! - Errors are `ErrorResponse {"error":{"code","message"}}`: unknown conversation → 404
//!   `ConversationNotFound`; bot removed → 403 `BotNotInConversationRoster`; bad activity → 400
//!   `BadArgument`; body over 28 KiB → 413 `MessageSizeTooBig`; unknown activity id on
//!   PUT/DELETE → 404 `ActivityNotFoundInConversation`; throttling → 429 `Throttled` with
//!   `Retry-After`. Every connector response carries `X-Correlating-OperationId`.
//! - The activity must be `type: "message"` with `text` and/or attachments; each attachment is
//!   `application/vnd.microsoft.card.adaptive` whose `content` is an AdaptiveCard (`version`
//!   1.0–1.5, the highest Teams renders for bots; `body` an array of typed elements, TextBlocks
//!   with `text`; `actions` of `Action.OpenUrl` with a `title` and an absolute http(s) `url`).
//! - POST answers 201 `{"id":"<activity id>"}`; PUT replaces the stored activity, 200 `{"id"}`;
//!   DELETE answers 200 with an empty body.
//!
//! Deviations: Hero/Sign-in cards and action types other than `Action.OpenUrl` are refused
//! (stricter than Teams: the daemon sends only Adaptive `Action.OpenUrl`); HTTP Basic client
//! authentication at the token endpoint and certificate credentials are not modelled; tokens
//! are opaque (JWT-shaped) strings, not verifiable JWTs; Teams' own per-conversation pacing is
//! not simulated, only armed throttling.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use url::Url;

use super::{bearer, header_value, lock, media_type, random_alphanumeric, serve};

/// The tenant path segment of multi-tenant bots.
pub const MULTI_TENANT: &str = "botframework.com";
/// The one scope the Connector's tokens are issued for.
pub const SCOPE: &str = "https://api.botframework.com/.default";
/// The largest request body the Connector takes (Teams documents "~28 KB").
pub const MAX_BODY: usize = 28 * 1024;
const DENIED: &str = "Authorization has been denied for this request.";
const ADAPTIVE: &str = "application/vnd.microsoft.card.adaptive";

/// Handle to a running fake Teams back end. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct TeamsFake {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// What the daemon's `login_base_url` must be set to: the same as `base_url`.
    pub login_base_url: String,
    /// What the daemon's `service_url` must be set to: `{base_url}/teams/`.
    pub service_url: String,
    inner: Arc<Inner>,
}

/// An activity as it stands now (PUTs applied, deleted ones gone).
#[derive(Clone, Debug, PartialEq)]
pub struct TeamsActivity {
    pub conversation_id: String,
    pub id: String,
    /// The Activity JSON as last sent (POST or PUT).
    pub activity: Value,
    /// Set when it was posted as a reply (`POST …/activities/{activityId}`).
    pub reply_to_id: Option<String>,
    /// Successful PUTs of this activity.
    pub updates: u32,
}

/// One request to the token endpoint.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    /// The tenant path segment (`botframework.com` or a tenant id).
    pub tenant: String,
    /// The decoded form body.
    pub form: HashMap<String, String>,
    pub status: u16,
    /// AAD's `error`, if refused.
    pub error: Option<String>,
    /// The token issued, if one was: each successful request gets a token of its own.
    pub access_token: Option<String>,
}

/// One request to the Connector.
#[derive(Clone, Debug)]
pub struct ConnectorRequest {
    /// `POST`, `PUT` or `DELETE`.
    pub method: String,
    pub conversation_id: String,
    pub activity_id: Option<String>,
    /// The JSON body (`Value::Null` when empty, `Value::String` when not JSON).
    pub body: Value,
    /// The `Authorization` header verbatim.
    pub authorization: Option<String>,
    /// The token of a `Bearer` authorization, whether or not this fake issued it.
    pub bearer: Option<String>,
    pub status: u16,
    /// `error.code` of an ErrorResponse, or `"Unauthorized"` for the 401.
    pub error_code: Option<String>,
}

struct Inner {
    app_id: String,
    app_password: String,
    /// `None`: multi-tenant (tokens from `botframework.com`).
    tenant: Option<String>,
    state: Mutex<TeamsState>,
}

struct Conversation {
    bot_removed: bool,
    activities: Vec<TeamsActivity>,
}

struct TeamsState {
    expires_in: u64,
    /// Access token → when it stops being accepted.
    tokens: HashMap<String, SystemTime>,
    conversations: HashMap<String, Conversation>,
    next_activity: u64,
    throttled: Option<(usize, u64)>,
    failures: VecDeque<(u16, String)>,
    token_requests: Vec<TokenRequest>,
    requests: Vec<ConnectorRequest>,
}

struct Reply {
    status: u16,
    /// `None`: empty body.
    body: Option<Value>,
    retry_after: Option<u64>,
}

impl Reply {
    fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
            retry_after: None,
        }
    }

    fn error(status: u16, code: &str, message: &str) -> Reply {
        Reply::json(
            status,
            json!({ "error": { "code": code, "message": message } }),
        )
    }

    fn bad_argument(message: &str) -> Reply {
        Reply::error(400, "BadArgument", message)
    }
}

impl TeamsFake {
    /// A multi-tenant bot registration: tokens come from the `botframework.com` tenant.
    pub async fn spawn(app_id: &str, app_password: &str) -> TeamsFake {
        TeamsFake::start(app_id, app_password, None).await
    }

    /// A single-tenant bot registration: tokens come from `tenant_id` only.
    pub async fn spawn_single_tenant(
        app_id: &str,
        app_password: &str,
        tenant_id: &str,
    ) -> TeamsFake {
        TeamsFake::start(app_id, app_password, Some(tenant_id.to_owned())).await
    }

    async fn start(app_id: &str, app_password: &str, tenant: Option<String>) -> TeamsFake {
        let inner = Arc::new(Inner {
            app_id: app_id.to_owned(),
            app_password: app_password.to_owned(),
            tenant,
            state: Mutex::new(TeamsState {
                expires_in: 3600,
                tokens: HashMap::new(),
                conversations: HashMap::new(),
                next_activity: 0,
                throttled: None,
                failures: VecDeque::new(),
                token_requests: Vec::new(),
                requests: Vec::new(),
            }),
        });
        let activity = post(reply_activity)
            .put(update_activity)
            .delete(delete_activity);
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route(
                "/teams/v3/conversations/{conversation}/activities",
                post(send_activity),
            )
            .route(
                "/teams/v3/conversations/{conversation}/activities/{activity}",
                activity,
            )
            .with_state(inner.clone());
        let base_url = serve(app, "Teams").await;
        TeamsFake {
            login_base_url: base_url.clone(),
            service_url: format!("{base_url}/teams/"),
            base_url,
            inner,
        }
    }

    /// `expires_in` (and `ext_expires_in`) of tokens issued from now on; a token stops being
    /// accepted that many seconds after issue (0: at once).
    pub fn set_expires_in(&self, secs: u64) {
        lock(&self.inner.state).expires_in = secs;
    }

    /// Every token issued so far stops being accepted (the next Connector call with one gets
    /// the 401), as if they had all expired.
    pub fn expire_tokens(&self) {
        lock(&self.inner.state).tokens.clear();
    }

    /// A conversation the bot is in (e.g. `a:1Xyz…` for a personal chat).
    pub fn add_conversation(&self, id: &str) {
        lock(&self.inner.state).conversations.insert(
            id.to_owned(),
            Conversation {
                bot_removed: false,
                activities: Vec::new(),
            },
        );
    }

    /// The bot was removed from the conversation: calls answer 403 `BotNotInConversationRoster`.
    pub fn remove_bot(&self, conversation_id: &str) {
        if let Some(c) = lock(&self.inner.state)
            .conversations
            .get_mut(conversation_id)
        {
            c.bot_removed = true;
        }
    }

    /// The next `n` authorized Connector calls answer 429 `Throttled`, `Retry-After: secs`.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        lock(&self.inner.state).throttled = (n > 0).then_some((n, retry_after_secs));
    }

    /// The next authorized Connector call (after any armed throttling) answers `status` with
    /// ErrorResponse `code`, e.g. `(412, "PreconditionFailed")`, `(502, "ServiceError")`.
    /// Calls queue up.
    pub fn fail_next(&self, status: u16, code: &str) {
        lock(&self.inner.state)
            .failures
            .push_back((status, code.to_owned()));
    }

    /// The live activities of a conversation, oldest first.
    pub fn activities(&self, conversation_id: &str) -> Vec<TeamsActivity> {
        lock(&self.inner.state)
            .conversations
            .get(conversation_id)
            .map(|c| c.activities.clone())
            .unwrap_or_default()
    }

    /// Every token request, in order (successful or not).
    pub fn token_requests(&self) -> Vec<TokenRequest> {
        lock(&self.inner.state).token_requests.clone()
    }

    /// Every Connector request, in order.
    pub fn requests(&self) -> Vec<ConnectorRequest> {
        lock(&self.inner.state).requests.clone()
    }
}

// ------------------------------------------------------------ token endpoint

/// An AAD error response; `code` is the number after `AADSTS`.
fn aad_error(status: u16, error: &str, code: u32, message: &str) -> (u16, Value) {
    let trace_id = uuid::Uuid::new_v4();
    let correlation_id = uuid::Uuid::new_v4();
    let now = time::OffsetDateTime::now_utc();
    let timestamp = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let description = format!(
        "AADSTS{code}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"
    );
    (
        status,
        json!({
            "error": error,
            "error_description": description,
            "error_codes": [code],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={code}"),
        }),
    )
}

fn missing(parameter: &str) -> (u16, Value) {
    aad_error(
        400,
        "invalid_request",
        900144,
        &format!("The request body must contain the following parameter: '{parameter}'."),
    )
}

async fn token(
    State(inner): State<Arc<Inner>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let is_form = media_type(&headers).as_deref() == Some("application/x-www-form-urlencoded");
    let form: HashMap<String, String> = if is_form {
        url::form_urlencoded::parse(&body).into_owned().collect()
    } else {
        HashMap::new()
    };
    let mut st = lock(&inner.state);
    let (status, reply) = issue(&inner, &mut st, &tenant, &form);
    st.token_requests.push(TokenRequest {
        tenant,
        form,
        status,
        error: reply["error"].as_str().map(str::to_owned),
        access_token: reply["access_token"].as_str().map(str::to_owned),
    });
    drop(st);
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CACHE_CONTROL, "no-store, no-cache")],
        Json(reply),
    )
        .into_response()
}

fn issue(
    inner: &Inner,
    st: &mut TeamsState,
    tenant: &str,
    form: &HashMap<String, String>,
) -> (u16, Value) {
    let directory = match (&inner.tenant, tenant) {
        (None, MULTI_TENANT) => "Bot Framework".to_owned(),
        (Some(own), t) if own == t => own.clone(),
        // A single-tenant app is unknown to the Bot Framework directory.
        (Some(_), MULTI_TENANT) => "Bot Framework".to_owned(),
        (_, t) => {
            return aad_error(
                400,
                "invalid_request",
                90002,
                &format!(
                    "Tenant '{t}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud."
                ),
            );
        }
    };
    let Some(grant_type) = form.get("grant_type") else {
        return missing("grant_type");
    };
    if grant_type != "client_credentials" {
        return aad_error(
            400,
            "unsupported_grant_type",
            70003,
            &format!("The app requested an unsupported grant type '{grant_type}'."),
        );
    }
    let Some(client_id) = form.get("client_id") else {
        return missing("client_id");
    };
    let registered_here = inner.tenant.is_none() || tenant != MULTI_TENANT;
    if *client_id != inner.app_id || !registered_here {
        return aad_error(
            400,
            "unauthorized_client",
            700016,
            &format!(
                "Application with identifier '{client_id}' was not found in the directory '{directory}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
            ),
        );
    }
    let Some(scope) = form.get("scope") else {
        return missing("scope");
    };
    if scope != SCOPE {
        return aad_error(
            400,
            "invalid_scope",
            70011,
            &format!(
                "The provided value for the input parameter 'scope' is not valid. The scope {scope} is not valid."
            ),
        );
    }
    match form.get("client_secret") {
        None => aad_error(
            401,
            "invalid_client",
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
        Some(secret) if *secret != inner.app_password => aad_error(
            401,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ),
        Some(_) => {
            let access_token = format!(
                "eyJ{}.eyJ{}.{}",
                random_alphanumeric(60),
                random_alphanumeric(400),
                random_alphanumeric(342)
            );
            let until = SystemTime::now() + Duration::from_secs(st.expires_in);
            st.tokens.insert(access_token.clone(), until);
            (
                200,
                json!({
                    "token_type": "Bearer",
                    "expires_in": st.expires_in,
                    "ext_expires_in": st.expires_in,
                    "access_token": access_token,
                }),
            )
        }
    }
}

// ----------------------------------------------------------------- Connector

async fn send_activity(
    State(inner): State<Arc<Inner>>,
    Path(conversation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    connector(&inner, Method::POST, conversation, None, &headers, &body)
}

async fn reply_activity(
    State(inner): State<Arc<Inner>>,
    Path((conversation, activity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    connector(
        &inner,
        Method::POST,
        conversation,
        Some(activity),
        &headers,
        &body,
    )
}

async fn update_activity(
    State(inner): State<Arc<Inner>>,
    Path((conversation, activity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    connector(
        &inner,
        Method::PUT,
        conversation,
        Some(activity),
        &headers,
        &body,
    )
}

async fn delete_activity(
    State(inner): State<Arc<Inner>>,
    Path((conversation, activity)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    connector(
        &inner,
        Method::DELETE,
        conversation,
        Some(activity),
        &headers,
        &body,
    )
}

fn connector(
    inner: &Inner,
    method: Method,
    conversation_id: String,
    activity_id: Option<String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let parsed = if body.is_empty() {
        Some(Value::Null)
    } else {
        serde_json::from_slice::<Value>(body).ok()
    };
    let mut st = lock(&inner.state);
    let reply = handle(
        &mut st,
        &method,
        &conversation_id,
        activity_id.as_deref(),
        headers,
        body,
        parsed.as_ref(),
    );
    let error_code = match &reply.body {
        Some(b) if b["message"] == DENIED => Some("Unauthorized".to_owned()),
        Some(b) => b["error"]["code"].as_str().map(str::to_owned),
        None => None,
    };
    st.requests.push(ConnectorRequest {
        method: method.to_string(),
        conversation_id,
        activity_id,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(body).into_owned())),
        authorization: header_value(headers, header::AUTHORIZATION),
        bearer: bearer(headers),
        status: reply.status,
        error_code,
    });
    drop(st);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = match reply.body {
        Some(body) => (status, Json(body)).into_response(),
        None => status.into_response(),
    };
    let operation_id = random_alphanumeric(32).to_ascii_lowercase();
    let headers = response.headers_mut();
    if let Ok(value) = operation_id.parse() {
        headers.insert("x-correlating-operationid", value);
    }
    if let Some(secs) = reply.retry_after {
        headers.insert(header::RETRY_AFTER, secs.into());
    }
    response
}

fn handle(
    st: &mut TeamsState,
    method: &Method,
    conversation_id: &str,
    activity_id: Option<&str>,
    headers: &HeaderMap,
    raw: &[u8],
    parsed: Option<&Value>,
) -> Reply {
    let now = SystemTime::now();
    let authorized = bearer(headers)
        .and_then(|t| st.tokens.get(&t).copied())
        .is_some_and(|until| now < until);
    if !authorized {
        return Reply::json(401, json!({ "message": DENIED }));
    }
    if let Some((left, secs)) = st.throttled.as_mut() {
        let secs = *secs;
        *left -= 1;
        if *left == 0 {
            st.throttled = None;
        }
        let mut reply = Reply::error(
            429,
            "Throttled",
            "The bot is sending too many messages to this conversation; retry after the Retry-After interval.",
        );
        reply.retry_after = Some(secs);
        return reply;
    }
    if let Some((status, code)) = st.failures.pop_front() {
        return Reply::error(status, &code, &format!("Armed failure: {code}"));
    }
    let Some(conversation) = st.conversations.get(conversation_id) else {
        return Reply::error(404, "ConversationNotFound", "Conversation not found.");
    };
    if conversation.bot_removed {
        return Reply::error(
            403,
            "BotNotInConversationRoster",
            "The bot is not part of the conversation roster.",
        );
    }
    let existing =
        activity_id.and_then(|id| conversation.activities.iter().position(|a| a.id == id));
    if *method == Method::DELETE {
        let Some(index) = existing else {
            return activity_not_found();
        };
        if let Some(c) = st.conversations.get_mut(conversation_id) {
            c.activities.remove(index);
        }
        return Reply {
            status: 200,
            body: None,
            retry_after: None,
        };
    }
    if raw.len() > MAX_BODY {
        return Reply::error(413, "MessageSizeTooBig", "The request entity is too large.");
    }
    if media_type(headers).as_deref() != Some("application/json") {
        return Reply::bad_argument("The activity must be sent as application/json.");
    }
    let activity = match parsed {
        Some(Value::Object(a)) => a,
        _ => return Reply::bad_argument("The request body is not a valid Activity object."),
    };
    if let Err(why) = validate_activity(activity) {
        return Reply::bad_argument(&why);
    }
    let Some(c) = st.conversations.get_mut(conversation_id) else {
        return Reply::error(404, "ConversationNotFound", "Conversation not found.");
    };
    if *method == Method::PUT {
        let Some(index) = existing else {
            return activity_not_found();
        };
        let stored = &mut c.activities[index];
        stored.activity = Value::Object(activity.clone());
        stored.updates += 1;
        return Reply::json(200, json!({ "id": stored.id }));
    }
    st.next_activity += 1;
    let millis = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let id = (millis + u128::from(st.next_activity)).to_string();
    let Some(c) = st.conversations.get_mut(conversation_id) else {
        return Reply::error(404, "ConversationNotFound", "Conversation not found.");
    };
    c.activities.push(TeamsActivity {
        conversation_id: conversation_id.to_owned(),
        id: id.clone(),
        activity: Value::Object(activity.clone()),
        reply_to_id: activity_id.map(str::to_owned),
        updates: 0,
    });
    Reply::json(201, json!({ "id": id }))
}

fn activity_not_found() -> Reply {
    Reply::error(
        404,
        "ActivityNotFoundInConversation",
        "The activity was not found in the conversation.",
    )
}

fn validate_activity(activity: &Map<String, Value>) -> Result<(), String> {
    match activity.get("type").and_then(Value::as_str) {
        Some("message") => {}
        Some(other) => {
            return Err(format!(
                "Activity type '{other}' is not supported here; expected 'message'."
            ));
        }
        None => return Err("The activity has no type.".to_owned()),
    }
    let text = match activity.get("text") {
        None | Some(Value::Null) => "",
        Some(Value::String(s)) => s,
        Some(_) => return Err("Activity text must be a string.".to_owned()),
    };
    let attachments = match activity.get("attachments") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err("Activity attachments must be an array.".to_owned()),
    };
    if text.is_empty() && attachments.is_empty() {
        return Err("The message has neither text nor attachments.".to_owned());
    }
    for (i, attachment) in attachments.iter().enumerate() {
        let content_type = attachment["contentType"].as_str().unwrap_or("");
        if content_type != ADAPTIVE {
            return Err(format!(
                "attachments[{i}]: unsupported contentType '{content_type}'; expected '{ADAPTIVE}'."
            ));
        }
        adaptive_card(&attachment["content"])
            .map_err(|why| format!("attachments[{i}].content: {why}"))?;
    }
    Ok(())
}

fn adaptive_card(card: &Value) -> Result<(), String> {
    if card["type"] != "AdaptiveCard" {
        return Err("type must be 'AdaptiveCard'.".to_owned());
    }
    let version = card["version"].as_str().unwrap_or("");
    let supported = version
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)))
        .is_some_and(|(major, minor)| major == 1 && minor <= 5);
    if !supported {
        return Err(format!(
            "version '{version}' is not supported; bots may send 1.0 to 1.5."
        ));
    }
    let Some(body) = card["body"].as_array() else {
        return Err("body must be an array.".to_owned());
    };
    for (i, element) in body.iter().enumerate() {
        match element["type"].as_str() {
            Some("TextBlock") if !element["text"].is_string() => {
                return Err(format!("body[{i}]: a TextBlock needs text."));
            }
            Some(_) => {}
            None => return Err(format!("body[{i}]: element has no type.")),
        }
    }
    let actions = match card.get("actions") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => return Err("actions must be an array.".to_owned()),
    };
    for (i, action) in actions.iter().enumerate() {
        if action["type"] != "Action.OpenUrl" {
            return Err(format!("actions[{i}]: only Action.OpenUrl is accepted."));
        }
        if action["title"].as_str().is_none_or(str::is_empty) {
            return Err(format!("actions[{i}]: Action.OpenUrl needs a title."));
        }
        let url = action["url"].as_str().unwrap_or("");
        let absolute = Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
        if !absolute {
            return Err(format!(
                "actions[{i}]: url '{url}' is not an absolute http(s) URL."
            ));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- self-tests

mod tests {
    use super::*;

    const APP_ID: &str = "00000000-1111-2222-3333-444444444444";
    const APP_PASSWORD: &str = "fake~app.password_123";
    const TENANT: &str = "55555555-6666-7777-8888-999999999999";
    const CONVERSATION: &str = "a:1XyzPersonalChatWithAda";

    fn http() -> reqwest::Client {
        reqwest::Client::new()
    }

    async fn token_response(fake: &TeamsFake, tenant: &str, form: &[(&str, &str)]) -> (u16, Value) {
        let response = http()
            .post(format!(
                "{}/{tenant}/oauth2/v2.0/token",
                fake.login_base_url
            ))
            .form(form)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    fn credentials(secret: &str) -> Vec<(&'static str, String)> {
        vec![
            ("grant_type", "client_credentials".to_owned()),
            ("client_id", APP_ID.to_owned()),
            ("client_secret", secret.to_owned()),
            ("scope", SCOPE.to_owned()),
        ]
    }

    async fn get_token(fake: &TeamsFake, tenant: &str) -> String {
        let form = credentials(APP_PASSWORD);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = token_response(fake, tenant, &form).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Option<Value>,
    }

    async fn connector(
        fake: &TeamsFake,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut request = http().request(method, format!("{}{path}", fake.service_url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        Answer {
            status,
            headers,
            body: (!text.is_empty()).then(|| serde_json::from_str(&text).unwrap()),
        }
    }

    fn link_activity(title: &str) -> Value {
        json!({
            "type": "message",
            "text": "Authorize your Salesforce account to continue.",
            "attachments": [{
                "contentType": ADAPTIVE,
                "content": {
                    "type": "AdaptiveCard", "version": "1.5",
                    "body": [{"type": "TextBlock", "text": "Salesforce needs your permission.", "wrap": true}],
                    "actions": [{"type": "Action.OpenUrl", "title": title, "url": "https://auth.example.com/l/7f3c"}]
                }
            }]
        })
    }

    fn activities_path(conversation: &str) -> String {
        format!("v3/conversations/{conversation}/activities")
    }

    async fn bot() -> (TeamsFake, String) {
        let fake = TeamsFake::spawn(APP_ID, APP_PASSWORD).await;
        fake.add_conversation(CONVERSATION);
        let token = get_token(&fake, MULTI_TENANT).await;
        (fake, token)
    }

    #[tokio::test]
    async fn token_then_send_update_and_delete_an_activity() {
        let fake = TeamsFake::spawn(APP_ID, APP_PASSWORD).await;
        fake.add_conversation(CONVERSATION);
        fake.set_expires_in(1800);
        let form = credentials(APP_PASSWORD);
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (status, body) = token_response(&fake, MULTI_TENANT, &form).await;
        assert_eq!(status, 200);
        assert_eq!(
            (
                &body["token_type"],
                &body["expires_in"],
                &body["ext_expires_in"]
            ),
            (&json!("Bearer"), &json!(1800), &json!(1800))
        );
        let token = body["access_token"].as_str().unwrap();
        let requests = fake.token_requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(
            (requests[0].tenant.as_str(), requests[0].status),
            (MULTI_TENANT, 200)
        );
        assert_eq!(requests[0].form["scope"], SCOPE);

        let sent = connector(
            &fake,
            reqwest::Method::POST,
            &activities_path(CONVERSATION),
            Some(token),
            Some(link_activity("Authorize account")),
        )
        .await;
        assert_eq!(sent.status, 201);
        assert!(sent.headers.contains_key("x-correlating-operationid"));
        let id = sent.body.unwrap()["id"].as_str().unwrap().to_owned();
        let stored = fake.activities(CONVERSATION);
        assert_eq!(stored.len(), 1);
        assert_eq!(
            (stored[0].id.as_str(), &stored[0].activity),
            (id.as_str(), &link_activity("Authorize account"))
        );

        let done = json!({"type": "message", "text": "Connected ✓"});
        let path = format!("{}/{id}", activities_path(CONVERSATION));
        let updated = connector(
            &fake,
            reqwest::Method::PUT,
            &path,
            Some(token),
            Some(done.clone()),
        )
        .await;
        assert_eq!(
            (updated.status, updated.body),
            (200, Some(json!({"id": id})))
        );
        let stored = fake.activities(CONVERSATION);
        assert_eq!((&stored[0].activity, stored[0].updates), (&done, 1));

        let deleted = connector(&fake, reqwest::Method::DELETE, &path, Some(token), None).await;
        assert_eq!((deleted.status, deleted.body), (200, None));
        assert!(fake.activities(CONVERSATION).is_empty());
        let again = connector(&fake, reqwest::Method::PUT, &path, Some(token), Some(done)).await;
        assert_eq!(again.status, 404);
        assert_eq!(
            again.body.unwrap()["error"]["code"],
            "ActivityNotFoundInConversation"
        );
        let log: Vec<_> = fake
            .requests()
            .iter()
            .map(|r| (r.method.clone(), r.status))
            .collect();
        assert_eq!(
            log,
            [
                ("POST".to_owned(), 201),
                ("PUT".to_owned(), 200),
                ("DELETE".to_owned(), 200),
                ("PUT".to_owned(), 404)
            ]
        );
        assert_eq!(
            fake.token_requests().len(),
            1,
            "the connector calls took no new token"
        );
    }

    #[tokio::test]
    async fn the_token_endpoint_refuses_like_entra_id() {
        let fake = TeamsFake::spawn(APP_ID, APP_PASSWORD).await;
        let single = TeamsFake::spawn_single_tenant(APP_ID, APP_PASSWORD, TENANT).await;
        let good = credentials(APP_PASSWORD);
        let with = |key: &str, value: &str| -> Vec<(String, String)> {
            good.iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        if *k == key {
                            value.to_owned()
                        } else {
                            v.clone()
                        },
                    )
                })
                .collect()
        };
        let without = |key: &str| -> Vec<(String, String)> {
            good.iter()
                .filter(|(k, _)| *k != key)
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        };
        let cases = [
            (
                &fake,
                MULTI_TENANT,
                with("client_secret", "wrong"),
                401,
                "invalid_client",
                7000215,
            ),
            (
                &fake,
                MULTI_TENANT,
                without("client_secret"),
                401,
                "invalid_client",
                7000218,
            ),
            (
                &fake,
                MULTI_TENANT,
                with("client_id", "someone-else"),
                400,
                "unauthorized_client",
                700016,
            ),
            (
                &fake,
                MULTI_TENANT,
                with("scope", "https://graph.microsoft.com/.default"),
                400,
                "invalid_scope",
                70011,
            ),
            (
                &fake,
                MULTI_TENANT,
                with("grant_type", "password"),
                400,
                "unsupported_grant_type",
                70003,
            ),
            (
                &fake,
                MULTI_TENANT,
                without("grant_type"),
                400,
                "invalid_request",
                900144,
            ),
            (
                &fake,
                TENANT,
                with("client_id", APP_ID),
                400,
                "invalid_request",
                90002,
            ),
            (
                &single,
                MULTI_TENANT,
                with("client_id", APP_ID),
                400,
                "unauthorized_client",
                700016,
            ),
        ];
        for (server, tenant, form, status, error, code) in cases {
            let form: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (got, body) = token_response(server, tenant, &form).await;
            assert_eq!(
                (got, body["error"].as_str()),
                (status, Some(error)),
                "{body}"
            );
            assert_eq!(body["error_codes"], json!([code]));
            let description = body["error_description"].as_str().unwrap();
            assert!(
                description.starts_with(&format!("AADSTS{code}: ")),
                "{description}"
            );
            assert!(body["trace_id"].is_string() && body["correlation_id"].is_string());
        }
        // A JSON body is not a form: the parameters are missing.
        let json_body = http()
            .post(format!(
                "{}/{MULTI_TENANT}/oauth2/v2.0/token",
                fake.login_base_url
            ))
            .json(&json!({"grant_type": "client_credentials"}))
            .send()
            .await
            .unwrap();
        assert_eq!(json_body.status(), 400);
        // The single-tenant app gets tokens from its own tenant.
        get_token(&single, TENANT).await;
        assert_eq!(fake.token_requests().len(), 8);
        assert!(
            fake.token_requests()
                .iter()
                .all(|r| r.status != 200 && r.access_token.is_none())
        );
    }

    #[tokio::test]
    async fn connector_calls_need_a_live_token_this_fake_issued() {
        let (fake, token) = bot().await;
        let path = activities_path(CONVERSATION);
        let denied = json!({"message": "Authorization has been denied for this request."});
        for bad in [None, Some("not-a-token-we-issued")] {
            let answer = connector(
                &fake,
                reqwest::Method::POST,
                &path,
                bad,
                Some(link_activity("Go")),
            )
            .await;
            assert_eq!((answer.status, answer.body), (401, Some(denied.clone())));
        }
        assert_eq!(
            connector(
                &fake,
                reqwest::Method::POST,
                &path,
                Some(&token),
                Some(link_activity("Go"))
            )
            .await
            .status,
            201
        );

        fake.expire_tokens();
        let expired = connector(
            &fake,
            reqwest::Method::POST,
            &path,
            Some(&token),
            Some(link_activity("Go")),
        )
        .await;
        assert_eq!((expired.status, expired.body), (401, Some(denied.clone())));
        let fresh = get_token(&fake, MULTI_TENANT).await;
        assert_eq!(
            connector(
                &fake,
                reqwest::Method::POST,
                &path,
                Some(&fresh),
                Some(link_activity("Go"))
            )
            .await
            .status,
            201
        );
        // Every token is a new one, recorded with its request; every call with the bearer it
        // carried, issued here or not.
        let issued: Vec<_> = fake
            .token_requests()
            .into_iter()
            .map(|r| r.access_token.unwrap())
            .collect();
        assert_eq!(issued, [token.clone(), fresh.clone()]);
        let bearers: Vec<_> = fake.requests().into_iter().map(|r| r.bearer).collect();
        assert_eq!(
            bearers,
            [
                None,
                Some("not-a-token-we-issued".to_owned()),
                Some(token.clone()),
                Some(token.clone()),
                Some(fresh.clone())
            ]
        );

        // A zero lifetime: the token is dead on arrival.
        fake.set_expires_in(0);
        let dead = get_token(&fake, MULTI_TENANT).await;
        let answer = connector(
            &fake,
            reqwest::Method::POST,
            &path,
            Some(&dead),
            Some(link_activity("Go")),
        )
        .await;
        assert_eq!(answer.status, 401);
        assert_eq!(fake.activities(CONVERSATION).len(), 2);
        let codes: Vec<_> = fake
            .requests()
            .iter()
            .map(|r| r.error_code.clone())
            .collect();
        assert_eq!(
            codes
                .iter()
                .filter(|c| c.as_deref() == Some("Unauthorized"))
                .count(),
            4
        );
    }

    #[tokio::test]
    async fn conversations_and_activity_shapes_are_checked() {
        let (fake, token) = bot().await;
        fake.add_conversation("a:1Removed");
        fake.remove_bot("a:1Removed");
        let send = |conversation: &str, body: Value| {
            let path = activities_path(conversation);
            let fake = fake.clone();
            let token = token.clone();
            async move {
                connector(
                    &fake,
                    reqwest::Method::POST,
                    &path,
                    Some(&token),
                    Some(body),
                )
                .await
            }
        };
        let unknown = send("a:1Nobody", link_activity("Go")).await;
        assert_eq!(unknown.status, 404);
        assert_eq!(
            unknown.body.unwrap()["error"]["code"],
            "ConversationNotFound"
        );
        let removed = send("a:1Removed", link_activity("Go")).await;
        assert_eq!(removed.status, 403);
        assert_eq!(
            removed.body.unwrap()["error"]["code"],
            "BotNotInConversationRoster"
        );

        let edit = |pointer: &str, value: Value| {
            let mut activity = link_activity("Go");
            *activity.pointer_mut(pointer).unwrap() = value;
            activity
        };
        let bad = [
            edit("/type", json!("typing")),
            edit(
                "/attachments/0/contentType",
                json!("application/vnd.microsoft.card.hero"),
            ),
            edit("/attachments/0/content/version", json!("1.6")),
            edit("/attachments/0/content/type", json!("HeroCard")),
            edit(
                "/attachments/0/content/actions/0/type",
                json!("Action.Submit"),
            ),
            edit("/attachments/0/content/actions/0/url", json!("/relative")),
            edit("/attachments/0/content/actions/0/title", json!("")),
            edit(
                "/attachments/0/content/body/0",
                json!({"type": "TextBlock"}),
            ),
            json!({"type": "message"}),
        ];
        for activity in bad {
            let answer = send(CONVERSATION, activity.clone()).await;
            assert_eq!(answer.status, 400, "{activity}");
            assert_eq!(answer.body.unwrap()["error"]["code"], "BadArgument");
        }
        let huge = edit("/text", json!("x".repeat(MAX_BODY)));
        let answer = send(CONVERSATION, huge).await;
        assert_eq!(
            (
                answer.status,
                answer.body.unwrap()["error"]["code"].as_str()
            ),
            (413, Some("MessageSizeTooBig"))
        );
        assert!(fake.activities(CONVERSATION).is_empty());

        // Versions up to 1.5 and replies to an activity are fine.
        let older = send(
            CONVERSATION,
            edit("/attachments/0/content/version", json!("1.2")),
        )
        .await;
        let id = older.body.unwrap()["id"].as_str().unwrap().to_owned();
        let reply_path = format!("{}/{id}", activities_path(CONVERSATION));
        let reply = connector(
            &fake,
            reqwest::Method::POST,
            &reply_path,
            Some(&token),
            Some(json!({"type": "message", "text": "hi"})),
        )
        .await;
        assert_eq!(reply.status, 201);
        let stored = fake.activities(CONVERSATION);
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].reply_to_id.as_deref(), Some(id.as_str()));
        assert_ne!(stored[0].id, stored[1].id);
    }

    #[tokio::test]
    async fn armed_throttling_and_failures_answer_once_each() {
        let (fake, token) = bot().await;
        let path = activities_path(CONVERSATION);
        fake.throttle_next(2, 3);
        fake.fail_next(412, "PreconditionFailed");
        fake.fail_next(502, "ServiceError");
        for _ in 0..2 {
            let throttled = connector(
                &fake,
                reqwest::Method::POST,
                &path,
                Some(&token),
                Some(link_activity("Go")),
            )
            .await;
            assert_eq!(throttled.status, 429);
            assert_eq!(throttled.headers["retry-after"], "3");
            assert_eq!(throttled.body.unwrap()["error"]["code"], "Throttled");
        }
        for (status, code) in [(412, "PreconditionFailed"), (502, "ServiceError")] {
            let failed = connector(
                &fake,
                reqwest::Method::POST,
                &path,
                Some(&token),
                Some(link_activity("Go")),
            )
            .await;
            assert_eq!(failed.status, status);
            assert!(!failed.headers.contains_key("retry-after"));
            let body = failed.body.unwrap();
            assert_eq!(body["error"]["code"], code);
            assert!(body["error"]["message"].is_string());
        }
        assert!(fake.activities(CONVERSATION).is_empty());
        let ok = connector(
            &fake,
            reqwest::Method::POST,
            &path,
            Some(&token),
            Some(link_activity("Go")),
        )
        .await;
        assert_eq!(ok.status, 201);
        let codes: Vec<_> = fake
            .requests()
            .iter()
            .map(|r| (r.status, r.error_code.clone()))
            .collect();
        assert_eq!(
            codes,
            [
                (429, Some("Throttled".to_owned())),
                (429, Some("Throttled".to_owned())),
                (412, Some("PreconditionFailed".to_owned())),
                (502, Some("ServiceError".to_owned())),
                (201, None),
            ]
        );
    }
}
