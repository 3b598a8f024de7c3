//! A real Matrix homeserver for the link-delivery tests: Synapse (tests/matrix, a venv that
//! `.ci/test` installs) on a free loopback port, with users registered through the shared-secret
//! admin API and rooms made over the Client-Server API. The self-tests below pin down the Synapse
//! behaviours the Matrix adapter relies on: txnId dedupe, `m.replace` edits, and the error shapes
//! (403 `M_FORBIDDEN`, 401 `M_UNKNOWN_TOKEN`, 429 `M_LIMIT_EXCEEDED`).

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::servers::free_port;

/// The homeserver's `server_name`: user ids are `@<localpart>:authlink.test`.
pub const SERVER_NAME: &str = "authlink.test";
/// `registration_shared_secret` (loopback only, a throwaway server).
const SHARED_SECRET: &str = "authlink-test-registration-secret";
/// The tight message limit `Synapse::start_tight` configures (`rc_message`).
pub const TIGHT_PER_SECOND: f64 = 0.2;
/// How long Synapse may take to answer `/_matrix/client/versions` (~2 s on an idle machine,
/// several times that on a loaded 2-core one).
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A registered user and the access token of its one device.
#[derive(Clone, Debug)]
pub struct MatrixUser {
    pub user_id: String,
    pub access_token: String,
    pub device_id: String,
    /// For `Synapse::login` (a second device).
    pub password: String,
}

/// One Synapse process (under tests/matrix/launch.py, which stops it and removes its data
/// directory when its stdin closes — on Drop, or when the test process ends in any way).
pub struct Synapse {
    /// `http://127.0.0.1:<port>`, what a Matrix client is configured with.
    pub base_url: String,
    /// Started by `start_tight`: `rc_message` is 0.2/s with a burst of 1 for users put under
    /// `limit_messages`.
    pub tight: bool,
    launcher: Child,
    /// Closing it stops Synapse.
    stdin: Option<ChildStdin>,
    /// Removed by the launcher when told to stop; TempDir's own removal covers the rest.
    dir: tempfile::TempDir,
    /// The admin used for rate-limit overrides (registered on first use).
    admin: tokio::sync::OnceCell<MatrixUser>,
}

impl Synapse {
    /// A fresh homeserver with rate limits effectively off.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// A fresh homeserver whose `rc_message` is tight (0.2/s, burst 1: one event, then one per
    /// 5 s). Every user `register` makes is exempted (so room setup is not limited) until
    /// `limit_messages` puts it under that limit.
    pub fn start_tight() -> Self {
        Self::start_with(true)
    }

    /// The homeserver this test binary shares (loose limits), started by the first test asking
    /// for it; tests keep apart by registering their own users and rooms. It stops when the
    /// test process ends.
    pub fn shared() -> &'static Synapse {
        static SHARED: OnceLock<Synapse> = OnceLock::new();
        SHARED.get_or_init(Synapse::start)
    }

    fn start_with(tight: bool) -> Self {
        // A port found free may be taken by a parallel test before Synapse binds it: then start
        // again on another one.
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(tight) {
                Ok(synapse) => return synapse,
                Err((true, logs)) => last = logs,
                Err((false, logs)) => panic!("Synapse exited at start-up:\n{logs}"),
            }
        }
        panic!("Synapse found no free port in three tries:\n{last}")
    }

    /// The server once it answers; or, if Synapse exited before, whether its port was taken
    /// and the tail of its logs.
    fn try_start(tight: bool) -> Result<Self, (bool, String)> {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/matrix/.venv/bin/python");
        assert!(
            Path::new(venv).exists(),
            "no Synapse venv at {venv}: run .ci/test, or python3 -m venv tests/matrix/.venv && \
             tests/matrix/.venv/bin/pip install -r tests/matrix/requirements.txt"
        );
        let dir = tempfile::Builder::new()
            .prefix("authlink-synapse-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let output = std::fs::File::create(dir.path().join("launcher.log")).unwrap();
        let mut command = Command::new(venv);
        command
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/matrix/launch.py"
            ))
            .arg(dir.path())
            .arg(port.to_string())
            .args([
                "--server-name",
                SERVER_NAME,
                "--shared-secret",
                SHARED_SECRET,
            ])
            .arg("--cleanup")
            // Piped: the launcher stops Synapse when this handle closes, even if the test dies.
            .stdin(Stdio::piped())
            .stdout(Stdio::from(output.try_clone().unwrap()))
            .stderr(Stdio::from(output))
            .env_remove("SYNAPSE_TIGHT_RC_MESSAGE");
        if tight {
            command.arg("--tight-rc-message");
        }
        let started = Instant::now();
        let mut launcher = command.spawn().expect("the Synapse venv's python runs");
        let stdin = launcher.stdin.take();
        let mut synapse = Self {
            base_url: format!("http://127.0.0.1:{port}"),
            tight,
            launcher,
            stdin,
            dir,
            admin: tokio::sync::OnceCell::new(),
        };
        let end = started + READY_WITHIN;
        while Instant::now() < end {
            if versions_answers(port) {
                eprintln!(
                    "Synapse{} ready on port {port} after {:?}",
                    if tight { " (tight rc_message)" } else { "" },
                    started.elapsed()
                );
                return Ok(synapse);
            }
            if let Ok(Some(status)) = synapse.launcher.try_wait() {
                let taken = synapse.logs(usize::MAX).contains("Address already in use");
                return Err((taken, format!("launcher: {status}\n{}", synapse.log_tail())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "Synapse did not answer /_matrix/client/versions within {READY_WITHIN:?}:\n{}",
            synapse.log_tail()
        );
    }

    /// The last lines of Synapse's log (WARNING and up) and of the processes' own output.
    pub fn log_tail(&self) -> String {
        self.logs(40)
    }

    fn logs(&self, last: usize) -> String {
        ["homeserver.log", "launcher.log"]
            .iter()
            .map(|name| {
                let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(last)..].join("\n");
                format!("--- {name}\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A request with this token (if any) and JSON body (if any). A client per call: the shared
    /// instance outlives each test's runtime, and a pooled connection must not.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new().request(method, self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        request.send().await.unwrap()
    }

    async fn ok(&self, method: Method, path: &str, token: Option<&str>, body: &Value) -> Value {
        let what = format!("{method} {path}");
        json_ok(&what, self.call(method, path, token, Some(body)).await).await
    }

    /// A fresh user `@<prefix>-<random>:authlink.test` (not an admin), logged in on one device.
    pub async fn register(&self, localpart_prefix: &str) -> MatrixUser {
        let user = self.register_as(localpart_prefix, false).await;
        if self.tight {
            self.set_message_override(&user, Some((0, 0))).await;
        }
        user
    }

    /// Shared-secret registration (`/_synapse/admin/v1/register`): a nonce, then the user with
    /// an HMAC-SHA1 over nonce, name, password and admin flag.
    async fn register_as(&self, localpart_prefix: &str, admin: bool) -> MatrixUser {
        let path = "/_synapse/admin/v1/register";
        let nonce = json_ok(path, self.call(Method::GET, path, None, None).await).await["nonce"]
            .as_str()
            .unwrap()
            .to_owned();
        let username = format!(
            "{}-{:016x}",
            localpart_prefix.to_lowercase(),
            rand::random::<u64>()
        );
        let password = format!("pw-{:016x}", rand::random::<u64>());
        let flag = if admin { "admin" } else { "notadmin" };
        let mac = hmac_sha1_hex(
            SHARED_SECRET.as_bytes(),
            format!("{nonce}\0{username}\0{password}\0{flag}").as_bytes(),
        );
        let r = self
            .ok(
                Method::POST,
                path,
                None,
                &json!({"nonce": nonce, "username": username, "password": password,
                        "admin": admin, "mac": mac}),
            )
            .await;
        MatrixUser {
            user_id: r["user_id"].as_str().unwrap().to_owned(),
            access_token: r["access_token"].as_str().unwrap().to_owned(),
            device_id: r["device_id"].as_str().unwrap().to_owned(),
            password,
        }
    }

    /// The same user on a new device (a new access token; txnIds are per device).
    pub async fn login(&self, user: &MatrixUser) -> MatrixUser {
        let r = self
            .ok(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                &json!({"type": "m.login.password",
                        "identifier": {"type": "m.id.user", "user": user.user_id},
                        "password": user.password}),
            )
            .await;
        MatrixUser {
            user_id: r["user_id"].as_str().unwrap().to_owned(),
            access_token: r["access_token"].as_str().unwrap().to_owned(),
            device_id: r["device_id"].as_str().unwrap().to_owned(),
            password: user.password.clone(),
        }
    }

    /// Invalidates this device's access token (it then answers 401 `M_UNKNOWN_TOKEN`).
    pub async fn logout(&self, user: &MatrixUser) {
        self.ok(
            Method::POST,
            "/_matrix/client/v3/logout",
            Some(&user.access_token),
            &json!({}),
        )
        .await;
    }

    async fn admin(&self) -> &MatrixUser {
        self.admin
            .get_or_init(|| self.register_as("admin", true))
            .await
    }

    /// `Some((per_second, burst))` sets the user's message-rate override (0, 0 = unlimited, and
    /// it then bypasses every other limiter too); `None` removes it (the config applies).
    async fn set_message_override(&self, user: &MatrixUser, rate: Option<(u32, u32)>) {
        let path = format!(
            "/_synapse/admin/v1/users/{}/override_ratelimit",
            segment(&user.user_id)
        );
        let token = self.admin().await.access_token.clone();
        let r = match rate {
            Some((per_second, burst)) => {
                let body = json!({"messages_per_second": per_second, "burst_count": burst});
                self.call(Method::POST, &path, Some(&token), Some(&body))
                    .await
            }
            None => self.call(Method::DELETE, &path, Some(&token), None).await,
        };
        json_ok(&path, r).await;
    }

    /// Puts `user` under the tight `rc_message` (on a `start_tight` server only): its next event
    /// passes, the one after is answered 429 for the next 5 s.
    pub async fn limit_messages(&self, user: &MatrixUser) {
        assert!(self.tight, "limit_messages needs Synapse::start_tight()");
        self.set_message_override(user, None).await;
    }

    /// A private room (`private_chat`: invite only, members may post) owned by `owner`.
    pub async fn create_room(&self, owner: &MatrixUser) -> String {
        self.ok(
            Method::POST,
            "/_matrix/client/v3/createRoom",
            Some(&owner.access_token),
            &json!({"preset": "private_chat", "name": "authlink test room"}),
        )
        .await["room_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `owner` invites `other`, who joins: then `other` (a bot) may post.
    pub async fn invite_and_join(&self, room: &str, owner: &MatrixUser, other: &MatrixUser) {
        self.ok(
            Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/invite", segment(room)),
            Some(&owner.access_token),
            &json!({"user_id": other.user_id}),
        )
        .await;
        self.ok(
            Method::POST,
            &format!("/_matrix/client/v3/join/{}", segment(room)),
            Some(&other.access_token),
            &json!({}),
        )
        .await;
    }

    /// `owner` kicks `other` out of the room.
    pub async fn kick(&self, room: &str, owner: &MatrixUser, other: &MatrixUser) {
        self.ok(
            Method::POST,
            &format!("/_matrix/client/v3/rooms/{}/kick", segment(room)),
            Some(&owner.access_token),
            &json!({"user_id": other.user_id, "reason": "test"}),
        )
        .await;
    }

    /// The path of `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txn_id}`.
    pub fn send_path(room: &str, txn_id: &str) -> String {
        format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            segment(room),
            segment(txn_id)
        )
    }

    /// That PUT with this token, as it answers (for tests of the error shapes).
    pub async fn send_raw(
        &self,
        access_token: &str,
        room: &str,
        txn_id: &str,
        content: &Value,
    ) -> reqwest::Response {
        let path = Self::send_path(room, txn_id);
        self.call(Method::PUT, &path, Some(access_token), Some(content))
            .await
    }

    /// Sends `content` as `user` with this txnId; the event id (asserting 200).
    pub async fn send(
        &self,
        user: &MatrixUser,
        room: &str,
        txn_id: &str,
        content: &Value,
    ) -> String {
        let r = self
            .send_raw(&user.access_token, room, txn_id, content)
            .await;
        json_ok("send", r).await["event_id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Sends `content` as `user` with a fresh txnId; the event id.
    pub async fn send_message(&self, user: &MatrixUser, room: &str, content: &Value) -> String {
        let txn = format!("t{:016x}", rand::random::<u64>());
        self.send(user, room, &txn, content).await
    }

    /// Edits `original` (an event of `user`'s) to `new_content`; the edit's event id.
    pub async fn edit(
        &self,
        user: &MatrixUser,
        room: &str,
        original: &str,
        new_content: &Value,
    ) -> String {
        self.send_message(user, room, &replacement(original, new_content))
            .await
    }

    /// The room's `m.room.message` events as `user` sees them, oldest first, edits included
    /// (every page of `/messages`, newest first, then reversed).
    pub async fn messages(&self, user: &MatrixUser, room: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
                segment(room)
            );
            if let Some(token) = &from {
                path.push_str(&format!("&from={}", segment(token)));
            }
            let page = json_ok(
                &path,
                self.call(Method::GET, &path, Some(&user.access_token), None)
                    .await,
            )
            .await;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            events.extend(
                chunk
                    .iter()
                    .filter(|e| e["type"] == "m.room.message")
                    .cloned(),
            );
            match page["end"].as_str() {
                Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
                _ => break,
            }
        }
        events.reverse();
        events
    }

    /// What a client shows for `event_id`: the `m.new_content` of the latest edit by the same
    /// sender, or the event's own content if it was never edited.
    pub async fn current_content(&self, user: &MatrixUser, room: &str, event_id: &str) -> Value {
        let events = self.messages(user, room).await;
        let original = events
            .iter()
            .find(|e| e["event_id"] == event_id)
            .unwrap_or_else(|| panic!("{event_id} is not in {room}"));
        events
            .iter()
            .rev()
            .find(|e| {
                e["sender"] == original["sender"]
                    && e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                    && e["content"]["m.relates_to"]["event_id"] == event_id
            })
            .map(|edit| edit["content"]["m.new_content"].clone())
            .unwrap_or_else(|| original["content"].clone())
    }
}

impl Drop for Synapse {
    /// Stops Synapse (the launcher SIGKILLs it and removes the data directory) and waits.
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if !matches!(self.launcher.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A launcher that does not stop: its Synapse dies with it (PR_SET_PDEATHSIG).
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
    }
}

/// An HTML `m.notice`, the shape authlink posts links in.
pub fn html_notice(body: &str, formatted_body: &str) -> Value {
    json!({
        "msgtype": "m.notice",
        "body": body,
        "format": "org.matrix.custom.html",
        "formatted_body": formatted_body,
    })
}

/// The content of an `m.replace` edit of `original`: a `* `-prefixed fallback for clients
/// without edits, the new content, and the relation.
pub fn replacement(original: &str, new_content: &Value) -> Value {
    let mut content = new_content.clone();
    let fallback = format!("* {}", new_content["body"].as_str().unwrap_or_default());
    content["body"] = json!(fallback);
    if let Some(html) = new_content["formatted_body"].as_str() {
        content["formatted_body"] = json!(format!("* {html}"));
    }
    content["m.new_content"] = new_content.clone();
    content["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": original});
    content
}

/// The body of a 2xx answer (panicking with the status and body otherwise).
async fn json_ok(what: &str, r: reqwest::Response) -> Value {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{what}: {status} {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}: {text}"))
}

/// Whether `GET /_matrix/client/versions` answers 200 (blocking: start-up runs outside any
/// runtime's reach, and the `OnceLock` initialiser cannot await).
fn versions_answers(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /_matrix/client/versions HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if s.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 16];
    let mut got = 0;
    while got < head.len() {
        match s.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.0 200") || head[..got].starts_with(b"HTTP/1.1 200")
}

/// A path segment, percent-encoded (room ids carry `!` and `:`, tokens `~` and `_`).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// HMAC-SHA1 (RFC 2104), hex: what Synapse's shared-secret registration expects.
fn hmac_sha1_hex(key: &[u8], message: &[u8]) -> String {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..20].copy_from_slice(&sha1_smol::Sha1::from(key).digest().bytes());
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha1_smol::Sha1::new();
    inner.update(&block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = sha1_smol::Sha1::new();
    outer.update(&block.map(|b| b ^ 0x5c));
    outer.update(&inner.digest().bytes());
    outer.digest().to_string()
}

async fn errcode(r: reqwest::Response) -> (StatusCode, Value) {
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[test]
fn hmac_sha1_matches_rfc_2202() {
    assert_eq!(
        hmac_sha1_hex(b"Jefe", b"what do ya want for nothing?"),
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
    );
    assert_eq!(
        hmac_sha1_hex(
            &[0xaa; 80],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        ),
        "aa4ae5e15272d00e95705637ce8a3b55ed402112"
    );
}

/// The delivery the adapter does: a bot in the room posts an HTML notice, which the other member
/// reads back; the same PUT again (same txnId, same token) is the same event, posted once; an
/// edit replaces what clients show.
#[tokio::test]
async fn a_bot_posts_an_html_notice_once_per_txn_id_and_edits_it() {
    let hs = Synapse::shared();
    let alice = hs.register("alice").await;
    let bot = hs.register("bot").await;
    let room = hs.create_room(&alice).await;
    hs.invite_and_join(&room, &alice, &bot).await;

    let notice = html_notice(
        "Connect CRM: https://auth.example/l/abc",
        "<a href=\"https://auth.example/l/abc\">Connect CRM</a>",
    );
    let first = hs.send(&bot, &room, "link-1", &notice).await;
    let again = hs.send(&bot, &room, "link-1", &notice).await;
    assert_eq!(again, first, "a repeated txnId answers the same event id");
    // The dedupe is by txnId, not content: a retry with a changed body is still the first event.
    let changed = hs
        .send(&bot, &room, "link-1", &html_notice("other", "other"))
        .await;
    assert_eq!(changed, first);

    let seen = hs.messages(&alice, &room).await;
    assert_eq!(seen.len(), 1, "posted once: {seen:#?}");
    assert_eq!(seen[0]["event_id"], first.as_str());
    assert_eq!(seen[0]["sender"], bot.user_id.as_str());
    assert_eq!(seen[0]["content"], notice);

    // The same txnId from another device of the bot is another transaction.
    let bot2 = hs.login(&bot).await;
    assert_ne!(bot2.device_id, bot.device_id);
    let other_device = hs.send(&bot2, &room, "link-1", &notice).await;
    assert_ne!(other_device, first, "txnIds are scoped to the device");

    let done = html_notice("CRM connected ✓", "<b>CRM connected ✓</b>");
    let edit = hs.edit(&bot, &room, &first, &done).await;
    let seen = hs.messages(&alice, &room).await;
    assert_eq!(seen.len(), 3);
    let last = &seen[2];
    assert_eq!(last["event_id"], edit.as_str());
    assert_eq!(last["content"]["m.relates_to"]["rel_type"], "m.replace");
    assert_eq!(last["content"]["m.relates_to"]["event_id"], first.as_str());
    assert_eq!(last["content"]["m.new_content"], done);
    assert_eq!(last["content"]["body"], "* CRM connected ✓");
    assert_eq!(hs.current_content(&alice, &room, &first).await, done);
    // Synapse no longer rewrites the original's content (MSC3925); it stays as posted.
    assert_eq!(seen[0]["content"], notice);
}

/// The answers the adapter must tell apart: not in the room (never invited, or kicked) is 403
/// `M_FORBIDDEN`; a bad or logged-out token is 401 `M_UNKNOWN_TOKEN`; no token is 401
/// `M_MISSING_TOKEN`.
#[tokio::test]
async fn forbidden_rooms_and_bad_tokens_answer_matrix_errors() {
    let hs = Synapse::shared();
    let alice = hs.register("alice").await;
    let bot = hs.register("bot").await;
    let room = hs.create_room(&alice).await;
    let notice = html_notice("link", "<a href=\"https://x\">link</a>");

    let (status, body) = errcode(hs.send_raw(&bot.access_token, &room, "t1", &notice).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    let (status, body) = errcode(hs.send_raw("not-a-token", &room, "t1", &notice).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body}");

    let path = Synapse::send_path(&room, "t1");
    let (status, body) = errcode(hs.call(Method::PUT, &path, None, Some(&notice)).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_MISSING_TOKEN", "{body}");

    // Joined, it posts; kicked, it is forbidden again.
    hs.invite_and_join(&room, &alice, &bot).await;
    hs.send(&bot, &room, "t2", &notice).await;
    hs.kick(&room, &alice, &bot).await;
    let (status, body) = errcode(hs.send_raw(&bot.access_token, &room, "t3", &notice).await).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{body}");

    // A logged-out token is unknown.
    let gone = hs.login(&bot).await;
    hs.logout(&gone).await;
    let (status, body) = errcode(hs.send_raw(&gone.access_token, &room, "t4", &notice).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errcode"], "M_UNKNOWN_TOKEN", "{body}");
    assert_eq!(hs.messages(&alice, &room).await.len(), 1);
}

/// A tight `rc_message`: the bot's second message within 5 s is answered 429 `M_LIMIT_EXCEEDED`
/// with `retry_after_ms` and a `Retry-After` header (whole seconds, rounded up); the error is
/// not cached for the txnId, so retrying the same txnId later posts the message, once.
#[tokio::test]
async fn a_tight_message_limit_answers_429_and_the_same_txn_id_passes_later() {
    let hs = Synapse::start_tight();
    let alice = hs.register("alice").await;
    let bot = hs.register("bot").await;
    let room = hs.create_room(&alice).await;
    hs.invite_and_join(&room, &alice, &bot).await;
    hs.limit_messages(&bot).await;

    let notice = html_notice("link", "<a href=\"https://x\">link</a>");
    hs.send(&bot, &room, "a", &notice).await;
    let r = hs.send_raw(&bot.access_token, &room, "b", &notice).await;
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    eprintln!("429 shape: status {status}, Retry-After {retry_after:?}, body {body}");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    let ms = body["retry_after_ms"].as_u64().expect("retry_after_ms");
    let limit_ms = (1000.0 / TIGHT_PER_SECOND) as u64;
    assert!(0 < ms && ms <= limit_ms, "retry_after_ms {ms}");
    let seconds: u64 = retry_after.expect("a Retry-After header").parse().unwrap();
    assert_eq!(
        seconds,
        ms.div_ceil(1000),
        "Retry-After is retry_after_ms rounded up"
    );

    // The same txnId is retried until the limit lets it through: a bounded loop without sleeps,
    // since Synapse holds each 429 for 0.5 s.
    let end = Instant::now() + Duration::from_millis(limit_ms + 5000);
    let posted = loop {
        let r = hs.send_raw(&bot.access_token, &room, "b", &notice).await;
        if r.status() == StatusCode::OK {
            break r.json::<Value>().await.unwrap()["event_id"].clone();
        }
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(Instant::now() < end, "still limited after {limit_ms} ms");
    };
    let seen = hs.messages(&alice, &room).await;
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[1]["event_id"], posted);
}
