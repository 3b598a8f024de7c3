//! authlink: OAuth authorization links for chatbots and AI agents.
//!
//! The flow, and where each step lives:
//!
//! ① `routes::sessions` — a dialog engine creates an auth session and gets a short signed link.
//! ② `routes::link` — the person opens the link: `GET` shows an interstitial and changes nothing
//!    (chat unfurlers are harmless); `POST` starts an attempt (PKCE, signed state, binding cookie)
//!    and redirects to the provider.
//! ③ `routes::callback` — the provider redirects back; the state is verified before any store
//!    access, the attempt is consumed once, the code is exchanged (`oauth`), and the grant, the
//!    new status and the resume event are written in one atomic store operation.
//! ④ `store` — the outbox that the event lands in; `outbox` — the worker that takes it out and
//!    hands it to its edge: `webhook` (a signed POST) or `channel` (the link posted into the
//!    conversation, and the message updated when the session settles).
//! ⑤ `routes::sessions` long-poll / status — the dialog engine resumes; `refresh` — working
//!    tokens, refreshed once per lifetime.
//!
//! Around the flow: `flow` (the state every edge works with), `config` (settings), `crypto`
//! (signing and encryption keys), `domain` (pure types), `store` (the only code that knows
//! Redis), `startup` (the `Application`), `error` (the one HTTP error mapping), `demo` (the
//! built-in demo provider of zero-configuration runs, set up through the API like any other),
//! `outbound` (the HTTP client of every call to another server, and its capped body reader).

pub mod bounds;
pub mod channel;
pub mod clock;
pub mod config;
pub mod console;
pub mod crypto;
pub mod demo;
pub mod domain;
pub mod error;
pub mod expiry;
pub mod flow;
/// Entry points for the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod oauth;
pub mod outbound;
pub mod outbox;
pub mod parked;
pub mod refresh;
pub mod routes;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhook;
