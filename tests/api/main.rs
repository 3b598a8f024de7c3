//! The black-box test suite: one binary, files mirror the flow. Real Redis (a unique key prefix
//! per test, or `redis-server`s the test starts itself: a single server, a Cluster, Sentinel), a
//! fake Salesforce on loopback that checks PKCE and client authentication, loopback fakes of the
//! chat APIs links are posted to (`fakes/`: Slack, Teams, Telegram, WhatsApp), and a
//! cookie-keeping browser.
// The suite reads its own servers' answers whole (clippy.toml refuses that in the daemon).
#![allow(clippy::disallowed_methods)]

mod admin;
mod agents;
mod binding;
mod bounds;
mod browser;
mod callback;
mod channels;
mod child;
mod console;
mod crash;
mod demo;
mod examples_py;
mod examples_ts;
mod fakes;
mod helpers;
mod hostile;
mod limits;
mod link;
mod lists;
mod modes;
mod oidc;
mod operations;
mod outbound;
mod parked;
mod profiles;
mod provider;
mod provider_fixture;
mod quotas;
mod receiver;
mod rotation;
mod schemathesis;
mod servers;
mod sessions;
mod store;
mod synapse;
mod tokens;
mod topologies;
mod verification;
mod webhooks;
