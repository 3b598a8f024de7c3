//! Pure types of the flow: identifiers parsed at the edge, the session and its status machine,
//! the signed link, grants and events. No I/O here.

pub mod attempt;
pub mod bot;
pub mod channel;
pub mod console;
pub mod event;
pub mod grant;
pub mod identity;
pub mod ids;
pub mod lang;
pub mod link;
pub mod rate;
pub mod request_state;
pub mod session;
pub mod state;

pub use ids::{BotId, IntegrationName, Partition, SessionId, Subject, UserId};
