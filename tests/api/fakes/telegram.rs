//! A fake Telegram Bot API: `sendMessage`, `editMessageText`, `editMessageReplyMarkup`,
//! `deleteMessage`, `getMe` (CHANNELS.md §3).
//!
//! The daemon's `api_base_url` is [`TelegramFake::api_base_url`] (the bare `{base}`); requests
//! are `POST {api_base_url}/bot<token>/<method>`. Parameters are read like the reference server
//! (tdlib/telegram-bot-api) reads them: query string, form or JSON body; method names are
//! case-insensitive; `reply_markup` and `link_preview_options` may be objects or JSON strings.
//!
//! Documented behaviours it enforces:
//! - Envelope: `{"ok":true,"result":…}`; failures `{"ok":false,"error_code":N,"description":"…"}`
//!   with HTTP status N.
//! - A path that is not `/bot<token>/<method>`, a malformed token (not `<digits>:<secret>`, as
//!   api.telegram.org's front answers) or an unknown method → 404 `Not Found`; a well-formed
//!   token other than the fake's → 401 `Unauthorized`.
//! - `sendMessage`, in the reference server's order: `text` 1–4096 chars (`Bad Request: message
//!   text is empty`), `reply_markup` shape (`inline_keyboard` an array of arrays of buttons with
//!   `text` and an action field, else `Bad Request: can't parse inline keyboard button: …`),
//!   `chat_id` (`Bad Request: chat_id is empty`, `Bad Request: chat not found`, 403 `Forbidden:
//!   bot was blocked by the user`), then length (`Bad Request: message is too long`) and the
//!   button URL (an `http(s)` host without a dot, such as `localhost`, or a scheme other than
//!   `http`/`https`/`tg` → `Bad Request: inline keyboard button URL '…' is invalid: …`).
//! - `editMessageText` / `editMessageReplyMarkup` return the edited Message (with `edit_date`);
//!   leaving `reply_markup` out removes the keyboard; an edit that changes nothing → `Bad Request:
//!   message is not modified: …`; an unknown id → `Bad Request: message to edit not found`.
//! - `deleteMessage` → `true`; unknown id → `Bad Request: message to delete not found`.
//! - Rate limiting (armed): HTTP 429, `Retry-After: N`, `{"ok":false,"error_code":429,
//!   "description":"Too Many Requests: retry after N","parameters":{"retry_after":N}}`.
//!
//! Deviations: a button with two action fields is refused (the Bot API documents "exactly one";
//! the reference server silently takes the first); the 48-hour delete window, scheduled messages
//! and Telegram's own pacing are not simulated; `chat_id` must be numeric (`@username` → `chat
//! not found`).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use url::Url;

use super::{chars, lock, media_type, serve, unix_now};

/// The longest message text Telegram takes.
pub const MAX_TEXT: usize = 4096;
const NOT_MODIFIED: &str = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

/// Handle to a running fake Telegram. Cheap to clone; all clones share state.
#[derive(Clone)]
pub struct TelegramFake {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base_url: String,
    /// What the daemon's `api_base_url` must be set to: the same as `base_url`.
    pub api_base_url: String,
    inner: Arc<Inner>,
}

/// A message as it stands now (edits applied, deleted ones gone).
#[derive(Clone, Debug, PartialEq)]
pub struct TelegramMessage {
    pub chat_id: i64,
    pub message_id: i64,
    pub text: String,
    /// The `{"inline_keyboard":[…]}` object, if the message has a keyboard.
    pub reply_markup: Option<Value>,
    /// As sent (object form).
    pub link_preview_options: Option<Value>,
    pub date: u64,
    pub edit_date: Option<u64>,
    /// Successful edits of this message.
    pub edits: u32,
}

/// One call as the fake received and answered it.
#[derive(Clone, Debug)]
pub struct TelegramRequest {
    /// The method as written in the path (e.g. `sendMessage`).
    pub method: String,
    /// The token from the path.
    pub token: String,
    /// The parameters: the JSON body as sent, or query/form parameters as strings.
    pub params: Value,
    pub status: u16,
    /// `description` of a failure.
    pub description: Option<String>,
}

struct Inner {
    token: String,
    bot_id: i64,
    state: Mutex<TelegramState>,
}

struct Chat {
    blocked: bool,
    next_message_id: i64,
    messages: Vec<TelegramMessage>,
}

struct TelegramState {
    chats: HashMap<i64, Chat>,
    rate_limited: Option<(usize, u64)>,
    failures: VecDeque<(u16, String)>,
    requests: Vec<TelegramRequest>,
}

struct Reply {
    status: u16,
    body: Value,
    retry_after: Option<u64>,
}

impl Reply {
    fn ok(result: Value) -> Reply {
        Reply {
            status: 200,
            body: json!({ "ok": true, "result": result }),
            retry_after: None,
        }
    }

    fn error(code: u16, description: &str) -> Reply {
        Reply {
            status: code,
            body: json!({ "ok": false, "error_code": code, "description": description }),
            retry_after: None,
        }
    }

    fn bad_request(description: &str) -> Reply {
        Reply::error(400, &format!("Bad Request: {description}"))
    }

    fn not_found() -> Reply {
        Reply::error(404, "Not Found")
    }
}

/// `<bot id>:<secret>`: a positive bot id without a leading zero, a non-empty URL-safe secret.
fn well_formed(token: &str) -> bool {
    let Some((id, secret)) = token.split_once(':') else {
        return false;
    };
    token.len() <= 80
        && !id.is_empty()
        && !id.starts_with('0')
        && id.bytes().all(|b| b.is_ascii_digit())
        && id.parse::<i64>().is_ok()
        && !secret.is_empty()
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl TelegramFake {
    /// Bind 127.0.0.1:0 and serve a bot whose token is `token` (`123456:ABC…`; panics if
    /// the token is not well-formed, since the real API could never have issued it).
    pub async fn spawn(token: &str) -> TelegramFake {
        assert!(
            well_formed(token),
            "a Telegram token is <bot id>:<secret>, got {token:?}"
        );
        let bot_id = token.split(':').next().unwrap_or_default();
        let inner = Arc::new(Inner {
            token: token.to_owned(),
            bot_id: bot_id.parse().expect("bot id"),
            state: Mutex::new(TelegramState {
                chats: HashMap::new(),
                rate_limited: None,
                failures: VecDeque::new(),
                requests: Vec::new(),
            }),
        });
        let app = Router::new().fallback(api).with_state(inner.clone());
        let base_url = serve(app, "Telegram").await;
        TelegramFake {
            api_base_url: base_url.clone(),
            base_url,
            inner,
        }
    }

    /// A chat the bot can write to (positive ids are private chats with a user).
    pub fn add_chat(&self, chat_id: i64) {
        lock(&self.inner.state).chats.insert(
            chat_id,
            Chat {
                blocked: false,
                next_message_id: 1,
                messages: Vec::new(),
            },
        );
    }

    /// The user blocked the bot: sends and edits in the chat answer 403.
    pub fn block_bot(&self, chat_id: i64) {
        if let Some(chat) = lock(&self.inner.state).chats.get_mut(&chat_id) {
            chat.blocked = true;
        }
    }

    /// The next `n` calls with the right token answer 429 with `retry_after` seconds.
    pub fn rate_limit_next(&self, n: usize, retry_after_secs: u64) {
        lock(&self.inner.state).rate_limited = (n > 0).then_some((n, retry_after_secs));
    }

    /// The next call with the right token (after any armed rate limit) fails with this
    /// `error_code` (also the HTTP status) and `description`, e.g. `(403, "Forbidden: bot was
    /// kicked from the group chat")`. Calls queue up.
    pub fn fail_next(&self, error_code: u16, description: &str) {
        lock(&self.inner.state)
            .failures
            .push_back((error_code, description.to_owned()));
    }

    /// The live messages of `chat_id`, oldest first.
    pub fn messages(&self, chat_id: i64) -> Vec<TelegramMessage> {
        lock(&self.inner.state)
            .chats
            .get(&chat_id)
            .map(|c| c.messages.clone())
            .unwrap_or_default()
    }

    /// Every call received, in order.
    pub fn requests(&self) -> Vec<TelegramRequest> {
        lock(&self.inner.state).requests.clone()
    }
}

async fn api(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let (token, method) = path
        .strip_prefix("/bot")
        .and_then(|rest| rest.split_once('/'))
        .unwrap_or(("", ""));
    let params = parameters(&uri, &headers, &body);
    let mut st = lock(&inner.state);
    let reply = match &params {
        _ if token.is_empty() || method.is_empty() || method.contains('/') => Reply::not_found(),
        _ if !well_formed(token) => Reply::not_found(),
        _ if token != inner.token => Reply::error(401, "Unauthorized"),
        Err(description) => Reply::bad_request(description),
        Ok(args) => handle(&inner, &mut st, &method.to_ascii_lowercase(), args),
    };
    st.requests.push(TelegramRequest {
        method: method.to_owned(),
        token: token.to_owned(),
        params: match params {
            Ok(args) => Value::Object(args),
            Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
        },
        status: reply.status,
        description: reply.body["description"].as_str().map(str::to_owned),
    });
    drop(st);
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, Json(reply.body)).into_response();
    if let Some(secs) = reply.retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, secs.into());
    }
    response
}

/// Query parameters overlaid with the body's (JSON object or form).
fn parameters(uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Result<Map<String, Value>, String> {
    let mut args = Map::new();
    let form = |bytes: &[u8], args: &mut Map<String, Value>| {
        for (k, v) in url::form_urlencoded::parse(bytes) {
            args.insert(k.into_owned(), Value::String(v.into_owned()));
        }
    };
    form(uri.query().unwrap_or("").as_bytes(), &mut args);
    match media_type(headers).as_deref() {
        Some("application/json") if !body.is_empty() => match serde_json::from_slice(body) {
            Ok(Value::Object(object)) => args.extend(object),
            _ => return Err("can't parse JSON object".to_owned()),
        },
        Some("application/x-www-form-urlencoded") => form(body, &mut args),
        _ => {}
    }
    Ok(args)
}

fn handle(inner: &Inner, st: &mut TelegramState, method: &str, args: &Map<String, Value>) -> Reply {
    const METHODS: [&str; 5] = [
        "getme",
        "sendmessage",
        "editmessagetext",
        "editmessagereplymarkup",
        "deletemessage",
    ];
    if !METHODS.contains(&method) {
        return Reply::not_found();
    }
    if let Some((left, secs)) = st.rate_limited.as_mut() {
        let secs = *secs;
        *left -= 1;
        if *left == 0 {
            st.rate_limited = None;
        }
        return Reply {
            status: 429,
            body: json!({
                "ok": false,
                "error_code": 429,
                "description": format!("Too Many Requests: retry after {secs}"),
                "parameters": { "retry_after": secs },
            }),
            retry_after: Some(secs),
        };
    }
    if let Some((code, description)) = st.failures.pop_front() {
        return Reply::error(code, &description);
    }
    let result = match method {
        "getme" => Ok(json!({
            "id": inner.bot_id,
            "is_bot": true,
            "first_name": "Authlink",
            "username": "authlink_fake_bot",
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
        })),
        "sendmessage" => send_message(inner, st, args),
        "editmessagetext" => edit(inner, st, args, true),
        "editmessagereplymarkup" => edit(inner, st, args, false),
        _ => delete_message(st, args),
    };
    match result {
        Ok(result) => Reply::ok(result),
        Err(reply) => reply,
    }
}

fn text_arg(args: &Map<String, Value>) -> Result<String, Reply> {
    let text = match args.get("text") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    if text.is_empty() {
        return Err(Reply::bad_request("message text is empty"));
    }
    Ok(text)
}

/// A JSON-valued parameter: an object, or a string holding one.
fn json_arg(args: &Map<String, Value>, name: &str, what: &str) -> Result<Option<Value>, Reply> {
    let value = match args.get(name) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map_err(|_| Reply::bad_request(&format!("can't parse {what} JSON object")))?,
        Some(value) => value.clone(),
    };
    Ok(Some(value))
}

const ACTIONS: [&str; 10] = [
    "url",
    "callback_data",
    "callback_game",
    "pay",
    "switch_inline_query",
    "switch_inline_query_chosen_chat",
    "switch_inline_query_current_chat",
    "login_url",
    "web_app",
    "copy_text",
];

/// `reply_markup` as the message will carry it: `None` unless it is a non-empty inline keyboard.
fn reply_markup(args: &Map<String, Value>) -> Result<Option<Value>, Reply> {
    let Some(markup) = json_arg(args, "reply_markup", "reply keyboard markup")? else {
        return Ok(None);
    };
    let Some(object) = markup.as_object() else {
        return Err(Reply::bad_request("object expected as reply markup"));
    };
    let rows = match object.get("inline_keyboard") {
        None => return Ok(None),
        Some(Value::Array(rows)) => rows,
        Some(_) => {
            return Err(Reply::bad_request(
                "field \"inline_keyboard\" must be of type Array",
            ));
        }
    };
    let button_error =
        |why: &str| Reply::bad_request(&format!("can't parse inline keyboard button: {why}"));
    for row in rows {
        let Some(buttons) = row.as_array() else {
            return Err(Reply::bad_request(
                "field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
            ));
        };
        for button in buttons {
            let Some(button) = button.as_object() else {
                return Err(button_error("InlineKeyboardButton must be an Object"));
            };
            match button.get("text") {
                Some(Value::String(_)) => {}
                Some(_) => return Err(button_error("Field \"text\" must be of type String")),
                None => return Err(button_error("Can't find field \"text\"")),
            }
            let actions = ACTIONS
                .iter()
                .filter(|a| button.get(**a).is_some_and(|v| *v != "" && !v.is_null()))
                .count();
            if actions == 0 {
                return Err(button_error(
                    "Text buttons are unallowed in the inline keyboard",
                ));
            }
            if actions > 1 {
                return Err(button_error(
                    "exactly one of the optional fields must be set (fake: the Bot API documents this rule)",
                ));
            }
        }
    }
    if rows
        .iter()
        .all(|row| row.as_array().is_some_and(Vec::is_empty))
    {
        return Ok(None);
    }
    Ok(Some(json!({ "inline_keyboard": rows })))
}

/// Checks Telegram makes once the request reached its servers: URL buttons and callback data.
fn check_buttons(markup: &Option<Value>) -> Result<(), Reply> {
    let Some(rows) = markup
        .as_ref()
        .and_then(|m| m["inline_keyboard"].as_array())
    else {
        return Ok(());
    };
    for button in rows.iter().flat_map(|r| r.as_array().into_iter().flatten()) {
        if let Some(url) = button["url"].as_str() {
            if let Err(why) = check_url(url) {
                return Err(Reply::bad_request(&format!(
                    "inline keyboard button URL '{url}' is invalid: {why}"
                )));
            }
        }
        if button["callback_data"]
            .as_str()
            .is_some_and(|d| d.len() > 64)
        {
            return Err(Reply::bad_request("BUTTON_DATA_INVALID"));
        }
    }
    Ok(())
}

/// `http`/`https` URLs need a host with a dot (`localhost` is refused; IP literals pass);
/// `tg://` links are taken as they are.
fn check_url(url: &str) -> Result<(), &'static str> {
    let Ok(parsed) = Url::parse(url) else {
        return Err("Wrong HTTP URL");
    };
    match parsed.scheme() {
        "tg" => Ok(()),
        "http" | "https" => match parsed.host() {
            Some(url::Host::Domain(host)) if host.contains('.') && !host.ends_with('.') => Ok(()),
            Some(url::Host::Ipv4(_) | url::Host::Ipv6(_)) => Ok(()),
            _ => Err("Wrong HTTP URL"),
        },
        _ => Err("Unsupported URL protocol"),
    }
}

fn link_preview_options(args: &Map<String, Value>) -> Result<Option<Value>, Reply> {
    let Some(options) = json_arg(args, "link_preview_options", "link preview options")? else {
        return Ok(None);
    };
    let Some(object) = options.as_object() else {
        return Err(Reply::bad_request(
            "object expected as link preview options",
        ));
    };
    for flag in [
        "is_disabled",
        "prefer_small_media",
        "prefer_large_media",
        "show_above_text",
    ] {
        if object.get(flag).is_some_and(|v| !v.is_boolean()) {
            return Err(Reply::bad_request(&format!(
                "field \"{flag}\" must be of type Boolean"
            )));
        }
    }
    Ok(Some(options))
}

fn integer_arg(args: &Map<String, Value>, name: &str) -> Option<i64> {
    match args.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The chat the bot may write to, or the refusal.
fn writable_chat<'a>(
    st: &'a mut TelegramState,
    args: &Map<String, Value>,
) -> Result<&'a mut Chat, Reply> {
    let empty = match args.get("chat_id") {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.trim().is_empty(),
        Some(_) => false,
    };
    if empty {
        return Err(Reply::bad_request("chat_id is empty"));
    }
    let chat = integer_arg(args, "chat_id")
        .and_then(|id| st.chats.get_mut(&id))
        .ok_or_else(|| Reply::bad_request("chat not found"))?;
    if chat.blocked {
        return Err(Reply::error(403, "Forbidden: bot was blocked by the user"));
    }
    Ok(chat)
}

fn message_json(inner: &Inner, m: &TelegramMessage) -> Value {
    let chat_type = if m.chat_id > 0 {
        "private"
    } else if m.chat_id <= -1_000_000_000_000 {
        "supergroup"
    } else {
        "group"
    };
    let mut message = json!({
        "message_id": m.message_id,
        "from": {
            "id": inner.bot_id,
            "is_bot": true,
            "first_name": "Authlink",
            "username": "authlink_fake_bot",
        },
        "chat": { "id": m.chat_id, "type": chat_type },
        "date": m.date,
        "text": m.text,
    });
    if m.chat_id > 0 {
        message["chat"]["first_name"] = json!("Ada");
    }
    if let Some(date) = m.edit_date {
        message["edit_date"] = json!(date);
    }
    if let Some(options) = &m.link_preview_options {
        message["link_preview_options"] = options.clone();
    }
    if let Some(markup) = &m.reply_markup {
        message["reply_markup"] = markup.clone();
    }
    message
}

fn send_message(
    inner: &Inner,
    st: &mut TelegramState,
    args: &Map<String, Value>,
) -> Result<Value, Reply> {
    let text = text_arg(args)?;
    let options = link_preview_options(args)?;
    let markup = reply_markup(args)?;
    let chat_id = integer_arg(args, "chat_id").unwrap_or_default();
    let chat = writable_chat(st, args)?;
    if chars(&text) > MAX_TEXT {
        return Err(Reply::bad_request("message is too long"));
    }
    check_buttons(&markup)?;
    let message = TelegramMessage {
        chat_id,
        message_id: chat.next_message_id,
        text,
        reply_markup: markup,
        link_preview_options: options,
        date: unix_now(),
        edit_date: None,
        edits: 0,
    };
    chat.next_message_id += 1;
    let result = message_json(inner, &message);
    chat.messages.push(message);
    Ok(result)
}

/// `editMessageText` (`with_text`) or `editMessageReplyMarkup`.
fn edit(
    inner: &Inner,
    st: &mut TelegramState,
    args: &Map<String, Value>,
    with_text: bool,
) -> Result<Value, Reply> {
    let text = if with_text {
        Some(text_arg(args)?)
    } else {
        None
    };
    let options = if with_text {
        link_preview_options(args)?
    } else {
        None
    };
    let markup = reply_markup(args)?;
    let chat = writable_chat(st, args)?;
    let message_id = integer_arg(args, "message_id").unwrap_or_default();
    let Some(message) = chat
        .messages
        .iter_mut()
        .find(|m| m.message_id == message_id && message_id > 0)
    else {
        return Err(Reply::bad_request("message to edit not found"));
    };
    if text.as_deref().is_some_and(|t| chars(t) > MAX_TEXT) {
        return Err(Reply::bad_request("message is too long"));
    }
    check_buttons(&markup)?;
    let new_text = text.unwrap_or_else(|| message.text.clone());
    if new_text == message.text && markup == message.reply_markup {
        return Err(Reply::error(400, NOT_MODIFIED));
    }
    message.text = new_text;
    message.reply_markup = markup;
    if options.is_some() {
        message.link_preview_options = options;
    }
    message.edit_date = Some(unix_now());
    message.edits += 1;
    Ok(message_json(inner, message))
}

fn delete_message(st: &mut TelegramState, args: &Map<String, Value>) -> Result<Value, Reply> {
    if args.get("chat_id").is_none() {
        return Err(Reply::bad_request("chat identifier is not specified"));
    }
    let message_id = integer_arg(args, "message_id").unwrap_or_default();
    if message_id == 0 {
        return Err(Reply::bad_request("message identifier is not specified"));
    }
    let chat = writable_chat(st, args)?;
    let Some(index) = chat
        .messages
        .iter()
        .position(|m| m.message_id == message_id)
    else {
        return Err(Reply::bad_request("message to delete not found"));
    };
    chat.messages.remove(index);
    Ok(json!(true))
}

// ---------------------------------------------------------------- self-tests

mod tests {
    use super::*;

    const TOKEN: &str = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
    const CHAT: i64 = 987654321;

    struct Answer {
        status: u16,
        retry_after: Option<String>,
        body: Value,
    }

    async fn call_as(fake: &TelegramFake, token: &str, method: &str, body: Value) -> Answer {
        let response = reqwest::Client::new()
            .post(format!("{}/bot{token}/{method}", fake.api_base_url))
            .json(&body)
            .send()
            .await
            .unwrap();
        Answer {
            status: response.status().as_u16(),
            retry_after: response
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned()),
            body: response.json().await.unwrap(),
        }
    }

    async fn call(fake: &TelegramFake, method: &str, body: Value) -> Answer {
        call_as(fake, TOKEN, method, body).await
    }

    fn keyboard(url: &str) -> Value {
        json!({"inline_keyboard": [[{"text": "Authorize account", "url": url}]]})
    }

    fn link_message() -> Value {
        json!({
            "chat_id": CHAT,
            "text": "Authorize your Salesforce account to continue.",
            "link_preview_options": {"is_disabled": true},
            "reply_markup": keyboard("https://auth.example.com/l/7f3c"),
        })
    }

    async fn bot() -> TelegramFake {
        let fake = TelegramFake::spawn(TOKEN).await;
        fake.add_chat(CHAT);
        fake
    }

    fn bad(description: &str) -> Value {
        json!({"ok": false, "error_code": 400, "description": description})
    }

    #[tokio::test]
    async fn send_message_answers_the_sent_message_and_records_it() {
        let fake = bot().await;
        let sent = call(&fake, "sendMessage", link_message()).await;
        assert_eq!(sent.status, 200);
        assert_eq!(sent.body["ok"], true);
        let result = &sent.body["result"];
        assert_eq!(result["message_id"], 1);
        assert_eq!(result["chat"]["id"], CHAT);
        assert_eq!(result["chat"]["type"], "private");
        assert_eq!(result["from"]["id"], 123456789);
        assert_eq!(
            result["text"],
            "Authorize your Salesforce account to continue."
        );
        assert_eq!(
            result["reply_markup"],
            keyboard("https://auth.example.com/l/7f3c")
        );
        assert!(result["date"].as_u64().unwrap() > 1_600_000_000);

        // Method names are case-insensitive; ids increase per chat.
        let again = call(
            &fake,
            "SENDMESSAGE",
            json!({"chat_id": CHAT.to_string(), "text": "2"}),
        )
        .await;
        assert_eq!(again.body["result"]["message_id"], 2);
        let messages = fake.messages(CHAT);
        assert_eq!(messages.len(), 2);
        assert_eq!(
            messages[0].link_preview_options,
            Some(json!({"is_disabled": true}))
        );
        assert_eq!(messages[1].reply_markup, None);
        let requests = fake.requests();
        assert_eq!(
            (requests[0].method.as_str(), requests[0].token.as_str()),
            ("sendMessage", TOKEN)
        );
        assert_eq!(
            (requests[0].status, &requests[0].params),
            (200, &link_message())
        );
    }

    #[tokio::test]
    async fn bad_paths_and_tokens_are_404_and_401() {
        let fake = bot().await;
        for token in ["notatoken", "0123:abc", "123456789:", "123:a/b"] {
            let answer = call_as(&fake, token, "sendMessage", link_message()).await;
            assert_eq!(answer.status, 404, "{token}");
            assert_eq!(
                answer.body,
                json!({"ok": false, "error_code": 404, "description": "Not Found"})
            );
        }
        let unknown = call_as(
            &fake,
            "123456789:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            "sendMessage",
            link_message(),
        )
        .await;
        assert_eq!(unknown.status, 401);
        assert_eq!(
            unknown.body,
            json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
        );
        let method = call(&fake, "sendMessages", link_message()).await;
        assert_eq!(method.status, 404);
        let root = reqwest::get(format!("{}/sendMessage", fake.base_url))
            .await
            .unwrap();
        assert_eq!(root.status(), 404);
        assert!(fake.messages(CHAT).is_empty());
    }

    #[tokio::test]
    async fn chats_texts_and_keyboards_are_checked_like_the_bot_api() {
        let fake = bot().await;
        fake.add_chat(42);
        fake.block_bot(42);
        let with = |key: &str, value: Value| {
            let mut body = link_message();
            body[key] = value;
            body
        };
        let cases = [
            (
                with("chat_id", json!(1)),
                400,
                "Bad Request: chat not found",
            ),
            (json!({"text": "x"}), 400, "Bad Request: chat_id is empty"),
            (
                with("chat_id", json!(42)),
                403,
                "Forbidden: bot was blocked by the user",
            ),
            (
                with("text", json!("")),
                400,
                "Bad Request: message text is empty",
            ),
            (
                with("text", json!("x".repeat(4097))),
                400,
                "Bad Request: message is too long",
            ),
            (
                with(
                    "reply_markup",
                    json!({"inline_keyboard": [{"text": "a", "url": "https://a.example"}]}),
                ),
                400,
                "Bad Request: field \"inline_keyboard\" of the InlineKeyboardMarkup must be an Array of Arrays",
            ),
            (
                with(
                    "reply_markup",
                    json!({"inline_keyboard": [[{"text": "no action"}]]}),
                ),
                400,
                "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
            ),
            (
                with(
                    "reply_markup",
                    json!({"inline_keyboard": [[{"url": "https://a.example"}]]}),
                ),
                400,
                "Bad Request: can't parse inline keyboard button: Can't find field \"text\"",
            ),
            (
                with("reply_markup", keyboard("http://localhost:8080/l/1")),
                400,
                "Bad Request: inline keyboard button URL 'http://localhost:8080/l/1' is invalid: Wrong HTTP URL",
            ),
            (
                with("reply_markup", keyboard("ftp://files.example.com/x")),
                400,
                "Bad Request: inline keyboard button URL 'ftp://files.example.com/x' is invalid: Unsupported URL protocol",
            ),
            (
                with("reply_markup", json!("{not json")),
                400,
                "Bad Request: can't parse reply keyboard markup JSON object",
            ),
        ];
        for (body, code, description) in cases {
            let answer = call(&fake, "sendMessage", body).await;
            assert_eq!(answer.status, code, "{description}");
            assert_eq!(
                answer.body,
                json!({"ok": false, "error_code": code, "description": description})
            );
        }
        let two_actions = with(
            "reply_markup",
            json!({"inline_keyboard": [[{"text": "a", "url": "https://a.example", "callback_data": "x"}]]}),
        );
        assert_eq!(call(&fake, "sendMessage", two_actions).await.status, 400);
        assert!(fake.messages(CHAT).is_empty());

        // IP literals have dots and pass; 4096 characters fit; a JSON-string markup is parsed.
        let loopback = with(
            "reply_markup",
            json!(keyboard("http://127.0.0.1:8080/l/1").to_string()),
        );
        assert_eq!(call(&fake, "sendMessage", loopback).await.status, 200);
        let longest = with("text", json!("é".repeat(MAX_TEXT)));
        assert_eq!(call(&fake, "sendMessage", longest).await.status, 200);
        assert_eq!(
            fake.messages(CHAT)[0].reply_markup,
            Some(keyboard("http://127.0.0.1:8080/l/1"))
        );
    }

    #[tokio::test]
    async fn edits_replace_the_message_and_refuse_no_ops_and_unknown_ids() {
        let fake = bot().await;
        call(&fake, "sendMessage", link_message()).await;
        let done = json!({"chat_id": CHAT, "message_id": 1, "text": "Connected ✓"});
        let edited = call(&fake, "editMessageText", done.clone()).await;
        assert_eq!(edited.status, 200);
        assert_eq!(edited.body["result"]["text"], "Connected ✓");
        assert_eq!(edited.body["result"]["message_id"], 1);
        assert!(edited.body["result"]["edit_date"].is_u64());
        assert!(
            edited.body["result"].get("reply_markup").is_none(),
            "no reply_markup: keyboard removed"
        );
        let now = &fake.messages(CHAT)[0];
        assert_eq!(
            (now.text.as_str(), &now.reply_markup, now.edits),
            ("Connected ✓", &None, 1)
        );

        let same = call(&fake, "editMessageText", done).await;
        assert_eq!((same.status, same.body), (400, bad(NOT_MODIFIED)));
        let unknown = json!({"chat_id": CHAT, "message_id": 99, "text": "x"});
        let unknown = call(&fake, "editMessageText", unknown).await;
        assert_eq!(unknown.body, bad("Bad Request: message to edit not found"));

        let markup = json!({"chat_id": CHAT, "message_id": 1, "reply_markup": keyboard("https://a.example/again")});
        let remarked = call(&fake, "editMessageReplyMarkup", markup.clone()).await;
        assert_eq!(
            remarked.body["result"]["reply_markup"],
            keyboard("https://a.example/again")
        );
        assert_eq!(remarked.body["result"]["text"], "Connected ✓");
        assert_eq!(
            call(&fake, "editMessageReplyMarkup", markup).await.body,
            bad(NOT_MODIFIED)
        );

        let delete = json!({"chat_id": CHAT, "message_id": 1});
        let deleted = call(&fake, "deleteMessage", delete.clone()).await;
        assert_eq!(deleted.body, json!({"ok": true, "result": true}));
        assert!(fake.messages(CHAT).is_empty());
        let again = call(&fake, "deleteMessage", delete).await;
        assert_eq!(again.body, bad("Bad Request: message to delete not found"));
    }

    #[tokio::test]
    async fn armed_rate_limits_and_failures_answer_once_each() {
        let fake = bot().await;
        fake.rate_limit_next(1, 7);
        fake.fail_next(403, "Forbidden: bot was kicked from the group chat");
        let limited = call(&fake, "sendMessage", link_message()).await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.retry_after.as_deref(), Some("7"));
        assert_eq!(
            limited.body,
            json!({
                "ok": false,
                "error_code": 429,
                "description": "Too Many Requests: retry after 7",
                "parameters": {"retry_after": 7},
            })
        );
        let failed = call(&fake, "sendMessage", link_message()).await;
        assert_eq!((failed.status, failed.retry_after), (403, None));
        assert_eq!(
            failed.body["description"],
            "Forbidden: bot was kicked from the group chat"
        );
        assert_eq!(call(&fake, "sendMessage", link_message()).await.status, 200);
        assert_eq!(fake.messages(CHAT).len(), 1);
        let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
        assert_eq!(statuses, [429, 403, 200]);
    }
}
