//! A fake WhatsApp Cloud API (Meta Graph) `messages` endpoint (CHANNELS.md §4).
//!
//! The daemon's `api_base_url` is [`WhatsAppFake::api_base_url`] (`{base}/v23.0`); sends are
//! `POST {api_base_url}/{phone_number_id}/messages` with `Authorization: Bearer <token>` and a
//! JSON body. There is no edit or delete: the Cloud API has none.
//!
//! Documented behaviours it enforces:
//! - Errors are Graph error objects `{"error":{"message":"(#code) …","type":"OAuthException",
//!   "code":N,"error_data":{"messaging_product":"whatsapp","details":"…"},"fbtrace_id":"…"}}`.
//!   A wrong or missing token → 401 code 190 (`Invalid OAuth access token - Cannot parse access
//!   token`, with Graph's `WWW-Authenticate`); another phone number id → 400 code 100
//!   `GraphMethodException` "Unsupported post request…".
//! - `messaging_product` must be `"whatsapp"`, `to` and `type` are required (code 100).
//! - `type: "interactive"` needs `interactive.type: "cta_url"`: `body.text` ≤1024 (required),
//!   `action.name: "cta_url"`, `action.parameters.display_text` ≤20 and an absolute http(s)
//!   `url` (required), optional `header` (`type: "text"`, `text` ≤60) and `footer.text` ≤60.
//!   Missing pieces → 131008, bad values → 131009. `type: "text"` needs `text.body` ≤4096.
//!   Both are free-form messages: outside the 24-hour customer-service window (see
//!   [`WhatsAppFake::open_window`]) they fail with 131047 "Re-engagement message".
//! - `type: "template"` (`template.name`, `template.language.code`, optional `components`, a
//!   URL button being `{"type":"button","sub_type":"url","index":"0","parameters":[{"type":
//!   "text","text":…}]}`) is accepted whatever the window, if the template was registered
//!   ([`WhatsAppFake::register_template`]); else HTTP 404 code 132001 "Template name does not
//!   exist in the translation".
//! - Success: `{"messaging_product":"whatsapp","contacts":[{"input":to,"wa_id":digits}],
//!   "messages":[{"id":"wamid.…","message_status":"accepted"}]}`.
//! - Rate limits (armed) are error objects only, no `Retry-After`: 130429 (throughput, HTTP
//!   429), 131056 (business↔user pair), 80007 (WABA), 4 (app).
//!
//! Deviations: 131047 is answered synchronously, where the real API often answers 200 with a
//! `wamid` and reports the failure later on the `messages` status webhook (no webhooks are sent
//! here); a missing `type` is refused (the Cloud API defaults it to `text`); interactive types
//! other than `cta_url`, media headers and message types other than text/interactive/template
//! are refused (the daemon sends none); HTTP statuses of rate-limit codes differ between
//! Meta's mirrors, so adapters must key on `error.code`, not on the status.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use url::Url;

use super::{bearer, chars, header_value, lock, random_alphanumeric, serve};

/// The Graph API version the fake serves.
pub const VERSION: &str = "v23.0";
/// Error codes [`WhatsAppFake::rate_limit_next`] takes.
pub const RATE_LIMIT_CODES: [u32; 4] = [130429, 131056, 80007, 4];
const REENGAGEMENT: &str = "Message failed to send because more than 24 hours have passed since the customer last replied to this number.";

/// Handle to a running fake Cloud API. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct WhatsAppFake {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// What the daemon's `api_base_url` must be set to: `{base_url}/v23.0`.
    pub api_base_url: String,
    inner: Arc<Inner>,
}

/// A message the fake accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct WhatsAppMessage {
    /// `wamid.…`
    pub id: String,
    /// `to` as sent.
    pub to: String,
    /// Its digits: the recipient's WhatsApp id.
    pub wa_id: String,
    /// `text`, `interactive` or `template`.
    pub kind: String,
    /// The whole request body.
    pub body: Value,
}

/// One request as the fake received and answered it.
#[derive(Clone, Debug)]
pub struct WhatsAppRequest {
    pub phone_number_id: String,
    /// The JSON body (`Value::String` of the raw text when it was not JSON).
    pub body: Value,
    /// The `Authorization` header verbatim.
    pub authorization: Option<String>,
    pub status: u16,
    /// `error.code` of a failure.
    pub error_code: Option<u32>,
}

struct Inner {
    token: String,
    phone_number_id: String,
    state: Mutex<WhatsAppState>,
}

struct Armed {
    status: u16,
    code: u32,
    message: String,
    details: String,
}

struct WhatsAppState {
    /// Recipients (digits) whose customer-service window is open.
    open_windows: HashSet<String>,
    templates: HashSet<String>,
    messages: Vec<WhatsAppMessage>,
    rate_limited: Option<(usize, u32)>,
    failures: VecDeque<Armed>,
    requests: Vec<WhatsAppRequest>,
}

struct Reply {
    status: u16,
    body: Value,
}

fn graph_error(status: u16, kind: &str, code: u32, message: &str, details: Option<&str>) -> Reply {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": format!("A{}", random_alphanumeric(22)),
    });
    if let Some(details) = details {
        error["error_data"] = json!({ "messaging_product": "whatsapp", "details": details });
    }
    Reply {
        status,
        body: json!({ "error": error }),
    }
}

/// A request-shape error: 100 for top-level parameters.
fn invalid(message: &str) -> Reply {
    graph_error(400, "OAuthException", 100, message, None)
}

/// 131008: a required nested parameter is missing.
fn missing(parameter: &str) -> Reply {
    graph_error(
        400,
        "OAuthException",
        131008,
        "(#131008) Required parameter is missing",
        Some(&format!("The parameter {parameter} is required.")),
    )
}

/// 131009: a parameter has a value the API does not take.
fn not_valid(details: &str) -> Reply {
    graph_error(
        400,
        "OAuthException",
        131009,
        "(#131009) Parameter value is not valid",
        Some(details),
    )
}

fn rate_limit(code: u32) -> Reply {
    let (status, message, details) = match code {
        130429 => (
            429,
            "(#130429) Rate limit hit",
            "Cloud API message throughput has been reached.",
        ),
        131056 => (
            400,
            "(#131056) (Business Account, Consumer Account) pair rate limit hit",
            "Message failed to send because there were too many messages sent from this phone number to the same phone number in a short period of time.",
        ),
        80007 => (
            400,
            "(#80007) Rate limit issues",
            "The WhatsApp Business Account has reached its rate limit.",
        ),
        _ => (
            400,
            "(#4) Application request limit reached",
            "The app has reached its API call rate limit.",
        ),
    };
    graph_error(status, "OAuthException", code, message, Some(details))
}

fn digits(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

impl WhatsAppFake {
    /// Bind 127.0.0.1:0 and serve the business phone number `phone_number_id`, reachable with
    /// the system-user `token`.
    pub async fn spawn(token: &str, phone_number_id: &str) -> WhatsAppFake {
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            phone_number_id: phone_number_id.to_owned(),
            state: Mutex::new(WhatsAppState {
                open_windows: HashSet::new(),
                templates: HashSet::new(),
                messages: Vec::new(),
                rate_limited: None,
                failures: VecDeque::new(),
                requests: Vec::new(),
            }),
        });
        let app = Router::new()
            .route(
                &format!("/{VERSION}/{{phone_number_id}}/messages"),
                post(messages),
            )
            .fallback(unknown_path)
            .with_state(inner.clone());
        let base_url = serve(app, "WhatsApp").await;
        WhatsAppFake {
            api_base_url: format!("{base_url}/{VERSION}"),
            base_url,
            inner,
        }
    }

    /// The customer wrote in: free-form messages to `number` (any formatting, e.g.
    /// `+1 650-555-1234`) are allowed.
    pub fn open_window(&self, number: &str) {
        lock(&self.inner.state).open_windows.insert(digits(number));
    }

    /// The 24 hours have passed: free-form messages to `number` fail with 131047.
    pub fn close_window(&self, number: &str) {
        lock(&self.inner.state).open_windows.remove(&digits(number));
    }

    /// An approved template (any language).
    pub fn register_template(&self, name: &str) {
        lock(&self.inner.state).templates.insert(name.to_owned());
    }

    /// The next `n` authorized sends fail with rate-limit `code`, one of [`RATE_LIMIT_CODES`]
    /// (130429 throughput as HTTP 429, 131056 pair limit, 80007 WABA, 4 app).
    pub fn rate_limit_next(&self, n: usize, code: u32) {
        assert!(
            RATE_LIMIT_CODES.contains(&code),
            "not a WhatsApp rate-limit code: {code}"
        );
        lock(&self.inner.state).rate_limited = (n > 0).then_some((n, code));
    }

    /// The next authorized send (after any armed rate limit) fails with this Graph error,
    /// e.g. `(400, 131026, "(#131026) Message undeliverable", "…")`. Calls queue up.
    pub fn fail_next(&self, status: u16, code: u32, message: &str, details: &str) {
        lock(&self.inner.state).failures.push_back(Armed {
            status,
            code,
            message: message.to_owned(),
            details: details.to_owned(),
        });
    }

    /// The accepted messages to `number` (any formatting), oldest first.
    pub fn messages(&self, number: &str) -> Vec<WhatsAppMessage> {
        let wa_id = digits(number);
        lock(&self.inner.state)
            .messages
            .iter()
            .filter(|m| m.wa_id == wa_id)
            .cloned()
            .collect()
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<WhatsAppRequest> {
        lock(&self.inner.state).requests.clone()
    }
}

async fn unknown_path(uri: Uri) -> Response {
    let reply = graph_error(
        400,
        "OAuthException",
        2500,
        &format!("Unknown path components: {}", uri.path()),
        None,
    );
    (StatusCode::BAD_REQUEST, Json(reply.body)).into_response()
}

async fn messages(
    State(inner): State<Arc<Inner>>,
    Path(phone_number_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body).ok();
    let mut st = lock(&inner.state);
    let reply = handle(&inner, &mut st, &phone_number_id, &headers, parsed.as_ref());
    st.requests.push(WhatsAppRequest {
        phone_number_id,
        body: parsed.unwrap_or_else(|| Value::String(String::from_utf8_lossy(&body).into_owned())),
        authorization: header_value(&headers, header::AUTHORIZATION),
        status: reply.status,
        error_code: reply.body["error"]["code"]
            .as_u64()
            .and_then(|c| u32::try_from(c).ok()),
    });
    drop(st);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(reply.body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        let challenge = "OAuth \"Facebook Platform\" \"invalid_token\" \"Invalid OAuth access token - Cannot parse access token\"";
        if let Ok(value) = challenge.parse() {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
    }
    response
}

fn handle(
    inner: &Inner,
    st: &mut WhatsAppState,
    phone_number_id: &str,
    headers: &HeaderMap,
    parsed: Option<&Value>,
) -> Reply {
    if bearer(headers).as_deref() != Some(inner.token.as_str()) {
        return graph_error(
            401,
            "OAuthException",
            190,
            "Invalid OAuth access token - Cannot parse access token",
            None,
        );
    }
    if phone_number_id != inner.phone_number_id {
        return graph_error(
            400,
            "GraphMethodException",
            100,
            &format!(
                "Unsupported post request. Object with ID '{phone_number_id}' does not exist, cannot be loaded due to missing permissions, or does not support this operation. Please read the Graph API documentation at https://developers.facebook.com/docs/graph-api"
            ),
            None,
        );
    }
    if let Some((left, code)) = st.rate_limited.as_mut() {
        let code = *code;
        *left -= 1;
        if *left == 0 {
            st.rate_limited = None;
        }
        return rate_limit(code);
    }
    if let Some(armed) = st.failures.pop_front() {
        return graph_error(
            armed.status,
            "OAuthException",
            armed.code,
            &armed.message,
            Some(&armed.details),
        );
    }
    let empty = Map::new();
    let body = parsed.and_then(Value::as_object).unwrap_or(&empty);
    match body.get("messaging_product").and_then(Value::as_str) {
        None => return invalid("(#100) The parameter messaging_product is required."),
        Some("whatsapp") => {}
        Some(other) => {
            return invalid(&format!(
                "(#100) Param messaging_product must be one of {{WHATSAPP}} - got \"{other}\"."
            ));
        }
    }
    if let Some(kind) = body.get("recipient_type") {
        if kind != "individual" && kind != "group" {
            return invalid(&format!(
                "(#100) Param recipient_type must be one of {{INDIVIDUAL, GROUP}} - got {kind}."
            ));
        }
    }
    let Some(to) = body.get("to").and_then(Value::as_str) else {
        return invalid("(#100) The parameter to is required.");
    };
    let wa_id = digits(to);
    if wa_id.is_empty() {
        return invalid("(#100) Invalid parameter");
    }
    let Some(kind) = body.get("type").and_then(Value::as_str) else {
        return invalid("(#100) The parameter type is required.");
    };
    let checked = match kind {
        "text" => text_message(body),
        "interactive" => cta_url_message(body),
        "template" => template_message(st, body),
        other => Err(invalid(&format!(
            "(#100) Invalid parameter: type '{other}' (the fake models text, interactive and template)"
        ))),
    };
    if let Err(reply) = checked {
        return reply;
    }
    if kind != "template" && !st.open_windows.contains(&wa_id) {
        return graph_error(
            400,
            "OAuthException",
            131047,
            "(#131047) Re-engagement message",
            Some(REENGAGEMENT),
        );
    }
    let id = format!("wamid.HBgL{}", random_alphanumeric(48));
    st.messages.push(WhatsAppMessage {
        id: id.clone(),
        to: to.to_owned(),
        wa_id: wa_id.clone(),
        kind: kind.to_owned(),
        body: Value::Object(body.clone()),
    });
    Reply {
        status: 200,
        body: json!({
            "messaging_product": "whatsapp",
            "contacts": [{ "input": to, "wa_id": wa_id }],
            "messages": [{ "id": id, "message_status": "accepted" }],
        }),
    }
}

/// A string at `value[key]` of at most `max` characters: missing → 131008, else 131009.
fn bounded<'a>(value: &'a Value, key: &str, name: &str, max: usize) -> Result<&'a str, Reply> {
    match value.get(key) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::String(s)) if s.is_empty() => Err(missing(name)),
        Some(Value::String(s)) if chars(s) > max => Err(not_valid(&format!(
            "{name} is too long: {} characters, at most {max} allowed.",
            chars(s)
        ))),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(not_valid(&format!("{name} must be a string."))),
    }
}

fn text_message(body: &Map<String, Value>) -> Result<(), Reply> {
    let Some(text) = body.get("text") else {
        return Err(missing("text"));
    };
    bounded(text, "body", "text['body']", 4096)?;
    if text.get("preview_url").is_some_and(|v| !v.is_boolean()) {
        return Err(not_valid("text['preview_url'] must be a boolean."));
    }
    Ok(())
}

fn cta_url_message(body: &Map<String, Value>) -> Result<(), Reply> {
    let Some(interactive) = body.get("interactive") else {
        return Err(missing("interactive"));
    };
    match interactive.get("type").and_then(Value::as_str) {
        None => return Err(missing("interactive['type']")),
        Some("cta_url") => {}
        Some(other) => {
            return Err(not_valid(&format!(
                "interactive['type'] '{other}' is not modelled by the fake (the daemon sends cta_url)."
            )));
        }
    }
    let Some(message_body) = interactive.get("body") else {
        return Err(missing("interactive['body']"));
    };
    bounded(message_body, "text", "interactive['body']['text']", 1024)?;
    if let Some(header) = interactive.get("header") {
        if header.get("type").and_then(Value::as_str) != Some("text") {
            return Err(not_valid(
                "interactive['header']['type'] must be text (media headers are not modelled by the fake).",
            ));
        }
        bounded(header, "text", "interactive['header']['text']", 60)?;
    }
    if let Some(footer) = interactive.get("footer") {
        bounded(footer, "text", "interactive['footer']['text']", 60)?;
    }
    let Some(action) = interactive.get("action") else {
        return Err(missing("interactive['action']"));
    };
    match action.get("name").and_then(Value::as_str) {
        None => return Err(missing("interactive['action']['name']")),
        Some("cta_url") => {}
        Some(other) => {
            return Err(not_valid(&format!(
                "interactive['action']['name'] must be cta_url, got '{other}'."
            )));
        }
    }
    let Some(parameters) = action.get("parameters") else {
        return Err(missing("interactive['action']['parameters']"));
    };
    bounded(
        parameters,
        "display_text",
        "interactive['action']['parameters']['display_text']",
        20,
    )?;
    let url = bounded(
        parameters,
        "url",
        "interactive['action']['parameters']['url']",
        usize::MAX,
    )?;
    let absolute = Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
    if !absolute {
        return Err(not_valid(&format!(
            "interactive['action']['parameters']['url'] '{url}' is not a valid URL."
        )));
    }
    Ok(())
}

fn template_message(st: &WhatsAppState, body: &Map<String, Value>) -> Result<(), Reply> {
    let Some(template) = body.get("template") else {
        return Err(missing("template"));
    };
    let name = bounded(template, "name", "template['name']", 512)?;
    let Some(language) = template.get("language") else {
        return Err(missing("template['language']"));
    };
    let code = bounded(language, "code", "template['language']['code']", 16)?;
    let components = match template.get("components") {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(c)) => c.as_slice(),
        Some(_) => return Err(not_valid("template['components'] must be an array.")),
    };
    for (i, component) in components.iter().enumerate() {
        let at = format!("template['components'][{i}]");
        let kind = component.get("type").and_then(Value::as_str);
        match kind {
            Some("header" | "body" | "button") => {}
            Some(other) => return Err(not_valid(&format!("{at}['type'] '{other}' is not valid."))),
            None => return Err(missing(&format!("{at}['type']"))),
        }
        if kind == Some("button") {
            match component.get("sub_type").and_then(Value::as_str) {
                Some("url" | "quick_reply") => {}
                Some(other) => {
                    return Err(not_valid(&format!(
                        "{at}['sub_type'] '{other}' is not valid."
                    )));
                }
                None => return Err(missing(&format!("{at}['sub_type']"))),
            }
            let index = match component.get("index") {
                Some(Value::String(s)) => s.parse::<u32>().ok(),
                Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
                _ => return Err(missing(&format!("{at}['index']"))),
            };
            if index.is_none_or(|i| i > 9) {
                return Err(not_valid(&format!(
                    "{at}['index'] must be between 0 and 9."
                )));
            }
        }
        let parameters = match component.get("parameters") {
            None | Some(Value::Null) if kind != Some("button") => &[][..],
            Some(Value::Array(p)) => p.as_slice(),
            _ => return Err(missing(&format!("{at}['parameters']"))),
        };
        for (j, parameter) in parameters.iter().enumerate() {
            let at = format!("{at}['parameters'][{j}]");
            if parameter.get("type").and_then(Value::as_str) != Some("text") {
                return Err(not_valid(&format!(
                    "{at}['type'] must be text (other parameter types are not modelled by the fake)."
                )));
            }
            bounded(parameter, "text", &format!("{at}['text']"), 32768)?;
        }
    }
    if !st.templates.contains(name) {
        return Err(graph_error(
            404,
            "OAuthException",
            132001,
            "(#132001) Template name does not exist in the translation",
            Some(&format!("template name ({name}) does not exist in {code}")),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- self-tests

mod tests {
    use super::*;

    const TOKEN: &str = "EAAGfakeSystemUserToken1234567890";
    const PHONE_ID: &str = "106540352242922";
    const CUSTOMER: &str = "+16505551234";

    struct Answer {
        status: u16,
        headers: reqwest::header::HeaderMap,
        body: Value,
    }

    async fn send_as(
        fake: &WhatsAppFake,
        token: Option<&str>,
        phone_id: &str,
        body: Value,
    ) -> Answer {
        let mut request = reqwest::Client::new()
            .post(format!("{}/{phone_id}/messages", fake.api_base_url))
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.json().await.unwrap(),
        }
    }

    async fn send(fake: &WhatsAppFake, body: Value) -> Answer {
        send_as(fake, Some(TOKEN), PHONE_ID, body).await
    }

    fn cta_url() -> Value {
        json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": CUSTOMER,
            "type": "interactive",
            "interactive": {
                "type": "cta_url",
                "header": {"type": "text", "text": "Salesforce"},
                "body": {"text": "Tap the button to authorize your account."},
                "footer": {"text": "Link expires in 10 minutes"},
                "action": {"name": "cta_url",
                           "parameters": {"display_text": "Authorize", "url": "https://auth.example.com/l/7f3c"}}
            }
        })
    }

    fn template(name: &str) -> Value {
        json!({
            "messaging_product": "whatsapp",
            "to": CUSTOMER,
            "type": "template",
            "template": {
                "name": name,
                "language": {"code": "en_US"},
                "components": [{"type": "button", "sub_type": "url", "index": "0",
                                "parameters": [{"type": "text", "text": "7f3c"}]}]
            }
        })
    }

    #[tokio::test]
    async fn a_cta_url_inside_the_window_is_accepted_and_recorded() {
        let fake = WhatsAppFake::spawn(TOKEN, PHONE_ID).await;
        fake.open_window("1 (650) 555-1234");
        let answer = send(&fake, cta_url()).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert_eq!(answer.body["messaging_product"], "whatsapp");
        assert_eq!(
            answer.body["contacts"],
            json!([{"input": CUSTOMER, "wa_id": "16505551234"}])
        );
        let id = answer.body["messages"][0]["id"].as_str().unwrap();
        assert!(id.starts_with("wamid."), "{id}");
        assert_eq!(answer.body["messages"][0]["message_status"], "accepted");

        let messages = fake.messages(CUSTOMER);
        assert_eq!(messages.len(), 1);
        assert_eq!(
            (messages[0].id.as_str(), messages[0].kind.as_str()),
            (id, "interactive")
        );
        assert_eq!(messages[0].body, cta_url());
        let requests = fake.requests();
        assert_eq!(
            requests[0].authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(
            (
                requests[0].phone_number_id.as_str(),
                requests[0].status,
                requests[0].error_code
            ),
            (PHONE_ID, 200, None)
        );
    }

    #[tokio::test]
    async fn tokens_and_phone_number_ids_are_checked() {
        let fake = WhatsAppFake::spawn(TOKEN, PHONE_ID).await;
        fake.open_window(CUSTOMER);
        for token in [None, Some("EAAGwrong")] {
            let answer = send_as(&fake, token, PHONE_ID, cta_url()).await;
            assert_eq!(answer.status, 401);
            let error = &answer.body["error"];
            assert_eq!(
                error["message"],
                "Invalid OAuth access token - Cannot parse access token"
            );
            assert_eq!(
                (&error["type"], &error["code"]),
                (&json!("OAuthException"), &json!(190))
            );
            assert!(error["fbtrace_id"].is_string());
            assert!(answer.headers.contains_key("www-authenticate"));
        }
        let other = send_as(&fake, Some(TOKEN), "999", cta_url()).await;
        assert_eq!(other.status, 400);
        assert_eq!(
            (&other.body["error"]["code"], &other.body["error"]["type"]),
            (&json!(100), &json!("GraphMethodException"))
        );
        let old_version = reqwest::Client::new()
            .post(format!("{}/v19.0/{PHONE_ID}/messages", fake.base_url))
            .bearer_auth(TOKEN)
            .json(&cta_url())
            .send()
            .await
            .unwrap();
        assert_eq!(old_version.status(), 400);
        assert!(fake.messages(CUSTOMER).is_empty());
        assert_eq!(
            fake.requests().len(),
            3,
            "the unknown path is not a messages request"
        );
    }

    #[tokio::test]
    async fn wrong_shapes_are_refused_with_graph_codes() {
        let fake = WhatsAppFake::spawn(TOKEN, PHONE_ID).await;
        fake.open_window(CUSTOMER);
        let edit = |pointer: &str, value: Value| {
            let mut body = cta_url();
            *body.pointer_mut(pointer).unwrap() = value;
            body
        };
        let remove = |key: &str| {
            let mut body = cta_url();
            body.as_object_mut().unwrap().remove(key);
            body
        };
        let cases = [
            (remove("messaging_product"), 100),
            (edit("/messaging_product", json!("sms")), 100),
            (remove("to"), 100),
            (remove("type"), 100),
            (
                edit("/interactive/body/text", json!("x".repeat(1025))),
                131009,
            ),
            (edit("/interactive/body", json!({})), 131008),
            (
                edit(
                    "/interactive/action/parameters/display_text",
                    json!("x".repeat(21)),
                ),
                131009,
            ),
            (
                edit("/interactive/action/parameters/url", json!(null)),
                131008,
            ),
            (edit("/interactive/action/name", json!("cta")), 131009),
            (
                edit("/interactive/header/text", json!("x".repeat(61))),
                131009,
            ),
            (
                edit("/interactive/footer/text", json!("x".repeat(61))),
                131009,
            ),
            (edit("/interactive/type", json!("button")), 131009),
        ];
        for (body, code) in cases {
            let answer = send(&fake, body.clone()).await;
            assert_eq!(answer.status, 400, "{body}");
            assert_eq!(answer.body["error"]["code"], code, "{body}");
            let message = answer.body["error"]["message"].as_str().unwrap();
            assert!(message.starts_with(&format!("(#{code})")), "{message}");
        }
        // The documented limits themselves are fine.
        let longest = edit(
            "/interactive/action/parameters/display_text",
            json!("x".repeat(20)),
        );
        assert_eq!(send(&fake, longest).await.status, 200);
        assert_eq!(fake.messages(CUSTOMER).len(), 1);
    }

    #[tokio::test]
    async fn outside_the_window_only_registered_templates_go_out() {
        let fake = WhatsAppFake::spawn(TOKEN, PHONE_ID).await;
        let closed = send(&fake, cta_url()).await;
        assert_eq!(closed.status, 400);
        assert_eq!(
            closed.body["error"]["message"],
            "(#131047) Re-engagement message"
        );
        assert_eq!(closed.body["error"]["code"], 131047);
        assert_eq!(
            closed.body["error"]["error_data"],
            json!({"messaging_product": "whatsapp", "details": REENGAGEMENT})
        );
        let unknown = send(&fake, template("auth_link")).await;
        assert_eq!(unknown.body["error"]["code"], 132001);
        assert_eq!(
            unknown.body["error"]["message"],
            "(#132001) Template name does not exist in the translation"
        );

        fake.register_template("auth_link");
        let sent = send(&fake, template("auth_link")).await;
        assert_eq!(sent.status, 200, "{}", sent.body);
        let mut bad_button = template("auth_link");
        bad_button["template"]["components"][0]["parameters"] = json!([{"type": "image"}]);
        assert_eq!(send(&fake, bad_button).await.body["error"]["code"], 131009);
        let mut no_language = template("auth_link");
        no_language["template"]
            .as_object_mut()
            .unwrap()
            .remove("language");
        assert_eq!(send(&fake, no_language).await.body["error"]["code"], 131008);

        fake.open_window(CUSTOMER);
        assert_eq!(send(&fake, cta_url()).await.status, 200);
        fake.close_window(CUSTOMER);
        assert_eq!(send(&fake, cta_url()).await.body["error"]["code"], 131047);
        let kinds: Vec<_> = fake
            .messages(CUSTOMER)
            .iter()
            .map(|m| m.kind.clone())
            .collect();
        assert_eq!(kinds, ["template", "interactive"]);
    }

    #[tokio::test]
    async fn armed_rate_limits_are_error_objects_without_retry_after() {
        let fake = WhatsAppFake::spawn(TOKEN, PHONE_ID).await;
        fake.open_window(CUSTOMER);
        fake.rate_limit_next(1, 130429);
        let throughput = send(&fake, cta_url()).await;
        assert_eq!(throughput.status, 429);
        assert_eq!(throughput.body["error"]["code"], 130429);
        assert_eq!(
            throughput.body["error"]["message"],
            "(#130429) Rate limit hit"
        );
        assert!(!throughput.headers.contains_key("retry-after"));

        fake.rate_limit_next(2, 131056);
        for _ in 0..2 {
            let pair = send(&fake, cta_url()).await;
            assert_eq!(pair.body["error"]["code"], 131056);
            assert_eq!(
                pair.body["error"]["error_data"]["messaging_product"],
                "whatsapp"
            );
            assert!(!pair.headers.contains_key("retry-after"));
        }
        fake.fail_next(
            400,
            131026,
            "(#131026) Message undeliverable",
            "Message failed to send.",
        );
        assert_eq!(send(&fake, cta_url()).await.body["error"]["code"], 131026);
        assert_eq!(send(&fake, cta_url()).await.status, 200);
        let codes: Vec<_> = fake.requests().iter().map(|r| r.error_code).collect();
        assert_eq!(
            codes,
            [Some(130429), Some(131056), Some(131056), Some(131026), None]
        );
        assert_eq!(fake.messages(CUSTOMER).len(), 1);
    }
}
