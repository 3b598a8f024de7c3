//! schemathesis (PyPI) against a real daemon: every check, the coverage, fuzzing and stateful
//! phases (following the document's links from a bot to its keys, integrations, sessions…), a
//! fixed seed and a bounded number of examples; once with the operator key, once with a bot's
//! admin key. Any finding fails the test. The browser routes (`/l/…`, `/oauth/…`, `/console/…`,
//! `/demo/…`) and Slack's signed interactions callback are not part of the JSON API's contract
//! and are left out (see tests/schemathesis/schemathesis.toml for the few per-operation notes).
//!
//! So that the operations are exercised against resources that exist (not only against 404s),
//! each run first gets resources of its own on bot `acme` (the document's example bot, with its
//! integration `crm`): a session, a custom profile and the oauth2 integration using it, a
//! channel, a webhook secret, a runtime key. Their ids become schemathesis dictionaries, which
//! the configuration binds to the path parameters (see `[[operations]] parameters` there).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::servers::Solo;

const EXCLUDED: &str = "^/(l|oauth|console|demo|channels)/";

fn schemathesis() -> std::path::PathBuf {
    let st = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/.venv/bin/st");
    assert!(
        st.exists(),
        "{} is missing: run `bash .ci/test` (it creates the venv from tests/schemathesis/requirements.txt)",
        st.display()
    );
    st
}

/// The resources of one run, by schemathesis dictionary name.
type Dictionaries = Vec<(&'static str, Vec<String>)>;

/// Calls the API as the operator; the body of a success.
async fn call(solo: &Solo, method: reqwest::Method, path: &str, body: Value) -> Value {
    let r = solo
        .api
        .request(method, solo.url(path))
        .bearer_auth(&solo.operator)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

/// A run's resources on bot `acme` (`run` names them apart).
async fn resources(solo: &Solo, run: &str) -> Dictionaries {
    use reqwest::Method;
    let session = call(
        solo,
        Method::POST,
        "/v1/bots/acme/auth-sessions",
        json!({"integration": "crm", "user_id": format!("st-{run}")}),
    )
    .await;
    let profile = call(
        solo,
        Method::POST,
        "/v1/bots/acme/auth-profiles",
        json!({
            "name": format!("schemathesis {run}"),
            "client_id": "cid",
            "client_secret": "secret",
            "authorization_url": "https://auth.example.com/authorize",
            "token_url": "https://auth.example.com/token",
        }),
    )
    .await;
    let app = format!("app-{run}");
    call(
        solo,
        Method::PUT,
        &format!("/v1/bots/acme/integrations/{app}"),
        json!({"provider": "oauth2", "profile": profile["id"]}),
    )
    .await;
    let channel = format!("ops-{run}");
    call(
        solo,
        Method::PUT,
        &format!("/v1/bots/acme/channels/{channel}"),
        json!({"type": "webhook", "url": "https://hooks.example.com/authlink"}),
    )
    .await;
    let secret = call(
        solo,
        Method::POST,
        "/v1/bots/acme/webhook-secrets",
        Value::Null,
    )
    .await;
    let key = call(
        solo,
        Method::POST,
        "/v1/bots/acme/api-keys",
        json!({"name": format!("schemathesis {run}")}),
    )
    .await;
    let id = |v: &Value| v["id"].as_str().unwrap().to_owned();
    vec![
        ("bots", vec!["acme".into()]),
        ("integrations", vec!["crm".into(), app]),
        ("sessions", vec![id(&session)]),
        ("profiles", vec![id(&profile)]),
        ("channels", vec![channel]),
        ("secrets", vec![id(&secret)]),
        ("keys", vec![id(&key)]),
    ]
}

/// tests/schemathesis/schemathesis.toml with this run's `[dictionaries]`, in `dir`.
fn config(dir: &Path, dictionaries: &Dictionaries) -> std::path::PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/schemathesis.toml");
    let mut text = std::fs::read_to_string(source).unwrap();
    for (name, values) in dictionaries {
        text.push_str(&format!(
            "\n[dictionaries.{name}]\nvalues = {}\n",
            serde_json::to_string(values).unwrap()
        ));
    }
    let path = dir.join("schemathesis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The run's spare runtime key: the only one it may revoke.
fn spare_key(dictionaries: &Dictionaries) -> &str {
    let (_, keys) = dictionaries
        .iter()
        .find(|(name, _)| *name == "keys")
        .unwrap();
    &keys[0]
}

/// Runs schemathesis with `key`; the summary it printed.
fn fuzz(solo: &Solo, key: &str, who: &str, dictionaries: &Dictionaries) -> String {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(schemathesis())
        .arg("--config-file")
        .arg(config(dir.path(), dictionaries))
        .arg("run")
        .arg(solo.url("/openapi.json"))
        // Every check: `[checks] enabled = true` in the configuration. Not `--checks all` here: a
        // check named on the command line is on for every operation, over the configuration's
        // per-operation exceptions.
        .args(["--workers", "1", "--exclude-path-regex", EXCLUDED])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .env("NO_COLOR", "1")
        .env("AUTHLINK_ST_SPARE_KEY", spare_key(dictionaries))
        .output()
        .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "schemathesis found problems with the {who} key:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The phases (with the stateful phase's links covered), the warnings and the summary.
    let report = stdout
        .split_once(" ✅  Coverage")
        .map_or(stdout.as_str(), |(_, s)| s);
    println!(
        "schemathesis, {who} key ({:.0?}):\n ✅  Coverage{report}",
        started.elapsed()
    );
    stdout
        .split_once("SUMMARY")
        .map_or(stdout.as_str(), |(_, s)| s)
        .to_owned()
}

#[tokio::test]
async fn the_openapi_document_holds_under_schemathesis_with_operator_and_admin_keys() {
    // Long-polls are bounded by the deployment; one second keeps the run short.
    // Rate limits off: thousands of requests a minute from one key and address are the point
    // here (the limits have tests of their own; 429 is documented on every API route). The same
    // for the quotas of open sessions: the run opens hundreds for the same generated user, and a
    // quota reached depends on what was created before, which the document cannot say
    // (tests/api/quotas.rs tests them).
    let solo = Solo::start(
        "[sessions]\nmax_wait_seconds = 1\n[rate_limits]\nenabled = false\n\
         [limits]\npending_sessions_per_user = 1000000\npending_sessions_per_bot = 1000000",
        &[],
    )
    .await;
    let admin = call(
        &solo,
        reqwest::Method::POST,
        "/v1/bots/acme/api-keys",
        json!({"role": "admin", "name": "schemathesis"}),
    )
    .await;
    let admin = admin["key"].as_str().unwrap().to_owned();
    // Each run its own: the operator's run may cancel, revoke or delete what it was given.
    let ours = resources(&solo, "operator").await;
    let theirs = resources(&solo, "admin").await;
    let operator = solo.operator.clone();
    let solo = std::sync::Arc::new(solo);
    let s = solo.clone();
    let summaries = tokio::task::spawn_blocking(move || {
        // The admin run first: the operator's may delete bot `acme` (the coverage phase tries
        // `DELETE /v1/bots/{bot}` with the bot ids it has seen in responses), and its keys with it.
        [
            fuzz(&s, &admin, "admin", &theirs),
            fuzz(&s, &operator, "operator", &ours),
        ]
    })
    .await
    .unwrap();
    for summary in summaries {
        // Every phase ran and passed (a phase that errors exits non-zero too, but say so).
        for phase in ["✅ Coverage", "✅ Fuzzing", "✅ Stateful"] {
            assert!(summary.contains(phase), "{phase} missing:\n{summary}");
        }
    }
}
