//! One integration, laid out like the seed product's settings page: who authorizes (users, or
//! pre-authorized by an admin), which OAuth app (system or a custom authorization profile,
//! created here with Salesforce's URLs filled in), **Authorize** for a pre-authorized one, and
//! the connections with **Test** and **Disconnect**.

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::{Value, json};

use super::html::{copyable, input, input_as, notice, radios, table};
use super::text::T;
use super::{Answer, Form, Signed, answer, csrf_field, done, done_notice, failed, json_body};
use crate::flow::AppState;
use crate::routes::pages::esc;
use crate::routes::{admin, profiles, sessions, tokens};

/// The user id of the bot-wide grant of a pre-authorized integration.
const BOT_GRANT: &str = "_bot";

fn s(v: &Value) -> String {
    esc(v.as_str().unwrap_or(""))
}

/// Salesforce's endpoints and the scopes the seed product asks for, for a new custom profile.
const SALESFORCE_PROFILE: [(&str, &str); 4] = [
    (
        "authorization_url",
        "https://login.salesforce.com/services/oauth2/authorize",
    ),
    (
        "token_url",
        "https://login.salesforce.com/services/oauth2/token",
    ),
    (
        "refresh_token_url",
        "https://login.salesforce.com/services/oauth2/token",
    ),
    ("scopes", "full refresh_token offline_access"),
];

const SETTINGS_FIELDS: [&str; 4] = ["display_name", "mode", "profile", "scopes"];
const PROFILE_FIELDS: [&str; 7] = [
    "name",
    "client_id",
    "client_secret",
    "authorization_url",
    "token_url",
    "refresh_token_url",
    "scopes",
];

fn base(bot: &str, name: &str) -> String {
    format!("/console/bots/{}/integrations/{}", esc(bot), esc(name))
}

/// What a POST wants shown besides the page.
#[derive(Default)]
struct Extra {
    settings: Option<(Answer, Form)>,
    profile: Option<(Answer, Form)>,
    /// A result line: (ok, text).
    result: Option<(bool, String)>,
    /// A session link just created.
    link: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    page(&state, &signed, &bot, &name, uri.query(), Extra::default()).await
}

async fn page(
    state: &AppState,
    signed: &Signed,
    bot: &str,
    name: &str,
    q: Option<&str>,
    extra: Extra,
) -> Response {
    let st = || State(state.clone());
    let c = || signed.caller.clone();
    let integration =
        answer(admin::get_integration(st(), c(), Path((bot.to_owned(), name.to_owned()))).await)
            .await;
    if !integration.ok() {
        return failed(signed, &integration);
    }
    let profiles = answer(profiles::list(st(), c(), Path(bot.to_owned())).await).await;
    let connections = answer(
        tokens::list_connections(
            st(),
            c(),
            Path((bot.to_owned(), name.to_owned())),
            super::bots::query("limit=100"),
        )
        .await,
    )
    .await;
    let bot_grant = answer(
        tokens::connection(
            st(),
            c(),
            Path((bot.to_owned(), name.to_owned(), BOT_GRANT.to_owned())),
        )
        .await,
    )
    .await;
    let f = signed.frame();
    let i = &integration.body;
    let here = base(bot, name);
    let csrf = csrf_field(signed);
    let salesforce = i["provider"] == "salesforce";
    let pre = i["mode"] == "pre_authorized";
    let mut out = done_notice(&f, q);
    if q == Some("done=authorized") {
        out = String::new();
    }
    if let Some((ok, text)) = &extra.result {
        out.push_str(&notice(text, *ok));
    }

    // What the choice means for the conversation.
    let who = bot_grant.ok().then(|| identity_name(&bot_grant.body));
    let means = match (pre, &who) {
        (false, _) => esc(f.t(T::MeansUser)),
        (true, Some(who)) => f.tv(T::MeansPre, "who", who),
        (true, None) => esc(f.t(T::MeansPreNobody)),
    };
    out.push_str(&format!("<p class=\"notice\" role=\"status\">{means}</p>"));

    // Enabled or not, and the switch.
    let enabled = i["enabled"] != false;
    let (state_text, switch, to) = if enabled {
        (T::Enabled, T::Disable, "disable")
    } else {
        (T::Disabled, T::Enable, "enable")
    };
    out.push_str(&format!(
        "<p><strong>{}</strong> {}</p>",
        esc(f.t(state_text)),
        f.post_button(
            &format!("{here}/{to}"),
            switch,
            &signed.csrf,
            if enabled { "danger" } else { "" }
        )
    ));

    // Who authorizes, and with which app.
    let (typed, err) = match &extra.settings {
        Some((a, form)) => (Some(form), Some(a)),
        None => (None, None),
    };
    if let Some(e) = err {
        out.push_str(&notice(&e.detail(), false));
    }
    let mode = typed.map_or_else(
        || i["mode"].as_str().unwrap_or("user").to_owned(),
        |t| t.text("mode"),
    );
    let profile = i["profile"].as_str().unwrap_or("system");
    let app = typed.map_or_else(
        || {
            if profile == "system" {
                "system".into()
            } else {
                "custom".into()
            }
        },
        |t| t.text("app"),
    );
    let list: Vec<&Value> = profiles.body["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let options: String = list
        .iter()
        .map(|p| {
            let id = p["id"].as_str().unwrap_or("");
            format!(
                "<option value=\"{}\"{}>{} ({})</option>",
                esc(id),
                if id == profile { " selected" } else { "" },
                s(&p["name"]),
                s(&p["client_id"])
            )
        })
        .collect();
    let chooser = if list.is_empty() {
        format!("<p class=\"hint\">{}</p>", esc(f.t(T::NoProfiles)))
    } else {
        format!(
            "<div class=\"field\"><label for=\"f-profile\">{}</label><select id=\"f-profile\" name=\"profile\">{options}</select></div>",
            esc(f.t(T::Profile))
        )
    };
    let scopes = typed.map_or_else(
        || {
            i["scopes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        },
        |t| t.text("scopes"),
    );
    let field_error = |f: &str| {
        err.filter(|e| e.field(&SETTINGS_FIELDS) == Some(f))
            .map(Answer::detail)
    };
    out.push_str(&format!(
        "<form method=\"post\" action=\"{here}\">{csrf}{display}{modes}{apps}{chooser}{scopes}<button type=\"submit\">{save}</button></form>",
        display = input(
            f.t(T::DisplayName),
            "display_name",
            &typed.map_or_else(|| i["display_name"].as_str().unwrap_or("").to_owned(), |t| t.text("display_name")),
            "text",
            field_error("display_name").as_deref()
        ),
        modes = radios(
            f.t(T::WhoAuthorizes),
            "mode",
            &[("user", f.t(T::ModeUser), f.t(T::MeansUser)), ("pre_authorized", f.t(T::ModePre), "")],
            &mode
        ),
        apps = radios(
            f.t(T::WhichApp),
            "app",
            &[("system", f.t(T::AppSystem), f.t(T::SystemMeans)), ("custom", f.t(T::AppCustom), "")],
            &app
        ),
        scopes = input(f.t(T::Scopes), "scopes", &scopes, "text", field_error("scopes").as_deref()),
        save = esc(f.t(T::Save)),
    ));
    if let Some(cb) = i["callback_url"].as_str() {
        out.push_str(&copyable(
            f.t(T::CallbackUrl),
            "callback-url",
            cb,
            f.t(T::Copy),
        ));
    }

    // Authorize (pre-authorized integrations).
    if pre {
        if let Some(who) = &who {
            // Its Test and Disconnect are in the connections below (user `_bot`).
            out.push_str(&format!("<p>{}</p>", f.tv(T::SignedInAs, "who", who)));
        }
        out.push_str(&format!(
            "<form method=\"post\" action=\"{here}/authorize\">{csrf}<p class=\"hint\">{}</p><button type=\"submit\">{}</button></form>",
            esc(f.t(T::AuthorizeHelp)),
            esc(f.t(T::Authorize))
        ));
    }

    // Try it (users authorize): a session link, as the dialog engine would get it.
    if !pre {
        out.push_str(&format!(
            "<h2>{title}</h2>{link}<form method=\"post\" action=\"{here}/links\">{csrf}<p class=\"hint\">{help}</p>{user}<button type=\"submit\">{create}</button></form>",
            title = esc(f.t(T::TryIt)),
            link = extra
                .link
                .as_deref()
                .map(|l| format!(
                    "<p class=\"notice\" role=\"status\">{} <a href=\"{l}\">{l}</a></p>",
                    esc(f.t(T::LinkReady)),
                    l = esc(l)
                ))
                .unwrap_or_default(),
            help = esc(f.t(T::TryItHelp)),
            user = input(f.t(T::UserId), "user_id", "", "text", None),
            create = esc(f.t(T::CreateLink)),
        ));
    }

    // A new custom profile (Salesforce's URLs filled in for a Salesforce integration).
    let (ptyped, perr) = match &extra.profile {
        Some((a, form)) => (Some(form), Some(a)),
        None => (None, None),
    };
    let prefill = |field: &str| -> String {
        match ptyped {
            Some(t) => t.text(field),
            None if salesforce => SALESFORCE_PROFILE
                .iter()
                .find(|(k, _)| *k == field)
                .map(|(_, v)| (*v).to_owned())
                .unwrap_or_default(),
            None => String::new(),
        }
    };
    let perror = |f: &str| {
        perr.filter(|e| e.field(&PROFILE_FIELDS) == Some(f))
            .map(Answer::detail)
    };
    let general = perr
        .filter(|e| e.field(&PROFILE_FIELDS).is_none())
        .map(|e| notice(&e.detail(), false))
        .unwrap_or_default();
    let mut fields = String::new();
    for (field, label, kind) in [
        ("name", T::Name, "text"),
        ("client_id", T::ClientId, "text"),
        ("client_secret", T::ClientSecret, "password"),
        ("authorization_url", T::AuthUrl, "url"),
        ("token_url", T::TokenUrl, "url"),
        ("refresh_token_url", T::RefreshUrl, "url"),
        ("scopes", T::Scopes, "text"),
    ] {
        // The secret is never echoed back, even after an error.
        let value = if field == "client_secret" {
            String::new()
        } else {
            prefill(field)
        };
        // The settings form above has its own `scopes`.
        let id = match field {
            "scopes" => "f-profile-scopes".to_owned(),
            _ => format!("f-{field}"),
        };
        fields.push_str(&input_as(
            &id,
            f.t(label),
            field,
            &value,
            kind,
            perror(field).as_deref(),
        ));
    }
    out.push_str(&format!(
        "<h2>{title}</h2>{general}<form method=\"post\" action=\"{here}/profiles\">{csrf}{fields}<button type=\"submit\">{create}</button></form>",
        title = esc(f.t(T::NewProfile)),
        create = esc(f.t(T::Create)),
    ));
    if !list.is_empty() {
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|p| {
                vec![
                    s(&p["name"]),
                    s(&p["client_id"]),
                    format!("<code>{}</code>", s(&p["callback_url"])),
                ]
            })
            .collect();
        out.push_str(&table(
            f.t(T::Profile),
            &[f.t(T::Name), f.t(T::ClientId), f.t(T::CallbackUrl)],
            &rows,
        ));
    }

    // Connections.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::Connections))));
    let rows: Vec<Vec<String>> = connections.body["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            let user = x["user_id"].as_str().unwrap_or("");
            let at = format!("{here}/connections/{}", urlencode(user));
            vec![
                esc(user),
                s(&x["status"]),
                esc(&identity_name(x)),
                s(x.get("refreshed_at")
                    .filter(|v| !v.is_null())
                    .unwrap_or(&x["created_at"])),
                format!(
                    "{}{}",
                    f.post_button(&format!("{at}/test"), T::Test, &signed.csrf, "secondary"),
                    f.post_button(
                        &format!("{at}/disconnect"),
                        T::Disconnect,
                        &signed.csrf,
                        "danger"
                    )
                ),
            ]
        })
        .collect();
    out.push_str(&if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoConnections)))
    } else {
        table(
            f.t(T::Connections),
            &[
                f.t(T::User),
                f.t(T::Status),
                f.t(T::Identity),
                f.t(T::Refreshed),
                f.t(T::Actions),
            ],
            &rows,
        )
    });
    out.push_str(&format!(
        "<p><a href=\"/console/bots/{}\">{}</a></p>",
        esc(bot),
        esc(f.t(T::Back))
    ));

    let title = i["display_name"].as_str().unwrap_or(name).to_owned();
    let status = [&extra.settings, &extra.profile]
        .iter()
        .find_map(|e| e.as_ref().map(|(a, _)| a.status))
        .unwrap_or(StatusCode::OK);
    f.page(status, &title, &out)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// How a connection's identity reads: its username or email, else the provider's user id.
fn identity_name(connection: &Value) -> String {
    let id = &connection["identity"];
    ["username", "email", "user_id"]
        .iter()
        .find_map(|k| id[*k].as_str())
        .unwrap_or("")
        .to_owned()
}

/// The integration's view without what `PUT` does not take (its path, times, callback URL).
fn stored(view: &Value) -> Value {
    let mut body = view.clone();
    if let Some(o) = body.as_object_mut() {
        for read_only in ["bot", "name", "created_at", "updated_at", "callback_url"] {
            o.remove(read_only);
        }
    }
    body
}

/// The integration as `PUT` takes it: what is stored, with the form's choices over it.
fn integration_body(current: &Value, form: &Form) -> Value {
    let mut body = stored(current);
    body["mode"] = json!(form.text("mode"));
    if form.get("display_name").is_some() {
        body["display_name"] = json!(form.text("display_name"));
    }
    body["profile"] = match form.text("app").as_str() {
        "custom" => json!(form.text("profile")),
        _ => json!("system"),
    };
    let scopes = form.list("scopes");
    body["scopes"] = if scopes.is_empty() {
        Value::Null
    } else {
        json!(scopes)
    };
    body
}

pub async fn update(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let path = || Path((bot.clone(), name.clone()));
    let current =
        answer(admin::get_integration(State(state.clone()), signed.caller.clone(), path()).await)
            .await;
    if !current.ok() {
        return failed(&signed, &current);
    }
    let a = answer(
        admin::put_integration(
            State(state.clone()),
            signed.caller.clone(),
            path(),
            json_body(&integration_body(&current.body, &form)),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&base(&bot, &name), "saved");
    }
    page(
        &state,
        &signed,
        &bot,
        &name,
        None,
        Extra {
            settings: Some((a, form)),
            ..Extra::default()
        },
    )
    .await
}

pub async fn create_profile(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let req = json!({
        "name": form.text("name"),
        "client_id": form.text("client_id"),
        "client_secret": form.text("client_secret"),
        "authorization_url": form.text("authorization_url"),
        "token_url": form.text("token_url"),
        "refresh_token_url": form.opt("refresh_token_url"),
        "scopes": form.list("scopes"),
    });
    let created = answer(
        profiles::create(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
            json_body(&req),
        )
        .await,
    )
    .await;
    if !created.ok() {
        return page(
            &state,
            &signed,
            &bot,
            &name,
            None,
            Extra {
                profile: Some((created, form)),
                ..Extra::default()
            },
        )
        .await;
    }
    // The new profile becomes the integration's app ("OAuth – Custom").
    let path = || Path((bot.clone(), name.clone()));
    let current =
        answer(admin::get_integration(State(state.clone()), signed.caller.clone(), path()).await)
            .await;
    let mut body = current.body.clone();
    let choose = Form(vec![
        (
            "mode".into(),
            body["mode"].as_str().unwrap_or("user").into(),
        ),
        ("app".into(), "custom".into()),
        (
            "profile".into(),
            created.body["id"].as_str().unwrap_or("").into(),
        ),
    ]);
    body = integration_body(&body, &choose);
    body["scopes"] = current.body["scopes"].clone();
    let a = answer(
        admin::put_integration(
            State(state.clone()),
            signed.caller.clone(),
            path(),
            json_body(&body),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&base(&bot, &name), "saved");
    }
    page(
        &state,
        &signed,
        &bot,
        &name,
        None,
        Extra {
            settings: Some((a, Form(Vec::new()))),
            ..Extra::default()
        },
    )
    .await
}

/// Pre-authorize in this browser: the same link an admin would get from the API, coming back
/// to this page afterwards.
pub async fn authorize(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(&body)) {
        return r;
    }
    let back = format!(
        "{}{}?done=authorized",
        state.config.public_url.as_str().trim_end_matches('/'),
        base(&bot, &name)
    );
    let req = json!({"return_url": back, "locale": signed.lang.code()});
    let raw = crate::routes::RawBody(serde_json::to_vec(&req).unwrap_or_default().into());
    let a = answer(
        sessions::pre_authorize(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), name.clone())),
            raw,
        )
        .await,
    )
    .await;
    match a.body["link"].as_str() {
        Some(link) if a.ok() => Redirect::to(link).into_response(),
        _ => {
            page(
                &state,
                &signed,
                &bot,
                &name,
                None,
                Extra {
                    result: Some((false, a.detail())),
                    ..Extra::default()
                },
            )
            .await
        }
    }
}

/// A session link for a user id, through the API's own create.
pub async fn link(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let req =
        json!({"integration": name, "user_id": form.text("user_id"), "locale": signed.lang.code()});
    let a = answer(
        sessions::create(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
            sessions::IdempotencyKey::none(),
            json_body(&req),
        )
        .await,
    )
    .await;
    let extra = match a.body["link"].as_str() {
        Some(l) if a.ok() => Extra {
            link: Some(l.to_owned()),
            ..Extra::default()
        },
        // Already connected (200 already_authorized), or the API's error.
        _ if a.ok() => Extra {
            result: Some((true, a.body["status"].as_str().unwrap_or("").to_owned())),
            ..Extra::default()
        },
        _ => Extra {
            result: Some((false, a.detail())),
            ..Extra::default()
        },
    };
    page(&state, &signed, &bot, &name, None, extra).await
}

pub async fn enable(
    state: State<AppState>,
    signed: Signed,
    path: Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    switch(state, signed, path, body, true).await
}

pub async fn disable(
    state: State<AppState>,
    signed: Signed,
    path: Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    switch(state, signed, path, body, false).await
}

/// Enable or Disable: the stored integration with `enabled` changed, through the same PUT.
async fn switch(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
    on: bool,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(&body)) {
        return r;
    }
    let path = || Path((bot.clone(), name.clone()));
    let current =
        answer(admin::get_integration(State(state.clone()), signed.caller.clone(), path()).await)
            .await;
    if !current.ok() {
        return failed(&signed, &current);
    }
    let mut req = stored(&current.body);
    req["enabled"] = json!(on);
    let a = answer(
        admin::put_integration(
            State(state.clone()),
            signed.caller.clone(),
            path(),
            json_body(&req),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&base(&bot, &name), "saved");
    }
    page(
        &state,
        &signed,
        &bot,
        &name,
        None,
        Extra {
            result: Some((false, a.detail())),
            ..Extra::default()
        },
    )
    .await
}

pub async fn test(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name, user)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(&body)) {
        return r;
    }
    let a = answer(
        tokens::check(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), name.clone(), user)),
        )
        .await,
    )
    .await;
    let f = signed.frame();
    let result = if a.ok() && a.body["ok"] != false {
        (true, f.t(T::TestOk).to_owned())
    } else {
        let why = if a.ok() {
            a.body["error"].as_str().unwrap_or("").to_owned()
        } else {
            a.detail()
        };
        (false, f.t(T::TestFailed).replace("{why}", &why))
    };
    page(
        &state,
        &signed,
        &bot,
        &name,
        None,
        Extra {
            result: Some(result),
            ..Extra::default()
        },
    )
    .await
}

pub async fn disconnect(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name, user)): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(&body)) {
        return r;
    }
    let a = answer(
        tokens::disconnect(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), name.clone(), user)),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&base(&bot, &name), "disconnected");
    }
    page(
        &state,
        &signed,
        &bot,
        &name,
        None,
        Extra {
            result: Some((false, a.detail())),
            ..Extra::default()
        },
    )
    .await
}
