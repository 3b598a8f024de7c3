//! The one-command benchmark (`benches/run`, which builds what this needs and calls
//! `cargo bench --bench hotpaths`). At production settings — release build, `RUST_LOG=info`,
//! `log_format = "json"` (written to a file, as a collector would read it), the Redis store, rate
//! limits on — it starts its own Redis, a fake Salesforce and a fake RFC 6749 provider (the test
//! suite's, `tests/api/provider.rs`), the baseline (`../shared/bench/baseline`: a bare axum handler
//! doing one Redis round trip) and authlink, makes real grants through the whole link → provider →
//! callback flow, and measures:
//!
//! 1. **Hot paths**, side by side in alternating rounds (`wrk -t2 -c64`): creating a session
//!    against the baseline's `POST /create`, an access token (no refresh needed) against its
//!    `GET /get/{id}`. Medians of the rounds, their ratios, and p99s; and the CPU time per
//!    request of the server (user, system), its Redis and wrk (`/proc`), which share the cores:
//!    the ratio follows their totals.
//! 2. **Parked requests**: N concurrent long-polls (`?wait=`), then N open event streams, then N
//!    agent retries waiting with `wait`, each on its own session, opened a thousand at a time: the
//!    daemon's RSS while they are parked, and how long after its session changes each one
//!    answers (from sending the cancel). Then N long-polls opened in one burst: the RSS once all
//!    are parked and again `BURST_SETTLE` later, while they still wait — what the allocator
//!    gives back after a burst (`src/main.rs`, `_RJEM_MALLOC_CONF` to compare settings).
//! 3. **A thundering herd**: 1,000 concurrent access-token calls on one expired grant: the time
//!    until all are answered, and how many refreshes the provider saw (it must be one).
//!
//! Options (after `--`): `--rounds N` (3), `--seconds S` per wrk run (10), `--parked N` (10000),
//! `--herd N` (1000), `--skip-wrk`, `--skip-parked`, `--burst-only` (of the parked cases, only
//! the burst; no herd); `--serve` sets everything up, prints the
//! wrk commands and waits (for `perf record -p` by hand).
//!
//! Profiling: `AUTHLINK_BENCH_WRAP` runs the daemon under another program. For a breakdown by
//! function build the `profiling` profile (the release build in codegen units, with line
//! tables), e.g. `RUSTFLAGS="-C force-frame-pointers=yes" cargo bench --profile profiling
//! --bench hotpaths -- --serve` for `perf record -g`, or with
//! `AUTHLINK_BENCH_WRAP="valgrind --tool=callgrind --compress-strings=no
//! --callgrind-out-file=/tmp/cg.%p"` for instruction counts (`callgrind_control -z` / `-d` around
//! a `wrk -t1 -c4` run; this machine's perf has no hardware counters). Under valgrind SHA-256
//! runs without the CPU's SHA extensions, so it weighs several times what it does natively.
// The benchmark reads its own servers' answers whole (clippy.toml refuses that in the daemon).
#![allow(clippy::disallowed_methods)]

#[path = "../tests/api/provider.rs"]
mod provider;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use provider::{FakeProvider, ProviderOptions, Shape};
use serde_json::{Value, json};

const BOT: &str = "bench";
const USER: &str = "bench-user";
const HERD_USER: &str = "herd-user";
/// The herd's provider issues tokens this short-lived, so that the grant is expired on cue.
const HERD_TOKEN_SECS: u64 = 3;

struct Args {
    rounds: usize,
    seconds: u32,
    parked: usize,
    herd: usize,
    wrk: bool,
    park: bool,
    /// Of the parked cases only the burst, and no herd (to compare allocator settings quickly).
    burst_only: bool,
    /// Set everything up, print how to reach it, and wait (for profiling by hand).
    serve: bool,
}

fn args() -> Args {
    let mut a = Args {
        rounds: 3,
        seconds: 10,
        parked: 10_000,
        herd: 1_000,
        wrk: true,
        park: true,
        burst_only: false,
        serve: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |name: &str| -> usize {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--rounds" => a.rounds = num("--rounds").max(1),
            "--seconds" => a.seconds = num("--seconds").max(1) as u32,
            "--parked" => a.parked = num("--parked"),
            "--herd" => a.herd = num("--herd"),
            "--skip-wrk" => a.wrk = false,
            "--skip-parked" => a.park = false,
            "--burst-only" => a.burst_only = true,
            "--serve" => a.serve = true,
            "--bench" => {} // what `cargo bench` passes
            other => panic!("unknown option {other}"),
        }
    }
    a
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until_up(what: &str, url: &str) {
    let client = reqwest::Client::new();
    for _ in 0..1200 {
        if client.get(url).send().await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what} did not come up at {url}");
}

fn start_redis(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--port", &port.to_string()])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server runs (benches/run installs it)");
    let child = Proc(child);
    let url = format!("redis://127.0.0.1:{port}");
    let client = redis::Client::open(url.as_str()).unwrap();
    for _ in 0..200 {
        if client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
        {
            return (child, url);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("redis-server did not answer");
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Daemon {
    proc: Proc,
    base: String,
    operator: String,
    config: PathBuf,
    log: PathBuf,
}

fn spawn_authlink(config: &Path, log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    // AUTHLINK_BENCH_WRAP runs the daemon under another program, e.g.
    // "valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out" for instruction counts.
    let wrap = std::env::var("AUTHLINK_BENCH_WRAP").unwrap_or_default();
    let mut argv: Vec<String> = wrap.split_whitespace().map(str::to_owned).collect();
    argv.push(env!("CARGO_BIN_EXE_authlink").to_owned());
    let child = Command::new(&argv[0])
        .args(&argv[1..])
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("the authlink binary runs");
    Proc(child)
}

impl Daemon {
    /// A fresh process on the same configuration and store (what a parked-request figure is
    /// measured on: not a heap grown by the load before it).
    async fn restart(&mut self) {
        let _ = self.proc.0.kill();
        let _ = self.proc.0.wait();
        self.proc = spawn_authlink(&self.config, &self.log);
        until_up("authlink", &format!("{}/readyz", self.base)).await;
    }
}

async fn start_authlink(
    dir: &Path,
    redis: &str,
    sf: &FakeProvider,
    generic: &FakeProvider,
) -> Daemon {
    let keys = authlink::config::GeneratedKeys::new();
    let port = free_port();
    let config = dir.join("authlink.toml");
    // Production settings: JSON logs at info, the Redis store, rate limits on (high: the load
    // generator is one key at one address); proactive refresh off only so that the herd's grant
    // is still expired when the herd arrives.
    std::fs::write(
        &config,
        format!(
            r#"public_url = "http://127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
log_format = "json"
[store]
redis_url = "{redis}"
[keys]
signing = ["{signing}"]
encryption = ["{encryption}"]
operator_key_sha256 = "{operator}"
[sessions]
max_wait_seconds = 120
[tokens]
proactive_refresh = false
[rate_limits]
runtime_per_minute = 100000000
operator_per_minute = 100000000
[limits]
pending_sessions_per_bot = 1000000000
pending_sessions_per_user = 1000000
waits_per_key = 1000000
waits_per_bot = 1000000
max_connections = 1000000
[system_apps.salesforce]
client_id = "bench-client"
client_secret = "bench-secret"
login_host = "{sf}"
[system_apps.oauth2]
client_id = "bench-client"
client_secret = "bench-secret"
authorize_url = "{generic}/services/oauth2/authorize"
token_url = "{generic}/services/oauth2/token"
"#,
            signing = keys.signing,
            encryption = keys.encryption,
            operator = keys.operator_key_sha256,
            sf = sf.base_url,
            generic = generic.base_url,
        ),
    )
    .unwrap();
    let log = dir.join("authlink.log");
    let daemon = Daemon {
        proc: spawn_authlink(&config, &log),
        base: format!("http://127.0.0.1:{port}"),
        operator: secrecy::ExposeSecret::expose_secret(&keys.operator_key).to_owned(),
        config,
        log,
    };
    until_up("authlink", &format!("{}/readyz", daemon.base)).await;
    daemon
}

fn start_baseline(redis: &str) -> (Proc, String) {
    let bin = std::env::var("AUTHLINK_BENCH_BASELINE")
        .expect("AUTHLINK_BENCH_BASELINE names the baseline binary (benches/run builds it)");
    let port = free_port();
    let child = Command::new(bin)
        .env("LISTEN", format!("127.0.0.1:{port}"))
        .env("REDIS_URL", redis)
        .stdout(Stdio::null())
        .spawn()
        .expect("the baseline runs");
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

/// The API, as the bench's client.
struct Api {
    http: reqwest::Client,
    base: String,
    key: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("authlink answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn ok(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let (status, v) = self.call(method, path, body).await;
        assert!((200..300).contains(&status), "{path}: {status} {v}");
        v
    }

    async fn session(&self, integration: &str, user: &str) -> Value {
        self.ok(
            reqwest::Method::POST,
            &format!("/v1/bots/{BOT}/auth-sessions"),
            Some(json!({"integration": integration, "user_id": user})),
        )
        .await
    }
}

/// Walk a session's link as a person would: Continue, sign in at the provider, back to the
/// callback (with the cookie the link set).
async fn sign_in(link: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    // Pressed on the interstitial: a browser says the POST comes from the same origin.
    let start = http
        .post(link)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(start.status().as_u16(), 303, "Continue");
    let cookies: Vec<String> = start
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .collect();
    let authorize = start.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let at_provider = http.get(&authorize).send().await.unwrap();
    assert_eq!(
        at_provider.status().as_u16(),
        302,
        "the provider's authorize"
    );
    let callback = at_provider.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    let done = http
        .get(&callback)
        .header(reqwest::header::COOKIE, cookies.join("; "))
        .send()
        .await
        .unwrap();
    assert!(
        done.status().is_success() || done.status().is_redirection(),
        "callback: {} {}",
        done.status(),
        done.text().await.unwrap_or_default()
    );
}

// --- wrk ---

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU time per request, in µs: the server's (user, system), its Redis's, wrk's. The three
    /// share the machine's cores, so this is where a ratio comes from.
    cpu: Cpu,
}

#[derive(Clone, Copy, Default)]
struct Cpu {
    user: f64,
    sys: f64,
    redis: f64,
    wrk: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.user + self.sys + self.redis + self.wrk
    }
}

/// Clock ticks a process has run, (user, system), from `/proc/<pid>/stat`; for this process,
/// `children` gives those of its children that ended and were waited for (wrk, here).
fn ticks(pid: u32, children: bool) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat(5), cutime and cstime 16 and 17; `rest`
    // starts at field 3.
    if children {
        (f[13], f[14])
    } else {
        (f[11], f[12])
    }
}

/// Linux reports `/proc` times in USER_HZ ticks, 100 a second on every architecture it runs on.
const TICKS_PER_SECOND: f64 = 100.0;

fn wrk_ms(v: &str) -> f64 {
    let v = v.trim();
    let (n, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (v, 1.0)
    };
    n.parse::<f64>().unwrap_or(f64::NAN) * scale
}

/// The processes a wrk run is measured on: the server it loads and the Redis behind it.
#[derive(Clone, Copy)]
struct Measured {
    server: u32,
    redis: u32,
}

fn run_wrk(url: &str, script: &Path, seconds: u32, on: Measured) -> Wrk {
    let me = std::process::id();
    let before = [
        ticks(on.server, false),
        ticks(on.redis, false),
        ticks(me, true),
    ];
    let out = Command::new("wrk")
        .args(["-t2", "-c64", &format!("-d{seconds}s"), "--latency", "-s"])
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk runs (benches/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_owned)
    };
    let after = [
        ticks(on.server, false),
        ticks(on.redis, false),
        ticks(me, true),
    ];
    let requests: f64 = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or(f64::NAN);
    let per_request = |i: usize, user: bool| {
        let (b, a) = (before[i], after[i]);
        let t = if user { a.0 - b.0 } else { a.1 - b.1 };
        t as f64 / TICKS_PER_SECOND * 1e6 / requests
    };
    let cpu = Cpu {
        user: per_request(0, true),
        sys: per_request(0, false),
        redis: per_request(1, true) + per_request(1, false),
        wrk: per_request(2, true) + per_request(2, false),
    };
    let errors = field("Non-2xx or 3xx responses:")
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
        + field("Socket errors:").map_or(0, |_| 1);
    Wrk {
        rps: field("Requests/sec:")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("wrk printed no rate:\n{text}")),
        p50_ms: field("50%").map_or(f64::NAN, |v| wrk_ms(&v)),
        p99_ms: field("99%").map_or(f64::NAN, |v| wrk_ms(&v)),
        errors,
        cpu,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn lua_post(dir: &Path, name: &str, key: Option<&str>, body: &str) -> PathBuf {
    let auth = key.map_or(String::new(), |k| {
        format!("wrk.headers[\"Authorization\"] = \"Bearer {k}\"\n")
    });
    let script = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n{auth}\
         local n = 0\nrequest = function()\n  n = n + 1\n  \
         return wrk.format(nil, nil, nil, string.format('{body}', math.random(1, 1000000000), n))\nend\n"
    );
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    path
}

fn lua_get(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, "wrk.method = \"GET\"\n").unwrap();
    path
}

struct Pair {
    name: &'static str,
    baseline: Vec<Wrk>,
    authlink: Vec<Wrk>,
}

impl Pair {
    fn print(&self) {
        let med = |v: &[Wrk], f: fn(&Wrk) -> f64| median(v.iter().map(f).collect());
        let (b, a) = (
            med(&self.baseline, |w| w.rps),
            med(&self.authlink, |w| w.rps),
        );
        let (b99, a99) = (
            med(&self.baseline, |w| w.p99_ms),
            med(&self.authlink, |w| w.p99_ms),
        );
        println!("\n{}", self.name);
        for (i, (bw, aw)) in self.baseline.iter().zip(&self.authlink).enumerate() {
            println!(
                "  round {}: baseline {:>8.0} req/s (p50 {:.2} ms, p99 {:.2} ms)  authlink {:>8.0} req/s (p50 {:.2} ms, p99 {:.2} ms)  ratio {:.2}{}",
                i + 1,
                bw.rps,
                bw.p50_ms,
                bw.p99_ms,
                aw.rps,
                aw.p50_ms,
                aw.p99_ms,
                aw.rps / bw.rps,
                if bw.errors + aw.errors > 0 {
                    format!("  ({} non-2xx or socket errors!)", bw.errors + aw.errors)
                } else {
                    String::new()
                }
            );
        }
        println!(
            "  median: baseline {b:.0} req/s, authlink {a:.0} req/s: ratio {:.2}x; p99 baseline {b99:.2} ms, authlink {a99:.2} ms ({:.2}x)",
            a / b,
            a99 / b99
        );
        // Where the cores went, per request (medians of the rounds): the ratio follows the
        // totals, since the server, its Redis and wrk share the machine.
        let cpu = |v: &[Wrk]| Cpu {
            user: med(v, |w| w.cpu.user),
            sys: med(v, |w| w.cpu.sys),
            redis: med(v, |w| w.cpu.redis),
            wrk: med(v, |w| w.cpu.wrk),
        };
        for (who, c) in [
            ("baseline", cpu(&self.baseline)),
            ("authlink", cpu(&self.authlink)),
        ] {
            println!(
                "  CPU per request, {who}: server {:.1} µs (user {:.1}, system {:.1}), its Redis {:.1}, wrk {:.1}: {:.1} µs",
                c.user + c.sys,
                c.user,
                c.sys,
                c.redis,
                c.wrk,
                c.total()
            );
        }
    }
}

struct Scripts {
    create: PathBuf,
    base_create: PathBuf,
    token: PathBuf,
    get: PathBuf,
}

/// The wrk scripts: random user ids for creates (as many users would), one user's token.
fn write_scripts(dir: &Path, key: &str) -> Scripts {
    let create = lua_post(
        dir,
        "create.lua",
        Some(key),
        r#"{"integration":"crm","user_id":"u%d-%d","conversation_id":"c1","context":{"node":"sf_lookup","n":1}}"#,
    );
    let base_create = lua_post(
        dir,
        "baseline-create.lua",
        None,
        r#"{"user_id":"u%d-%d","conversation_id":"c1","context":{"node":"sf_lookup","n":1}}"#,
    );
    let token = dir.join("token.lua");
    std::fs::write(
        &token,
        format!(
            "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
             wrk.headers[\"Authorization\"] = \"Bearer {key}\"\nwrk.body = '{{\"user_id\":\"{USER}\"}}'\n"
        ),
    )
    .unwrap();
    Scripts {
        create,
        base_create,
        token,
        get: lua_get(dir, "get.lua"),
    }
}

async fn hot_paths(
    a: &Args,
    dir: &Path,
    daemon: &Daemon,
    key: &str,
    (baseline, baseline_pid): (&str, u32),
    redis_pid: u32,
) {
    let Scripts {
        create,
        base_create,
        token,
        get,
    } = write_scripts(dir, key);
    let id = reqwest::Client::new()
        .post(format!("{baseline}/create"))
        .json(&json!({"user_id": USER, "conversation_id": "c1", "context": {"n": 1}}))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut pairs = [
        Pair {
            name: "create a session: POST /v1/bots/{bot}/auth-sessions vs the baseline's POST /create",
            baseline: Vec::new(),
            authlink: Vec::new(),
        },
        Pair {
            name: "an access token (no refresh): POST …/access-token vs the baseline's GET /get/{id}",
            baseline: Vec::new(),
            authlink: Vec::new(),
        },
    ];
    let targets = [
        (
            format!("{baseline}/create"),
            base_create,
            format!("{}/v1/bots/{BOT}/auth-sessions", daemon.base),
            create,
        ),
        (
            format!("{baseline}/get/{id}"),
            get,
            format!(
                "{}/v1/bots/{BOT}/integrations/crm/access-token",
                daemon.base
            ),
            token,
        ),
    ];
    let on_baseline = Measured {
        server: baseline_pid,
        redis: redis_pid,
    };
    let on_authlink = Measured {
        server: daemon.proc.0.id(),
        redis: redis_pid,
    };
    for round in 0..a.rounds {
        for (pair, (b_url, b_script, a_url, a_script)) in pairs.iter_mut().zip(&targets) {
            // Alternating: the baseline first in odd rounds, authlink first in even ones.
            if round % 2 == 0 {
                pair.baseline
                    .push(run_wrk(b_url, b_script, a.seconds, on_baseline));
                pair.authlink
                    .push(run_wrk(a_url, a_script, a.seconds, on_authlink));
            } else {
                pair.authlink
                    .push(run_wrk(a_url, a_script, a.seconds, on_authlink));
                pair.baseline
                    .push(run_wrk(b_url, b_script, a.seconds, on_baseline));
            }
            eprintln!(
                "round {} of {}: {} done",
                round + 1,
                a.rounds,
                pair.name.split(':').next().unwrap_or_default()
            );
        }
    }
    for p in &pairs {
        p.print();
    }
}

// --- parked requests ---

#[derive(Clone, Copy)]
enum Parked {
    LongPoll,
    EventStream,
    AgentRetry,
    /// Long-polls, all opened at once.
    Burst,
}

/// How long the burst's long-polls are held before the RSS is read again: well past jemalloc's
/// decay time (1 s as configured), well within their wait.
const BURST_SETTLE: Duration = Duration::from_secs(20);

impl Parked {
    fn name(self) -> &'static str {
        match self {
            Parked::LongPoll => "long-polls (GET …/auth-sessions/{id}?wait=110)",
            Parked::Burst => "long-polls opened in one burst (GET …/auth-sessions/{id}?wait=110)",
            Parked::EventStream => "event streams (GET …/auth-sessions/{id}/events)",
            Parked::AgentRetry => {
                "agent retries (POST …/access-token with session_id and wait: 50)"
            }
        }
    }
}

async fn waiting(api: &Api) -> u64 {
    let text = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("authlink_waiting_requests "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// One parked request: answers when its session changes; the instant it did.
async fn park(
    http: reqwest::Client,
    base: String,
    key: String,
    kind: Parked,
    id: String,
    user: String,
) -> Instant {
    let req = match kind {
        Parked::LongPoll | Parked::Burst => {
            http.get(format!("{base}/v1/bots/{BOT}/auth-sessions/{id}?wait=110"))
        }
        Parked::EventStream => http.get(format!("{base}/v1/bots/{BOT}/auth-sessions/{id}/events")),
        Parked::AgentRetry => http
            .post(format!(
                "{base}/v1/bots/{BOT}/integrations/herd/access-token"
            ))
            .json(&json!({"user_id": user, "session_id": id, "wait": 50})),
    };
    let Ok(mut resp) = req.bearer_auth(key).send().await else {
        eprintln!("a parked request failed");
        return Instant::now();
    };
    match kind {
        Parked::EventStream => {
            // The stream's first event is the current status; it ends once the session settles.
            while let Ok(Some(chunk)) = resp.chunk().await {
                if String::from_utf8_lossy(&chunk).contains("cancelled") {
                    break;
                }
            }
        }
        _ => {
            let _ = resp.bytes().await;
        }
    }
    Instant::now()
}

async fn parked(a: &Args, daemon: &Daemon, api: &Arc<Api>, kind: Parked) {
    let n = a.parked;
    // The sessions, made at a moderate concurrency.
    let mut ids = Vec::with_capacity(n);
    let made: Vec<(String, String)> = StreamExt::collect(StreamExt::buffered(
        futures_util::stream::iter((0..n).map(|i| {
            let api = api.clone();
            async move {
                let user = format!("parked-{}-{i}", kind as u8);
                match kind {
                    Parked::AgentRetry => {
                        let (status, v) = api
                            .call(
                                reqwest::Method::POST,
                                &format!("/v1/bots/{BOT}/integrations/herd/access-token"),
                                Some(json!({"user_id": user, "authorize": {}})),
                            )
                            .await;
                        assert_eq!(status, 404, "an authorization offer: {v}");
                        (v["session"]["id"].as_str().unwrap().to_owned(), user)
                    }
                    _ => (
                        api.session("crm", &user).await["id"]
                            .as_str()
                            .unwrap()
                            .to_owned(),
                        user,
                    ),
                }
            }
        })),
        64,
    ))
    .await;
    ids.extend(made);
    let pid = daemon.proc.0.id();
    let idle = rss_kib(pid);
    // One client connection per parked request, as N separate callers would have.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    // Opened a thousand at a time (a burst of 10,000 connects overflows the listen backlog:
    // clients retry their SYN), each batch parked before the next; or all at once.
    let mut tasks = Vec::with_capacity(n);
    let t0 = Instant::now();
    let batch = if matches!(kind, Parked::Burst) {
        n
    } else {
        1000
    };
    for batch in ids.chunks(batch.max(1)) {
        for (id, user) in batch {
            tasks.push(tokio::spawn(park(
                http.clone(),
                daemon.base.clone(),
                api.key.clone(),
                kind,
                id.clone(),
                user.clone(),
            )));
        }
        while waiting(api).await < tasks.len() as u64 {
            assert!(
                t0.elapsed() < Duration::from_secs(180),
                "only {} of {} parked",
                waiting(api).await,
                tasks.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let held = rss_kib(pid);
    let settled = if matches!(kind, Parked::Burst) {
        tokio::time::sleep(BURST_SETTLE).await;
        Some(rss_kib(pid))
    } else {
        None
    };
    // The change: cancel every session (32 at a time), noting when each cancel was sent.
    let sent: Vec<Instant> = StreamExt::collect(StreamExt::buffered(
        futures_util::stream::iter(ids.iter().map(|(id, _)| {
            let api = api.clone();
            let id = id.clone();
            async move {
                let at = Instant::now();
                api.ok(
                    reqwest::Method::DELETE,
                    &format!("/v1/bots/{BOT}/auth-sessions/{id}"),
                    None,
                )
                .await;
                at
            }
        })),
        32,
    ))
    .await;
    let mut wake: Vec<Duration> = Vec::with_capacity(n);
    for (task, sent) in tasks.into_iter().zip(sent) {
        let answered = task.await.unwrap();
        wake.push(answered.saturating_duration_since(sent));
    }
    wake.sort();
    println!(
        "\n{n} parked {}:\n  RSS {:.1} MiB while parked (a fresh replica, {:.1} MiB with the sessions made: {:.2} KiB per parked request)\n  answered after the cancel was sent: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        kind.name(),
        mib(held),
        mib(idle),
        (held.saturating_sub(idle)) as f64 / n as f64,
        percentile(&wake, 0.5).as_secs_f64() * 1e3,
        percentile(&wake, 0.99).as_secs_f64() * 1e3,
        wake.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
    );
    if let Some(settled) = settled {
        println!(
            "  RSS {:.1} MiB {} s later, still parked (_RJEM_MALLOC_CONF={:?})",
            mib(settled),
            BURST_SETTLE.as_secs(),
            std::env::var("_RJEM_MALLOC_CONF").unwrap_or_default(),
        );
    }
}

// --- the herd ---

async fn herd(a: &Args, api: &Arc<Api>, generic: &FakeProvider) {
    // The grant was made with tokens that live HERD_TOKEN_SECS: wait until it has expired.
    tokio::time::sleep(Duration::from_secs(HERD_TOKEN_SECS + 1)).await;
    let before = generic.refresh_requests();
    let t0 = Instant::now();
    let answers = futures_util::future::join_all((0..a.herd).map(|_| {
        let api = api.clone();
        async move {
            api.call(
                reqwest::Method::POST,
                &format!("/v1/bots/{BOT}/integrations/herd/access-token"),
                Some(json!({"user_id": HERD_USER})),
            )
            .await
        }
    }))
    .await;
    let all = t0.elapsed();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let tokens: std::collections::HashSet<_> = answers
        .iter()
        .filter_map(|(_, v)| v["access_token"].as_str())
        .collect();
    println!(
        "\n{} concurrent access-token calls on one expired grant: all answered in {:.1} ms; {ok} got 200, {} distinct token(s); refreshes at the provider: {}",
        a.herd,
        all.as_secs_f64() * 1e3,
        tokens.len(),
        generic.refresh_requests() - before
    );
}

async fn setup(daemon: &Daemon) -> (Arc<Api>, String) {
    let op = Api {
        http: reqwest::Client::new(),
        base: daemon.base.clone(),
        key: daemon.operator.clone(),
    };
    op.ok(
        reqwest::Method::PUT,
        &format!("/v1/bots/{BOT}"),
        Some(json!({"name": "Bench"})),
    )
    .await;
    for (name, provider) in [("crm", "salesforce"), ("herd", "oauth2")] {
        op.ok(
            reqwest::Method::PUT,
            &format!("/v1/bots/{BOT}/integrations/{name}"),
            Some(json!({"provider": provider})),
        )
        .await;
    }
    let key = op
        .ok(
            reqwest::Method::POST,
            &format!("/v1/bots/{BOT}/api-keys"),
            Some(json!({"role": "runtime", "name": "bench"})),
        )
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let api = Arc::new(Api {
        http: reqwest::Client::new(),
        base: daemon.base.clone(),
        key: key.clone(),
    });
    for (integration, user) in [("crm", USER), ("herd", HERD_USER)] {
        let s = api.session(integration, user).await;
        sign_in(s["link"].as_str().unwrap()).await;
        let v = api
            .ok(
                reqwest::Method::POST,
                &format!("/v1/bots/{BOT}/integrations/{integration}/access-token"),
                Some(json!({"user_id": user})),
            )
            .await;
        assert!(v["access_token"].is_string(), "{v}");
    }
    (api, key)
}

#[tokio::main]
async fn main() {
    let a = args();
    let dir = tempfile::tempdir().unwrap();
    let (redis_proc, redis) = start_redis(dir.path());
    let options = |shape| ProviderOptions {
        client_id: "bench-client".into(),
        client_secret: "bench-secret".into(),
        shape,
    };
    let sf = FakeProvider::spawn(options(Shape::Salesforce)).await;
    let generic = FakeProvider::spawn(options(Shape::Generic)).await;
    generic.set_token_lifetime(HERD_TOKEN_SECS);
    let mut daemon = start_authlink(dir.path(), &redis, &sf, &generic).await;
    let (baseline_proc, baseline) = start_baseline(&redis);
    until_up("the baseline", &format!("{baseline}/get/x")).await;
    let (api, key) = setup(&daemon).await;
    println!(
        "authlink {} (release), RUST_LOG=info, log_format = \"json\" to a file, Redis store ({redis}), rate limits on; \
         wrk -t2 -c64 -d{}s, {} alternating rounds; {} cores",
        env!("CARGO_PKG_VERSION"),
        a.seconds,
        a.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "idle RSS after setup: {:.1} MiB",
        mib(rss_kib(daemon.proc.0.id()))
    );
    if a.serve {
        let scripts = write_scripts(dir.path(), &key);
        println!(
            "authlink pid {} at {}; baseline at {baseline}\n  wrk -t2 -c64 -d10s --latency -s {} {}/v1/bots/{BOT}/auth-sessions\n  wrk -t2 -c64 -d10s --latency -s {} {}/v1/bots/{BOT}/integrations/crm/access-token\nCtrl-C (or kill) to stop.",
            daemon.proc.0.id(),
            daemon.base,
            scripts.create.display(),
            daemon.base,
            scripts.token.display(),
            daemon.base,
        );
        // Ctrl-C or a plain `kill`: either way the Redis, provider and daemons started here stop
        // with it (their handles stop them when dropped).
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        return;
    }
    if a.wrk {
        hot_paths(
            &a,
            dir.path(),
            &daemon,
            &key,
            (&baseline, baseline_proc.0.id()),
            redis_proc.0.id(),
        )
        .await;
    }
    if !a.burst_only {
        herd(&a, &api, &generic).await;
    }
    if a.park && a.parked > 0 {
        let batched = [Parked::LongPoll, Parked::EventStream, Parked::AgentRetry];
        let kinds = if a.burst_only { &[][..] } else { &batched[..] };
        for &kind in kinds.iter().chain([Parked::Burst].iter()) {
            daemon.restart().await;
            parked(&a, &daemon, &api, kind).await;
        }
    }
}
