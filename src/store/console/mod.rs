//! The console's tables: staff accounts, teams and sessions ([`accounts`]), what agents do to
//! conversations beyond the router's turns (replies, notes, labels, ratings) and the queue
//! they read ([`work`]), contacts searched and merged ([`contacts`]), and the rows reports are
//! computed from ([`reports`]).

mod accounts;
mod contacts;
mod reports;
mod work;

pub use accounts::{CannedRow, TeamRow, UserRow};
pub use contacts::{ContactIdentityRow, ContactRow, ContactSummary, HistoryMessage};
pub use reports::{LlmUsage, ReportConversation, ReportEvent, ReportTask};
pub use work::{PostMessage, QueueFilter, QueueRow};
