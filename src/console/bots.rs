//! Bots: the operator's list, and one bot's page — its settings, integrations, API keys,
//! webhook secrets, channels, recent sessions and dead letters.

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{Value, json};

use super::html::{input, input_as, notice, radios, table};
use super::text::T;
use super::{Answer, Form, Signed, answer, csrf_field, done, done_notice, failed, json_body};
use crate::flow::AppState;
use crate::routes::pages::esc;
use crate::routes::{admin, channels, sessions};

fn s(v: &Value) -> String {
    esc(v.as_str().unwrap_or(""))
}

/// A query string as the API handlers take it.
pub(super) fn query<T: serde::de::DeserializeOwned>(
    q: &str,
) -> Result<Query<T>, axum::extract::rejection::QueryRejection> {
    Query::try_from_uri(&Uri::try_from(format!("/?{q}")).unwrap_or_default())
}

pub async fn list(State(state): State<AppState>, signed: Signed, uri: Uri) -> Response {
    let a = answer(admin::list_bots(State(state), signed.caller.clone(), query("limit=200")).await)
        .await;
    if !a.ok() {
        return failed(&signed, &a);
    }
    render_list(&signed, &a, uri.query(), None, &Form(Vec::new()))
}

const BOT_FIELDS: [&str; 5] = [
    "bot",
    "name",
    "webhook_url",
    "allowed_return_hosts",
    "allowed_webhook_hosts",
];

fn render_list(
    signed: &Signed,
    bots: &Answer,
    q: Option<&str>,
    error: Option<&Answer>,
    form: &Form,
) -> Response {
    let f = signed.frame();
    let rows: Vec<Vec<String>> = bots.body["bots"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|b| {
            vec![
                format!("<a href=\"/console/bots/{id}\">{id}</a>", id = s(&b["id"])),
                s(&b["name"]),
                s(&b["webhook_url"]),
            ]
        })
        .collect();
    let list = if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoBots)))
    } else {
        table(
            f.t(T::Bots),
            &[f.t(T::BotId), f.t(T::Name), f.t(T::WebhookUrl)],
            &rows,
        )
    };
    let err = |field: &str| {
        error
            .filter(|e| e.field(&BOT_FIELDS) == Some(field))
            .map(Answer::detail)
    };
    let general = error
        .filter(|e| e.field(&BOT_FIELDS).is_none())
        .map(|e| notice(&e.detail(), false))
        .unwrap_or_default();
    let body = format!(
        "{done}{list}<h2>{new}</h2>{general}<form method=\"post\" action=\"/console/bots\">{csrf}{id}{name}{hook}{ret}{wh}\
<button type=\"submit\">{create}</button></form>",
        done = done_notice(&f, q),
        new = esc(f.t(T::NewBot)),
        csrf = csrf_field(signed),
        id = input(
            f.t(T::BotId),
            "bot",
            &form.text("bot"),
            "text",
            err("bot").as_deref()
        ),
        name = input(
            f.t(T::Name),
            "name",
            &form.text("name"),
            "text",
            err("name").as_deref()
        ),
        hook = input(
            f.t(T::WebhookUrl),
            "webhook_url",
            &form.text("webhook_url"),
            "url",
            err("webhook_url").as_deref()
        ),
        ret = input(
            f.t(T::ReturnHosts),
            "allowed_return_hosts",
            &form.text("allowed_return_hosts"),
            "text",
            err("allowed_return_hosts").as_deref()
        ),
        wh = input(
            f.t(T::WebhookHosts),
            "allowed_webhook_hosts",
            &form.text("allowed_webhook_hosts"),
            "text",
            err("allowed_webhook_hosts").as_deref()
        ),
        create = esc(f.t(T::Create)),
    );
    let status = match error {
        Some(e) => e.status,
        None => StatusCode::OK,
    };
    f.page(status, f.t(T::Bots), &body)
}

/// The bot's settings as `PUT /v1/bots/{bot}` takes them, from the form (keeping what the form
/// does not show, such as the identity issuer).
fn bot_body(form: &Form, current: Option<&Value>) -> Value {
    let mut body = json!({
        "name": form.text("name"),
        "webhook_url": form.opt("webhook_url"),
        "allowed_return_hosts": form.list("allowed_return_hosts"),
        "allowed_webhook_hosts": form.list("allowed_webhook_hosts"),
    });
    if let Some(issuer) = current
        .and_then(|c| c.get("identity_issuer"))
        .filter(|i| !i.is_null())
    {
        body["identity_issuer"] =
            json!({"issuer": issuer["issuer"], "client_id": issuer["client_id"]});
    }
    body
}

pub async fn create(
    State(state): State<AppState>,
    signed: Signed,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let bot = form.text("bot");
    let a = answer(
        admin::put_bot(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
            json_body(&bot_body(&form, None)),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&format!("/console/bots/{bot}"), "saved");
    }
    let bots =
        answer(admin::list_bots(State(state), signed.caller.clone(), query("limit=200")).await)
            .await;
    // A malformed id is the `bot` field's error.
    let a = if a.detail().contains("bot id") {
        Answer {
            status: a.status,
            body: json!({"detail": format!("bot: {}", a.detail())}),
        }
    } else {
        a
    };
    render_list(&signed, &bots, None, Some(&a), &form)
}

pub async fn show(
    State(state): State<AppState>,
    signed: Signed,
    Path(bot): Path<String>,
    uri: Uri,
) -> Response {
    page(&state, &signed, &bot, uri.query(), Extra::default()).await
}

/// What a POST wants shown on the bot's page besides its sections.
#[derive(Default)]
struct Extra {
    /// A secret shown once (a new key or webhook secret): (title, value).
    once: Option<(T, String)>,
    /// The settings form's failed answer and what was typed.
    settings: Option<(Answer, Form)>,
    /// A failed answer for another section.
    problem: Option<Answer>,
}

async fn page(
    state: &AppState,
    signed: &Signed,
    bot: &str,
    q: Option<&str>,
    extra: Extra,
) -> Response {
    let st = || State(state.clone());
    let c = || signed.caller.clone();
    let p = || Path(bot.to_owned());
    let info = answer(admin::get_bot(st(), c(), p()).await).await;
    if !info.ok() {
        return failed(signed, &info);
    }
    let integrations = answer(admin::list_integrations(st(), c(), p()).await).await;
    let keys = answer(admin::list_api_keys(st(), c(), p()).await).await;
    let secrets = answer(admin::list_webhook_secrets(st(), c(), p()).await).await;
    let chans = answer(channels::list(st(), c(), p()).await).await;
    let recent = answer(sessions::list(st(), c(), p(), query("limit=20")).await).await;
    let dead = answer(
        admin::list_deliveries(
            st(),
            c(),
            p(),
            Ok(Query::try_from_uri(&Uri::from_static("/?state=dead")).expect("a valid query")),
        )
        .await,
    )
    .await;
    let f = signed.frame();
    let operator = matches!(signed.caller, crate::routes::auth::Caller::Operator);
    let csrf = csrf_field(signed);
    let base = format!("/console/bots/{}", esc(bot));
    let mut out = done_notice(&f, q);
    if let Some((title, value)) = &extra.once {
        out.push_str(&format!(
            "<section aria-labelledby=\"once\"><h2 id=\"once\">{}</h2><p class=\"secret\">{}</p>{}</section>",
            esc(f.t(*title)),
            esc(value),
            notice(f.t(T::ShownOnce), true)
        ));
    }
    if let Some(p) = &extra.problem {
        out.push_str(&notice(&p.detail(), false));
    }

    // Settings.
    let b = &info.body;
    let (typed, err) = match &extra.settings {
        Some((a, form)) => (Some(form), Some(a)),
        None => (None, None),
    };
    let val = |name: &str, stored: String| typed.map_or(stored, |f| f.text(name));
    let ferr = |field: &str| {
        err.filter(|e| e.field(&BOT_FIELDS) == Some(field))
            .map(Answer::detail)
    };
    let hosts = |v: &Value| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::Settings))));
    if let Some(e) = err.filter(|e| e.field(&BOT_FIELDS).is_none()) {
        out.push_str(&notice(&e.detail(), false));
    }
    let fields = format!(
        "{}{}{}{}",
        input(
            f.t(T::Name),
            "name",
            &val("name", b["name"].as_str().unwrap_or("").into()),
            "text",
            ferr("name").as_deref()
        ),
        input(
            f.t(T::WebhookUrl),
            "webhook_url",
            &val(
                "webhook_url",
                b["webhook_url"].as_str().unwrap_or("").into()
            ),
            "url",
            ferr("webhook_url").as_deref()
        ),
        input(
            f.t(T::ReturnHosts),
            "allowed_return_hosts",
            &val("allowed_return_hosts", hosts(&b["allowed_return_hosts"])),
            "text",
            ferr("allowed_return_hosts").as_deref()
        ),
        input(
            f.t(T::WebhookHosts),
            "allowed_webhook_hosts",
            &val("allowed_webhook_hosts", hosts(&b["allowed_webhook_hosts"])),
            "text",
            ferr("allowed_webhook_hosts").as_deref()
        ),
    );
    if operator {
        out.push_str(&format!(
            "<form method=\"post\" action=\"{base}\">{csrf}{fields}<button type=\"submit\">{}</button></form>",
            esc(f.t(T::Save))
        ));
    } else {
        out.push_str(&format!(
            "<p>{}</p><dl><dt>{}</dt><dd>{}</dd><dt>{}</dt><dd>{}</dd></dl>",
            esc(f.t(T::OperatorOnly)),
            esc(f.t(T::Name)),
            s(&b["name"]),
            esc(f.t(T::WebhookUrl)),
            s(&b["webhook_url"])
        ));
    }

    // Integrations.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::Integrations))));
    let rows: Vec<Vec<String>> = integrations.body["integrations"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| {
            vec![
                format!(
                    "<a href=\"{base}/integrations/{n}\">{n}</a>",
                    n = s(&i["name"])
                ),
                s(&i["provider"]),
                s(&i["mode"]),
            ]
        })
        .collect();
    out.push_str(&if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoIntegrations)))
    } else {
        table(
            f.t(T::Integrations),
            &[f.t(T::Name), f.t(T::Provider), f.t(T::WhoAuthorizes)],
            &rows,
        )
    });
    out.push_str(&format!(
        "<h3>{new}</h3><form method=\"post\" action=\"{base}/integrations\">{csrf}{name}{provider}<button type=\"submit\">{create}</button></form>",
        new = esc(f.t(T::NewIntegration)),
        name = input_as("f-integration-name", f.t(T::Name), "name", "", "text", None),
        provider = radios(
            f.t(T::Provider),
            "provider",
            &[("salesforce", "Salesforce", ""), ("oauth2", f.t(T::GenericOauth), "")],
            "salesforce"
        ),
        create = esc(f.t(T::Create)),
    ));

    // API keys.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::ApiKeys))));
    let rows: Vec<Vec<String>> = keys.body["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| {
            vec![
                format!("<code>{}</code>", s(&k["id"])),
                s(&k["name"]),
                s(&k["role"]),
                s(&k["created_at"]),
                f.post_button(
                    &format!("{base}/keys/{}/revoke", s(&k["id"])),
                    T::Revoke,
                    &signed.csrf,
                    "danger",
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        f.t(T::ApiKeys),
        &[
            "id",
            f.t(T::Name),
            f.t(T::Role),
            f.t(T::Created),
            f.t(T::Actions),
        ],
        &rows,
    ));
    if operator {
        out.push_str(&format!(
            "<form method=\"post\" action=\"{base}/keys\">{csrf}{name}{role}<button type=\"submit\">{create}</button></form>",
            name = input_as("f-key-name", f.t(T::Name), "name", "", "text", None),
            role = radios(
                f.t(T::Role),
                "role",
                &[("runtime", f.t(T::RoleRuntime), ""), ("admin", f.t(T::RoleAdmin), "")],
                "runtime"
            ),
            create = esc(f.t(T::NewKey)),
        ));
    }

    // Webhook secrets.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::WebhookSecrets))));
    let rows: Vec<Vec<String>> = secrets.body["secrets"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            vec![
                format!("<code>{}</code>", s(&w["id"])),
                s(&w["created_at"]),
                f.post_button(
                    &format!("{base}/secrets/{}/retire", s(&w["id"])),
                    T::Retire,
                    &signed.csrf,
                    "danger",
                ),
            ]
        })
        .collect();
    out.push_str(&table(
        f.t(T::WebhookSecrets),
        &["id", f.t(T::Created), f.t(T::Actions)],
        &rows,
    ));
    out.push_str(&f.post_button(&format!("{base}/secrets"), T::NewSecret, &signed.csrf, ""));

    // Channels.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::Channels))));
    let rows: Vec<Vec<String>> = chans.body["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ch| {
            vec![
                s(&ch["name"]),
                s(&ch["type"]),
                f.post_button(
                    &format!("{base}/channels/{}/delete", s(&ch["name"])),
                    T::Delete,
                    &signed.csrf,
                    "danger",
                ),
            ]
        })
        .collect();
    out.push_str(&if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoChannels)))
    } else {
        table(
            f.t(T::Channels),
            &[f.t(T::Name), f.t(T::Provider), f.t(T::Actions)],
            &rows,
        )
    });

    // Recent sessions.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::Sessions))));
    let rows: Vec<Vec<String>> = recent.body["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| {
            vec![
                format!("<code>{}</code>", s(&x["id"])),
                s(&x["integration"]),
                s(&x["user_id"]),
                format!(
                    "{}{}",
                    s(&x["status"]),
                    x["error"]["code"]
                        .as_str()
                        .map(|c| format!(" ({})", esc(c)))
                        .unwrap_or_default()
                ),
                s(&x["delivery"]["status"]),
                s(&x["created_at"]),
            ]
        })
        .collect();
    out.push_str(&if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoSessions)))
    } else {
        table(
            f.t(T::Sessions),
            &[
                "id",
                f.t(T::Integrations),
                f.t(T::User),
                f.t(T::Status),
                f.t(T::Delivery),
                f.t(T::Created),
            ],
            &rows,
        )
    });

    // Dead letters.
    out.push_str(&format!("<h2>{}</h2>", esc(f.t(T::DeadLetters))));
    let rows: Vec<Vec<String>> = dead.body["deliveries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| {
            vec![
                s(&d["type"]),
                format!("<code>{}</code>", s(&d["session_id"])),
                s(&d["last_error"]),
                s(&d["created_at"]),
                f.post_button(
                    &format!("{base}/dead-letters/{}/replay", s(&d["id"])),
                    T::Replay,
                    &signed.csrf,
                    "",
                ),
            ]
        })
        .collect();
    out.push_str(&if rows.is_empty() {
        format!("<p>{}</p>", esc(f.t(T::NoDeadLetters)))
    } else {
        table(
            f.t(T::DeadLetters),
            &[
                f.t(T::Event),
                "session",
                f.t(T::LastError),
                f.t(T::Created),
                f.t(T::Actions),
            ],
            &rows,
        )
    });

    let title = b["name"].as_str().unwrap_or(bot).to_owned();
    let status = extra
        .settings
        .as_ref()
        .map(|(a, _)| a.status)
        .or(extra.problem.as_ref().map(|a| a.status))
        .unwrap_or(StatusCode::OK);
    f.page(status, &title, &out)
}

pub async fn update(
    State(state): State<AppState>,
    signed: Signed,
    Path(bot): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let current = answer(
        admin::get_bot(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
        )
        .await,
    )
    .await;
    let a = answer(
        admin::put_bot(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
            json_body(&bot_body(&form, current.ok().then_some(&current.body))),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&format!("/console/bots/{bot}"), "saved");
    }
    page(
        &state,
        &signed,
        &bot,
        None,
        Extra {
            settings: Some((a, form)),
            ..Extra::default()
        },
    )
    .await
}

/// Run a one-button action, then back to the bot's page with `what` done (or its error shown).
async fn act(
    state: &AppState,
    signed: &Signed,
    bot: &str,
    body: &[u8],
    what: &str,
    a: impl std::future::Future<Output = Answer>,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(body)) {
        return r;
    }
    let a = a.await;
    if a.ok() {
        return done(&format!("/console/bots/{bot}"), what);
    }
    page(
        state,
        signed,
        bot,
        None,
        Extra {
            problem: Some(a),
            ..Extra::default()
        },
    )
    .await
}

pub async fn create_key(
    State(state): State<AppState>,
    signed: Signed,
    Path(bot): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let req = json!({"role": form.text("role"), "name": form.opt("name")});
    let raw = crate::routes::RawBody(serde_json::to_vec(&req).unwrap_or_default().into());
    let a = answer(
        admin::create_api_key(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
            raw,
        )
        .await,
    )
    .await;
    // The key is shown on this response only: never in a URL, never stored.
    let extra = if a.ok() {
        Extra {
            once: Some((T::NewKey, a.body["key"].as_str().unwrap_or("").to_owned())),
            ..Extra::default()
        }
    } else {
        Extra {
            problem: Some(a),
            ..Extra::default()
        }
    };
    page(&state, &signed, &bot, None, extra).await
}

pub async fn revoke_key(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let run = answer(
        admin::delete_api_key(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), id)),
        )
        .await,
    );
    act(&state, &signed, &bot, &body, "revoked", run).await
}

pub async fn create_secret(
    State(state): State<AppState>,
    signed: Signed,
    Path(bot): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    if let Some(r) = signed.refused(&Form::parse(&body)) {
        return r;
    }
    let a = answer(
        admin::create_webhook_secret(
            State(state.clone()),
            signed.caller.clone(),
            Path(bot.clone()),
        )
        .await,
    )
    .await;
    let extra = if a.ok() {
        Extra {
            once: Some((
                T::NewSecret,
                a.body["secret"].as_str().unwrap_or("").to_owned(),
            )),
            ..Extra::default()
        }
    } else {
        Extra {
            problem: Some(a),
            ..Extra::default()
        }
    };
    page(&state, &signed, &bot, None, extra).await
}

pub async fn retire_secret(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let run = answer(
        admin::delete_webhook_secret(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), id)),
        )
        .await,
    );
    act(&state, &signed, &bot, &body, "retired", run).await
}

pub async fn delete_channel(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let run = answer(
        channels::delete(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), name)),
        )
        .await,
    );
    act(&state, &signed, &bot, &body, "deleted", run).await
}

pub async fn replay(
    State(state): State<AppState>,
    signed: Signed,
    Path((bot, id)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let run = answer(
        admin::replay_delivery(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), id)),
        )
        .await,
    );
    act(&state, &signed, &bot, &body, "replayed", run).await
}

/// A new integration from the bot's page; the API's refusal (e.g. no app for the provider yet)
/// is shown there.
pub async fn create_integration(
    State(state): State<AppState>,
    signed: Signed,
    Path(bot): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let form = Form::parse(&body);
    if let Some(r) = signed.refused(&form) {
        return r;
    }
    let name = form.text("name");
    let req = json!({"provider": form.text("provider")});
    let a = answer(
        admin::put_integration(
            State(state.clone()),
            signed.caller.clone(),
            Path((bot.clone(), name.clone())),
            json_body(&req),
        )
        .await,
    )
    .await;
    if a.ok() {
        return done(&format!("/console/bots/{bot}/integrations/{name}"), "saved");
    }
    let extra = Extra {
        problem: Some(a),
        ..Extra::default()
    };
    page(&state, &signed, &bot, None, extra).await
}
