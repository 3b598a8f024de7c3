//! A fake Slack Web API: `chat.postMessage`, `chat.postEphemeral`, `chat.update`,
//! `chat.delete` (CHANNELS.md §1).
//!
//! The daemon's `api_base_url` is [`SlackFake::api_base_url`] (`{base}/api`); methods are
//! `POST {api_base_url}/<method>` with a JSON body and `Authorization: Bearer <bot token>`.
//!
//! Documented behaviours it enforces:
//! - Every answer except rate limiting is HTTP 200; failures are `{"ok":false,"error":"<code>"}`.
//!   No `Authorization` header → `not_authed`; another token → `invalid_auth` (a token in a JSON
//!   body does not count: Slack reads JSON-bodied calls' tokens from the header only).
//! - Bodies must be `application/json` (a `charset` parameter is allowed, `utf-8` or
//!   `iso-8859-1`): no `Content-Type` → `missing_post_type`; another type → `invalid_post_type`;
//!   other charsets → `invalid_charset`; a body that is not JSON → `invalid_json`; JSON that is
//!   not an object → `json_not_object`.
//! - `channel` must be a channel added with [`SlackFake::add_channel`] (`channel_not_found`
//!   otherwise, including a missing `channel`), and the bot must be in it (`not_in_channel`, see
//!   [`SlackFake::add_channel_without_bot`]).
//! - Content: `text` or `blocks` is required (`no_text`). `blocks` must be a JSON array
//!   (`invalid_blocks_format`) of at most 50 blocks of the shapes the daemon sends, else
//!   `invalid_blocks` with Slack's `response_metadata.messages` explanation
//!   (`[ERROR] … [json-pointer:/blocks/…]`): `section` with a `mrkdwn`/`plain_text` text object
//!   (≤3000 chars), `actions` with 1–25 `button` elements (`text` plain_text ≤75 chars, `url`
//!   ≤3000, `action_id` ≤255, `value` ≤2000, `style` `primary|danger`, `accessibility_label`
//!   ≤75); `block_id` ≤255 and unique in the message; unknown block types or fields are refused.
//! - `chat.postEphemeral` needs `user`, a member of the channel (`user_not_in_channel`), and
//!   answers `{"ok":true,"message_ts":…}`. Ephemerals cannot be changed: `chat.update` and
//!   `chat.delete` on their ts answer `message_not_found`.
//! - `chat.update` keeps the previous `blocks` when none are given and removes them on `[]`;
//!   its `text` is capped at 4,000 chars (`msg_too_long`); unknown ts → `message_not_found`.
//! - Rate limiting is HTTP 429 with `Retry-After: <seconds>` and `{"ok":false,"error":"ratelimited"}`.
//!
//! Deviations, all deliberate: form-encoded bodies (which Slack accepts) are refused as
//! `invalid_post_type`, since the daemon sends JSON; `attachments`/`markdown_text` do not count
//! as content and block types other than `section`/`actions` are refused (stricter than Slack);
//! posting to a user ID (`U…`, which Slack turns into the app's DM) is `channel_not_found`;
//! Slack's own per-channel pacing is not simulated, only armed rate limits.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};

use super::{bearer, chars, header_value, lock, media_type, serve, unix_now};

/// The bot user the fake's bot token belongs to (`message.user` of its posts).
pub const BOT_USER_ID: &str = "U0FAKEBOT1";
/// The bot's `bot_id` (`message.bot_id`).
pub const BOT_ID: &str = "B0FAKEBOT1";
/// The workspace (`message.team`).
pub const TEAM_ID: &str = "T0FAKETEAM";

const METHODS: [&str; 4] = [
    "chat.postMessage",
    "chat.postEphemeral",
    "chat.update",
    "chat.delete",
];

/// Handle to a running fake Slack. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct SlackFake {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// What the daemon's `api_base_url` must be set to: `{base_url}/api`.
    pub api_base_url: String,
    inner: Arc<Inner>,
}

/// A message as it stands now (updates applied, deleted ones gone).
#[derive(Clone, Debug, PartialEq)]
pub struct SlackMessage {
    pub channel: String,
    pub ts: String,
    pub text: Option<String>,
    pub blocks: Option<Value>,
    /// Posted with `chat.postEphemeral`.
    pub ephemeral: bool,
    /// The recipient of an ephemeral; `None` for ordinary messages.
    pub user: Option<String>,
    pub thread_ts: Option<String>,
    /// As sent with `chat.postMessage` (`None`: not sent).
    pub unfurl_links: Option<bool>,
    pub unfurl_media: Option<bool>,
    /// Successful `chat.update` calls on this message.
    pub updates: u32,
}

/// One call as the fake received and answered it.
#[derive(Clone, Debug)]
pub struct SlackRequest {
    /// The method name from the path, e.g. `chat.postMessage`.
    pub method: String,
    /// The JSON body (`Value::String` of the raw text when it was not JSON).
    pub body: Value,
    /// The `Authorization` header verbatim.
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    /// The HTTP status answered (200 or 429).
    pub status: u16,
    /// The `error` code answered, if `ok:false`.
    pub error: Option<String>,
}

struct Inner {
    bot_token: String,
    state: Mutex<SlackState>,
}

struct Channel {
    bot_is_member: bool,
    members: HashSet<String>,
}

struct SlackState {
    /// `response_url` tokens handed out with clicks → (channel, ts) of their message.
    response_urls: HashMap<String, (String, String)>,
    /// Every POST to a `response_url` path, known or not: (token, body).
    replies: Vec<(String, Value)>,
    channels: HashMap<String, Channel>,
    /// Every live message, in posting order.
    messages: Vec<SlackMessage>,
    ts_base: u64,
    ts_seq: u64,
    rate_limited: Option<(usize, u64)>,
    failures: VecDeque<String>,
    requests: Vec<SlackRequest>,
}

/// What a handler decided; turned into the HTTP response and the request record.
struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(body: Value) -> Reply {
        Reply {
            status: 200,
            body,
            retry_after: None,
        }
    }

    fn error(code: &str) -> Reply {
        Reply::ok(json!({ "ok": false, "error": code }))
    }

    fn invalid_blocks(pointer: &str, message: &str) -> Reply {
        Reply::ok(json!({
            "ok": false,
            "error": "invalid_blocks",
            "response_metadata": {
                "messages": [format!("[ERROR] {message} [json-pointer:{pointer}]")],
            },
        }))
    }
}

impl SlackFake {
    /// Bind 127.0.0.1:0 and serve a workspace whose bot token is `bot_token`.
    pub async fn spawn(bot_token: &str) -> SlackFake {
        let inner = Arc::new(Inner {
            bot_token: bot_token.to_owned(),
            state: Mutex::new(SlackState {
                response_urls: HashMap::new(),
                replies: Vec::new(),
                channels: HashMap::new(),
                messages: Vec::new(),
                ts_base: unix_now(),
                ts_seq: 0,
                rate_limited: None,
                failures: VecDeque::new(),
                requests: Vec::new(),
            }),
        });
        let app = Router::new()
            .route("/api/{method}", post(api))
            .route("/actions/{token}", post(response_url))
            .with_state(inner.clone());
        let base_url = serve(app, "Slack").await;
        SlackFake {
            api_base_url: format!("{base_url}/api"),
            base_url,
            inner,
        }
    }

    /// The person `user` clicks the link button of the message `ts` in `channel`: like Slack,
    /// the fake sends the app's Interactivity Request URL a signed (`v0`, the app's signing
    /// secret) `block_actions` payload whose `response_url` (good for replacing the message, as
    /// for ephemerals) points back at the fake. Returns what the Request URL answered.
    pub async fn click(
        &self,
        channel: &str,
        ts: &str,
        user: &str,
        request_url: &str,
        signing_secret: &str,
    ) -> reqwest::StatusCode {
        self.click_with_response_url(channel, ts, user, request_url, signing_secret, None)
            .await
    }

    /// [`SlackFake::click`], with the payload's `response_url` replaced by `response_url` when
    /// given: what someone holding the signing secret could forge.
    pub async fn click_with_response_url(
        &self,
        channel: &str,
        ts: &str,
        user: &str,
        request_url: &str,
        signing_secret: &str,
        response_url: Option<&str>,
    ) -> reqwest::StatusCode {
        let (message, token) = {
            let mut st = lock(&self.inner.state);
            let m = st
                .messages
                .iter()
                .find(|m| m.channel == channel && m.ts == ts)
                .cloned()
                .expect("a posted message");
            let token = super::random_alphanumeric(24);
            st.response_urls
                .insert(token.clone(), (channel.to_owned(), ts.to_owned()));
            (m, token)
        };
        let button = message
            .blocks
            .as_ref()
            .and_then(|b| b.as_array())
            .and_then(|b| b.iter().find(|b| b["type"] == "actions"))
            .map(|a| a["elements"][0].clone())
            .unwrap_or(Value::Null);
        let payload = json!({
            "type": "block_actions",
            "user": {"id": user},
            "team": {"id": TEAM_ID},
            "channel": {"id": channel},
            "container": {"type": "message", "message_ts": ts, "channel_id": channel, "is_ephemeral": message.ephemeral},
            "actions": [{
                "type": "button",
                "action_id": button["action_id"],
                "block_id": "authlink",
                "value": button["value"],
                "action_ts": "1700000000.000001",
            }],
            "response_url": response_url.map_or_else(
                || format!("{}/actions/{token}", self.base_url),
                str::to_owned,
            ),
        });
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", &payload.to_string())
            .finish();
        let ts_now = unix_now().to_string();
        reqwest::Client::new()
            .post(request_url)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-slack-request-timestamp", &ts_now)
            .header(
                "x-slack-signature",
                signature(signing_secret, &ts_now, &body),
            )
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// A channel (or DM, `D…`) the bot is a member of, with these human members.
    pub fn add_channel(&self, id: &str, members: &[&str]) {
        self.insert_channel(id, true, members);
    }

    /// A channel that exists but that the bot has not joined: posts get `not_in_channel`.
    pub fn add_channel_without_bot(&self, id: &str) {
        self.insert_channel(id, false, &[]);
    }

    fn insert_channel(&self, id: &str, bot_is_member: bool, members: &[&str]) {
        let channel = Channel {
            bot_is_member,
            members: members.iter().map(|m| (*m).to_owned()).collect(),
        };
        lock(&self.inner.state)
            .channels
            .insert(id.to_owned(), channel);
    }

    /// The next `n` authenticated calls answer HTTP 429, `Retry-After: retry_after_secs`.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        lock(&self.inner.state).rate_limited = (n > 0).then_some((n, retry_after_secs));
    }

    /// The next authenticated call (after any armed rate limit) answers HTTP 200
    /// `{"ok":false,"error":error}` without doing anything, e.g. `fatal_error`, `token_revoked`.
    /// Calls queue up.
    pub fn fail_next(&self, error: &str) {
        lock(&self.inner.state).failures.push_back(error.to_owned());
    }

    /// The live messages of `channel` (ephemerals included), oldest first.
    pub fn messages(&self, channel: &str) -> Vec<SlackMessage> {
        lock(&self.inner.state)
            .messages
            .iter()
            .filter(|m| m.channel == channel)
            .cloned()
            .collect()
    }

    /// Every call received, in order.
    pub fn requests(&self) -> Vec<SlackRequest> {
        lock(&self.inner.state).requests.clone()
    }

    /// Every POST to a `response_url` path (`/actions/{token}`), in order, known or not: the
    /// token and the JSON body (`Null` when not JSON).
    pub fn replies(&self) -> Vec<(String, Value)> {
        lock(&self.inner.state).replies.clone()
    }
}

async fn api(
    State(inner): State<Arc<Inner>>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = String::from_utf8_lossy(&body).into_owned();
    let parsed = serde_json::from_str::<Value>(&raw).ok();
    let mut st = lock(&inner.state);
    let reply = handle(&inner, &mut st, &method, &headers, &raw, parsed.as_ref());
    st.requests.push(SlackRequest {
        method,
        body: parsed.unwrap_or(Value::String(raw)),
        authorization: header_value(&headers, header::AUTHORIZATION),
        content_type: header_value(&headers, header::CONTENT_TYPE),
        status: reply.status,
        error: reply.body["error"].as_str().map(str::to_owned),
    });
    drop(st);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    let mut response = (status, Json(reply.body)).into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

fn handle(
    inner: &Inner,
    st: &mut SlackState,
    method: &str,
    headers: &HeaderMap,
    raw: &str,
    parsed: Option<&Value>,
) -> Reply {
    if !METHODS.contains(&method) {
        return Reply::ok(json!({ "ok": false, "error": "unknown_method", "req_method": method }));
    }
    match media_type(headers) {
        None if !raw.is_empty() => return Reply::error("missing_post_type"),
        None => {}
        Some(media) if media != "application/json" => return Reply::error("invalid_post_type"),
        Some(_) => {
            let value = header_value(headers, header::CONTENT_TYPE).unwrap_or_default();
            let charset = value
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("charset"))
                .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase());
            if charset.is_some_and(|c| c != "utf-8" && c != "iso-8859-1") {
                return Reply::error("invalid_charset");
            }
        }
    }
    match bearer(headers) {
        None => return Reply::error("not_authed"),
        Some(token) if token != inner.bot_token => return Reply::error("invalid_auth"),
        Some(_) => {}
    }
    if let Some((left, secs)) = st.rate_limited.as_mut() {
        let secs = *secs;
        *left -= 1;
        if *left == 0 {
            st.rate_limited = None;
        }
        return Reply {
            status: 429,
            body: json!({ "ok": false, "error": "ratelimited" }),
            retry_after: Some(secs),
        };
    }
    if let Some(code) = st.failures.pop_front() {
        return Reply::error(&code);
    }
    let args = match parsed {
        None => return Reply::error("invalid_json"),
        Some(Value::Object(args)) => args,
        Some(_) => return Reply::error("json_not_object"),
    };
    match method {
        "chat.postMessage" => post_message(st, args, false),
        "chat.postEphemeral" => post_message(st, args, true),
        "chat.update" => update(st, args),
        _ => delete(st, args),
    }
}

/// The channel's id if the bot may post there.
fn postable_channel(st: &SlackState, args: &Map<String, Value>) -> Result<String, Reply> {
    let id = args.get("channel").and_then(Value::as_str).unwrap_or("");
    match st.channels.get(id) {
        None => Err(Reply::error("channel_not_found")),
        Some(c) if !c.bot_is_member => Err(Reply::error("not_in_channel")),
        Some(_) => Ok(id.to_owned()),
    }
}

/// `text` and `blocks` as given (`None`: absent).
type Content = (Option<String>, Option<Value>);

fn content(args: &Map<String, Value>) -> Result<Content, Reply> {
    let text = match args.get("text") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(Reply::error("invalid_arguments")),
    };
    let blocks = match args.get("blocks") {
        None | Some(Value::Null) => None,
        Some(Value::Array(blocks)) => {
            validate_blocks(blocks)?;
            Some(Value::Array(blocks.clone()))
        }
        Some(_) => return Err(Reply::error("invalid_blocks_format")),
    };
    Ok((text, blocks))
}

fn has_content(text: &Option<String>, blocks: &Option<Value>) -> bool {
    text.as_deref().is_some_and(|t| !t.is_empty())
        || blocks
            .as_ref()
            .and_then(Value::as_array)
            .is_some_and(|b| !b.is_empty())
}

fn flag(args: &Map<String, Value>, name: &str) -> Result<Option<bool>, Reply> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(Value::String(s)) if s == "true" || s == "1" => Ok(Some(true)),
        Some(Value::String(s)) if s == "false" || s == "0" => Ok(Some(false)),
        Some(_) => Err(Reply::error("invalid_arguments")),
    }
}

fn next_ts(st: &mut SlackState) -> String {
    st.ts_seq += 1;
    format!(
        "{}.{:06}",
        st.ts_base + st.ts_seq / 1_000_000,
        st.ts_seq % 1_000_000
    )
}

fn message_object(m: &SlackMessage) -> Value {
    let mut object = json!({
        "type": "message",
        "user": BOT_USER_ID,
        "bot_id": BOT_ID,
        "team": TEAM_ID,
        "text": m.text.clone().unwrap_or_default(),
        "ts": m.ts,
    });
    if let Some(blocks) = &m.blocks {
        object["blocks"] = blocks.clone();
    }
    if let Some(thread_ts) = &m.thread_ts {
        object["thread_ts"] = json!(thread_ts);
    }
    if m.updates > 0 {
        object["edited"] = json!({ "user": BOT_USER_ID, "ts": m.ts });
    }
    object
}

/// The message a post would create (its `ts` not yet assigned), or the refusal.
fn new_message(
    st: &SlackState,
    args: &Map<String, Value>,
    ephemeral: bool,
) -> Result<SlackMessage, Reply> {
    let channel = postable_channel(st, args)?;
    let user = if ephemeral {
        let user = args.get("user").and_then(Value::as_str).unwrap_or("");
        if !st.channels[&channel].members.contains(user) {
            return Err(Reply::error("user_not_in_channel"));
        }
        Some(user.to_owned())
    } else {
        None
    };
    let (text, blocks) = content(args)?;
    if !has_content(&text, &blocks) {
        return Err(Reply::error("no_text"));
    }
    let (unfurl_links, unfurl_media) = if ephemeral {
        (None, None)
    } else {
        (flag(args, "unfurl_links")?, flag(args, "unfurl_media")?)
    };
    let thread_ts = args
        .get("thread_ts")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(SlackMessage {
        channel,
        ts: String::new(),
        text,
        blocks,
        ephemeral,
        user,
        thread_ts,
        unfurl_links,
        unfurl_media,
        updates: 0,
    })
}

fn post_message(st: &mut SlackState, args: &Map<String, Value>, ephemeral: bool) -> Reply {
    let mut message = match new_message(st, args, ephemeral) {
        Ok(message) => message,
        Err(reply) => return reply,
    };
    message.ts = next_ts(st);
    let reply = if ephemeral {
        json!({ "ok": true, "message_ts": message.ts })
    } else {
        json!({
            "ok": true,
            "channel": message.channel,
            "ts": message.ts,
            "message": message_object(&message),
        })
    };
    st.messages.push(message);
    Reply::ok(reply)
}

/// The index of the non-ephemeral message `ts` in `channel`.
fn find_message(st: &SlackState, args: &Map<String, Value>) -> Result<usize, Reply> {
    let channel = args.get("channel").and_then(Value::as_str).unwrap_or("");
    if !st.channels.contains_key(channel) {
        return Err(Reply::error("channel_not_found"));
    }
    let ts = args.get("ts").and_then(Value::as_str).unwrap_or("");
    st.messages
        .iter()
        .position(|m| m.channel == channel && m.ts == ts && !m.ephemeral)
        .ok_or_else(|| Reply::error("message_not_found"))
}

fn update(st: &mut SlackState, args: &Map<String, Value>) -> Reply {
    let index = match find_message(st, args) {
        Ok(index) => index,
        Err(reply) => return reply,
    };
    let (text, blocks) = match content(args) {
        Ok(content) => content,
        Err(reply) => return reply,
    };
    if !has_content(&text, &blocks) {
        return Reply::error("no_text");
    }
    if text.as_deref().is_some_and(|t| chars(t) > 4000) {
        return Reply::error("msg_too_long");
    }
    let message = &mut st.messages[index];
    if let Some(text) = text {
        message.text = Some(text);
    }
    match blocks {
        Some(Value::Array(b)) if b.is_empty() => message.blocks = None,
        Some(b) => message.blocks = Some(b),
        None => {}
    }
    message.updates += 1;
    Reply::ok(json!({
        "ok": true,
        "channel": message.channel,
        "ts": message.ts,
        "text": message.text.clone().unwrap_or_default(),
        "message": message_object(message),
    }))
}

fn delete(st: &mut SlackState, args: &Map<String, Value>) -> Reply {
    match find_message(st, args) {
        Ok(index) => {
            let message = st.messages.remove(index);
            Reply::ok(json!({ "ok": true, "channel": message.channel, "ts": message.ts }))
        }
        Err(reply) => reply,
    }
}

// ------------------------------------------------------------- Block Kit

fn validate_blocks(blocks: &[Value]) -> Result<(), Reply> {
    if blocks.len() > 50 {
        return Err(Reply::invalid_blocks(
            "/blocks",
            "no more than 50 items allowed",
        ));
    }
    let mut block_ids = HashSet::new();
    for (i, block) in blocks.iter().enumerate() {
        let at = format!("/blocks/{i}");
        let Some(object) = block.as_object() else {
            return Err(Reply::invalid_blocks(&at, "must be an object"));
        };
        if let Some(id) = object.get("block_id") {
            let id = string_field(id, &format!("{at}/block_id"), 255)?;
            if !block_ids.insert(id.to_owned()) {
                return Err(Reply::invalid_blocks(
                    &format!("{at}/block_id"),
                    "duplicate block_id",
                ));
            }
        }
        match object.get("type").and_then(Value::as_str) {
            Some("section") => {
                only_fields(object, &["type", "block_id", "text"], &at)?;
                let Some(text) = object.get("text") else {
                    return Err(Reply::invalid_blocks(&at, "missing required field: text"));
                };
                text_object(text, &format!("{at}/text"), false, 3000)?;
            }
            Some("actions") => {
                only_fields(object, &["type", "block_id", "elements"], &at)?;
                let elements_at = format!("{at}/elements");
                let elements = match object.get("elements") {
                    Some(Value::Array(e)) => e,
                    Some(_) => return Err(Reply::invalid_blocks(&elements_at, "must be an array")),
                    None => {
                        return Err(Reply::invalid_blocks(
                            &at,
                            "missing required field: elements",
                        ));
                    }
                };
                if elements.is_empty() || elements.len() > 25 {
                    return Err(Reply::invalid_blocks(
                        &elements_at,
                        "must contain between 1 and 25 items",
                    ));
                }
                for (j, element) in elements.iter().enumerate() {
                    button(element, &format!("{elements_at}/{j}"))?;
                }
            }
            Some(other) => {
                return Err(Reply::invalid_blocks(
                    &format!("{at}/type"),
                    &format!("unsupported type: {other}"),
                ));
            }
            None => {
                return Err(Reply::invalid_blocks(&at, "missing required field: type"));
            }
        }
    }
    Ok(())
}

fn button(element: &Value, at: &str) -> Result<(), Reply> {
    let Some(object) = element.as_object() else {
        return Err(Reply::invalid_blocks(at, "must be an object"));
    };
    if object.get("type").and_then(Value::as_str) != Some("button") {
        return Err(Reply::invalid_blocks(
            &format!("{at}/type"),
            "must be button",
        ));
    }
    only_fields(
        object,
        &[
            "type",
            "text",
            "action_id",
            "url",
            "value",
            "style",
            "accessibility_label",
        ],
        at,
    )?;
    let Some(text) = object.get("text") else {
        return Err(Reply::invalid_blocks(at, "missing required field: text"));
    };
    text_object(text, &format!("{at}/text"), true, 75)?;
    for (field, max) in [
        ("action_id", 255),
        ("url", 3000),
        ("value", 2000),
        ("accessibility_label", 75),
    ] {
        if let Some(value) = object.get(field) {
            string_field(value, &format!("{at}/{field}"), max)?;
        }
    }
    let style = object.get("style").map(Value::as_str);
    if style.is_some_and(|s| s != Some("primary") && s != Some("danger")) {
        return Err(Reply::invalid_blocks(
            &format!("{at}/style"),
            "must be one of: primary, danger",
        ));
    }
    Ok(())
}

/// A composition text object; buttons take `plain_text` only.
fn text_object(value: &Value, at: &str, plain_only: bool, max: usize) -> Result<(), Reply> {
    let Some(object) = value.as_object() else {
        return Err(Reply::invalid_blocks(at, "must be an object"));
    };
    match object.get("type").and_then(Value::as_str) {
        Some("plain_text") => only_fields(object, &["type", "text", "emoji"], at)?,
        Some("mrkdwn") if !plain_only => only_fields(object, &["type", "text", "verbatim"], at)?,
        _ if plain_only => {
            return Err(Reply::invalid_blocks(
                &format!("{at}/type"),
                "must be plain_text",
            ));
        }
        _ => {
            return Err(Reply::invalid_blocks(
                &format!("{at}/type"),
                "must be one of: plain_text, mrkdwn",
            ));
        }
    }
    let Some(text) = object.get("text") else {
        return Err(Reply::invalid_blocks(at, "missing required field: text"));
    };
    let text = string_field(text, &format!("{at}/text"), max)?;
    if text.is_empty() {
        return Err(Reply::invalid_blocks(
            &format!("{at}/text"),
            "must be more than 0 characters",
        ));
    }
    for flag in ["emoji", "verbatim"] {
        if object.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(Reply::invalid_blocks(
                &format!("{at}/{flag}"),
                "must be a boolean",
            ));
        }
    }
    Ok(())
}

fn string_field<'a>(value: &'a Value, at: &str, max: usize) -> Result<&'a str, Reply> {
    let Some(s) = value.as_str() else {
        return Err(Reply::invalid_blocks(at, "must provide a string"));
    };
    if chars(s) > max {
        return Err(Reply::invalid_blocks(
            at,
            &format!("must be less than {} characters", max + 1),
        ));
    }
    Ok(s)
}

fn only_fields(object: &Map<String, Value>, allowed: &[&str], at: &str) -> Result<(), Reply> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(extra) => Err(Reply::invalid_blocks(
            &format!("{at}/{extra}"),
            &format!("invalid additional property: {extra}"),
        )),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- self-tests

mod tests {
    use super::*;

    const TOKEN: &str = "xoxb-1111-2222-fakebottoken";

    struct Answer {
        status: u16,
        retry_after: Option<String>,
        body: Value,
    }

    async fn call(fake: &SlackFake, method: &str, token: Option<&str>, body: Value) -> Answer {
        let mut request = reqwest::Client::new()
            .post(format!("{}/{method}", fake.api_base_url))
            .header("content-type", "application/json; charset=utf-8")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        Answer {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: response.json().await.unwrap(),
        }
    }

    fn link_blocks(label: &str) -> Value {
        json!([
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Salesforce* needs your permission."}},
            {"type": "actions", "block_id": "authlink:7f3c", "elements": [
                {"type": "button", "action_id": "authlink_open", "style": "primary",
                 "text": {"type": "plain_text", "text": label},
                 "url": "https://auth.example.com/l/7f3c"}
            ]}
        ])
    }

    async fn workspace() -> SlackFake {
        let fake = SlackFake::spawn(TOKEN).await;
        fake.add_channel("D0123ABCD", &["U0HUMAN"]);
        fake
    }

    #[tokio::test]
    async fn post_message_records_the_message_and_answers_like_slack() {
        let fake = workspace().await;
        let body = json!({
            "channel": "D0123ABCD",
            "text": "Authorize your Salesforce account to continue.",
            "blocks": link_blocks("Authorize account"),
            "unfurl_links": false,
            "unfurl_media": false,
        });
        let first = call(&fake, "chat.postMessage", Some(TOKEN), body.clone()).await;
        assert_eq!(first.status, 200);
        assert_eq!(first.body["ok"], true);
        assert_eq!(first.body["channel"], "D0123ABCD");
        let ts = first.body["ts"].as_str().unwrap().to_owned();
        let (secs, micros) = ts.split_once('.').unwrap();
        assert!(secs.len() == 10 && micros.len() == 6, "ts {ts}");
        assert_eq!(first.body["message"]["ts"], ts.as_str());
        assert_eq!(first.body["message"]["bot_id"], BOT_ID);
        assert_eq!(
            first.body["message"]["blocks"],
            link_blocks("Authorize account")
        );

        // `.json()` sends `application/json` without a charset: accepted too.
        let second = reqwest::Client::new()
            .post(format!("{}/chat.postMessage", fake.api_base_url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let second: Value = second.json().await.unwrap();
        assert_eq!(second["ok"], true);
        assert_ne!(second["ts"], ts.as_str(), "every ts is unique");

        let messages = fake.messages("D0123ABCD");
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].ts, ts);
        assert_eq!(
            messages[0].text.as_deref(),
            Some("Authorize your Salesforce account to continue.")
        );
        assert_eq!(
            (messages[0].unfurl_links, messages[0].unfurl_media),
            (Some(false), Some(false))
        );
        assert!(!messages[0].ephemeral);
        let requests = fake.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, "chat.postMessage");
        assert_eq!(
            requests[0].authorization.as_deref(),
            Some(&*format!("Bearer {TOKEN}"))
        );
        assert_eq!(requests[0].body, body);
        assert_eq!(
            (requests[0].status, requests[0].error.as_deref()),
            (200, None)
        );
    }

    #[tokio::test]
    async fn auth_and_channel_failures_are_http_200_ok_false() {
        let fake = workspace().await;
        fake.add_channel_without_bot("C0PUBLIC");
        let post = |channel: &str| json!({"channel": channel, "text": "hi"});
        let cases = [
            (None, post("D0123ABCD"), "not_authed"),
            (Some("xoxb-wrong"), post("D0123ABCD"), "invalid_auth"),
            (Some(TOKEN), post("C0UNKNOWN"), "channel_not_found"),
            (
                Some(TOKEN),
                json!({"text": "no channel"}),
                "channel_not_found",
            ),
            (Some(TOKEN), post("C0PUBLIC"), "not_in_channel"),
            (Some(TOKEN), json!({"channel": "D0123ABCD"}), "no_text"),
        ];
        for (token, body, error) in cases {
            let answer = call(&fake, "chat.postMessage", token, body).await;
            assert_eq!(
                (answer.status, &answer.body),
                (200, &json!({"ok": false, "error": error}))
            );
        }
        // A token in a JSON body is not read.
        let answer = call(
            &fake,
            "chat.postMessage",
            None,
            json!({"token": TOKEN, "channel": "D0123ABCD", "text": "hi"}),
        )
        .await;
        assert_eq!(answer.body["error"], "not_authed");
        // Form bodies are refused.
        let form = reqwest::Client::new()
            .post(format!("{}/chat.postMessage", fake.api_base_url))
            .bearer_auth(TOKEN)
            .form(&[("channel", "D0123ABCD"), ("text", "hi")])
            .send()
            .await
            .unwrap();
        assert_eq!(
            form.json::<Value>().await.unwrap()["error"],
            "invalid_post_type"
        );
        let unknown = call(&fake, "chat.postMessages", Some(TOKEN), post("D0123ABCD")).await;
        assert_eq!(unknown.body["error"], "unknown_method");
        assert!(fake.messages("D0123ABCD").is_empty());
        assert_eq!(fake.requests().len(), 9);
    }

    #[tokio::test]
    async fn block_kit_shapes_outside_the_documented_ones_are_invalid_blocks() {
        let fake = workspace().await;
        let mut too_long_url = link_blocks("ok");
        too_long_url[1]["elements"][0]["url"] =
            json!(format!("https://a.example/{}", "x".repeat(3000)));
        let mut secondary = link_blocks("ok");
        secondary[1]["elements"][0]["style"] = json!("secondary");
        let mut mrkdwn_label = link_blocks("ok");
        mrkdwn_label[1]["elements"][0]["text"]["type"] = json!("mrkdwn");
        let cases = [
            (
                link_blocks(&"x".repeat(76)),
                "/blocks/1/elements/0/text/text",
            ),
            (too_long_url, "/blocks/1/elements/0/url"),
            (secondary, "/blocks/1/elements/0/style"),
            (mrkdwn_label, "/blocks/1/elements/0/text/type"),
            (
                json!([{"type": "image", "image_url": "https://a.example/i.png"}]),
                "/blocks/0/type",
            ),
            (
                json!([{"type": "section", "text": {"type": "mrkdwn", "text": "x"}, "extra": 1}]),
                "/blocks/0/extra",
            ),
            (
                json!([{"type": "actions", "elements": [{"type": "static_select"}]}]),
                "/blocks/0/elements/0/type",
            ),
        ];
        for (blocks, pointer) in cases {
            let answer = call(
                &fake,
                "chat.postMessage",
                Some(TOKEN),
                json!({"channel": "D0123ABCD", "text": "fallback", "blocks": blocks}),
            )
            .await;
            assert_eq!(answer.body["error"], "invalid_blocks", "{pointer}");
            let why = answer.body["response_metadata"]["messages"][0]
                .as_str()
                .unwrap();
            assert!(why.ends_with(&format!("[json-pointer:{pointer}]")), "{why}");
        }
        // 75 characters is the documented limit, and is fine.
        let ok = json!({"channel": "D0123ABCD", "blocks": link_blocks(&"x".repeat(75))});
        assert_eq!(
            call(&fake, "chat.postMessage", Some(TOKEN), ok).await.body["ok"],
            true
        );
        let string_blocks = json!({"channel": "D0123ABCD", "text": "x", "blocks": "[]"});
        let answer = call(&fake, "chat.postMessage", Some(TOKEN), string_blocks).await;
        assert_eq!(answer.body["error"], "invalid_blocks_format");
        assert_eq!(fake.messages("D0123ABCD").len(), 1);
    }

    #[tokio::test]
    async fn update_replaces_the_stored_message_and_delete_removes_it() {
        let fake = workspace().await;
        let posted = call(
            &fake,
            "chat.postMessage",
            Some(TOKEN),
            json!({"channel": "D0123ABCD", "text": "Authorize", "blocks": link_blocks("Authorize")}),
        )
        .await;
        let ts = posted.body["ts"].as_str().unwrap();

        let done = json!([{"type": "section", "text": {"type": "mrkdwn", "text": "Connected ✓"}}]);
        let updated = call(
            &fake,
            "chat.update",
            Some(TOKEN),
            json!({"channel": "D0123ABCD", "ts": ts, "text": "Connected", "blocks": done}),
        )
        .await;
        assert_eq!(updated.body["ok"], true);
        assert_eq!(
            (&updated.body["channel"], &updated.body["ts"]),
            (&json!("D0123ABCD"), &json!(ts))
        );
        assert_eq!(updated.body["text"], "Connected");
        let now = &fake.messages("D0123ABCD")[0];
        assert_eq!(
            (now.text.as_deref(), now.blocks.as_ref(), now.updates),
            (Some("Connected"), Some(&done), 1)
        );

        // Text only keeps the blocks; `blocks: []` removes them.
        let text_only = json!({"channel": "D0123ABCD", "ts": ts, "text": "Still connected"});
        call(&fake, "chat.update", Some(TOKEN), text_only).await;
        assert_eq!(fake.messages("D0123ABCD")[0].blocks.as_ref(), Some(&done));
        let no_blocks = json!({"channel": "D0123ABCD", "ts": ts, "text": "Done", "blocks": []});
        call(&fake, "chat.update", Some(TOKEN), no_blocks).await;
        assert_eq!(fake.messages("D0123ABCD")[0].blocks, None);

        let long = json!({"channel": "D0123ABCD", "ts": ts, "text": "x".repeat(4001)});
        assert_eq!(
            call(&fake, "chat.update", Some(TOKEN), long).await.body["error"],
            "msg_too_long"
        );
        let unknown = json!({"channel": "D0123ABCD", "ts": "1.000001", "text": "x"});
        assert_eq!(
            call(&fake, "chat.update", Some(TOKEN), unknown).await.body["error"],
            "message_not_found"
        );

        let deleted = call(
            &fake,
            "chat.delete",
            Some(TOKEN),
            json!({"channel": "D0123ABCD", "ts": ts}),
        )
        .await;
        assert_eq!(
            deleted.body,
            json!({"ok": true, "channel": "D0123ABCD", "ts": ts})
        );
        assert!(fake.messages("D0123ABCD").is_empty());
        let again = call(
            &fake,
            "chat.delete",
            Some(TOKEN),
            json!({"channel": "D0123ABCD", "ts": ts}),
        )
        .await;
        assert_eq!(again.body["error"], "message_not_found");
    }

    #[tokio::test]
    async fn ephemerals_need_a_member_and_cannot_be_updated_or_deleted() {
        let fake = workspace().await;
        fake.add_channel("C0SHARED", &["U0HUMAN", "U0OTHER"]);
        let post = |user: &str| json!({"channel": "C0SHARED", "user": user, "blocks": link_blocks("Authorize")});
        let stranger = call(&fake, "chat.postEphemeral", Some(TOKEN), post("U0STRANGER")).await;
        assert_eq!(
            stranger.body,
            json!({"ok": false, "error": "user_not_in_channel"})
        );
        let missing = json!({"channel": "C0SHARED", "text": "hi"});
        let missing = call(&fake, "chat.postEphemeral", Some(TOKEN), missing).await;
        assert_eq!(missing.body["error"], "user_not_in_channel");

        let sent = call(&fake, "chat.postEphemeral", Some(TOKEN), post("U0HUMAN")).await;
        assert_eq!(sent.body["ok"], true);
        let ts = sent.body["message_ts"].as_str().unwrap();
        let messages = fake.messages("C0SHARED");
        assert_eq!(messages.len(), 1);
        assert!(messages[0].ephemeral);
        assert_eq!(messages[0].user.as_deref(), Some("U0HUMAN"));

        let change = json!({"channel": "C0SHARED", "ts": ts, "text": "Connected"});
        let updated = call(&fake, "chat.update", Some(TOKEN), change).await;
        assert_eq!(
            updated.body,
            json!({"ok": false, "error": "message_not_found"})
        );
        let deleted = call(
            &fake,
            "chat.delete",
            Some(TOKEN),
            json!({"channel": "C0SHARED", "ts": ts}),
        )
        .await;
        assert_eq!(deleted.body["error"], "message_not_found");
        assert_eq!(fake.messages("C0SHARED")[0].updates, 0);
    }

    #[tokio::test]
    async fn armed_rate_limits_and_failures_answer_once_each() {
        let fake = workspace().await;
        let post = json!({"channel": "D0123ABCD", "text": "hi"});
        fake.rate_limit_next(2, 30);
        fake.fail_next("fatal_error");
        for _ in 0..2 {
            let limited = call(&fake, "chat.postMessage", Some(TOKEN), post.clone()).await;
            assert_eq!(limited.status, 429);
            assert_eq!(limited.retry_after.as_deref(), Some("30"));
            assert_eq!(limited.body, json!({"ok": false, "error": "ratelimited"}));
        }
        let failed = call(&fake, "chat.postMessage", Some(TOKEN), post.clone()).await;
        assert_eq!((failed.status, failed.retry_after), (200, None));
        assert_eq!(failed.body, json!({"ok": false, "error": "fatal_error"}));
        fake.fail_next("token_revoked");
        let update = json!({"channel": "D0123ABCD", "ts": "1.000001", "text": "x"});
        assert_eq!(
            call(&fake, "chat.update", Some(TOKEN), update).await.body["error"],
            "token_revoked"
        );
        let ok = call(&fake, "chat.postMessage", Some(TOKEN), post).await;
        assert_eq!(ok.body["ok"], true);
        assert_eq!(
            fake.messages("D0123ABCD").len(),
            1,
            "refused calls did not post"
        );
        let statuses: Vec<_> = fake
            .requests()
            .iter()
            .map(|r| (r.status, r.error.clone()))
            .collect();
        assert_eq!(
            statuses,
            [
                (429, Some("ratelimited".to_owned())),
                (429, Some("ratelimited".to_owned())),
                (200, Some("fatal_error".to_owned())),
                (200, Some("token_revoked".to_owned())),
                (200, None),
            ]
        );
    }
}

/// Slack's request signature: `v0=` + hex HMAC-SHA256 of `v0:{timestamp}:{body}`.
pub fn signature(signing_secret: &str, timestamp: &str, body: &str) -> String {
    use hmac::{Hmac, KeyInit, Mac};
    let mut mac =
        <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(signing_secret.as_bytes()).unwrap();
    mac.update(format!("v0:{timestamp}:{body}").as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v0={hex}")
}

/// A click's `response_url`: `{"replace_original": true, text, blocks}` replaces the message
/// (ephemerals included), `{"delete_original": true}` removes it; unknown tokens are 404.
async fn response_url(
    State(inner): State<Arc<Inner>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    let mut st = lock(&inner.state);
    st.replies.push((
        token.clone(),
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ));
    let Some((channel, ts)) = st.response_urls.get(&token).cloned() else {
        return (StatusCode::NOT_FOUND, "no such response_url").into_response();
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "invalid_payload").into_response();
    };
    if body["delete_original"] == true {
        st.messages
            .retain(|m| !(m.channel == channel && m.ts == ts));
        return (StatusCode::OK, "ok").into_response();
    }
    if body["replace_original"] != true {
        return (
            StatusCode::BAD_REQUEST,
            "only replace_original or delete_original here",
        )
            .into_response();
    }
    let Some(m) = st
        .messages
        .iter_mut()
        .find(|m| m.channel == channel && m.ts == ts)
    else {
        return (StatusCode::NOT_FOUND, "message gone").into_response();
    };
    m.text = body["text"].as_str().map(str::to_owned);
    m.blocks = body.get("blocks").cloned();
    m.updates += 1;
    (StatusCode::OK, "ok").into_response()
}
