//! The black-box test suite: one binary, files mirror the flow. Real Redis (a unique key prefix
//! per test, or a `redis-server` the test starts itself), a fake Salesforce on loopback that
//! checks PKCE and client authentication, and a cookie-keeping browser.

mod admin;
mod callback;
mod crash;
mod helpers;
mod link;
mod modes;
mod oidc;
mod profiles;
mod provider;
mod provider_fixture;
mod receiver;
mod rotation;
mod sessions;
mod store;
mod tokens;
mod verification;
mod webhooks;
