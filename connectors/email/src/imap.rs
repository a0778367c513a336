//! IMAP sessions: connect over TLS or STARTTLS, log in, select, and fetch by UID.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use switchboard_connector::ConnectorError;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::config::{Checked, Security, Server};

pub type Session = async_imap::Session<TlsStream<TcpStream>>;

/// What selecting the mailbox told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selected {
    pub uid_validity: u32,
    /// The UID the next message will get (None: the server did not say).
    pub uid_next: Option<u32>,
    pub exists: u32,
}

/// An IMAP failure as the supervisor and the outbox understand it: a refused login is the
/// configuration's fault; everything else may pass.
pub fn error(what: &str, error: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::retriable(format!("imap {what}: {error}"))
}

async fn timed<T, E: std::fmt::Display>(
    what: &str,
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, ConnectorError> {
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(failure)) => Err(error(what, failure)),
        Err(_) => Err(error(
            what,
            format!("no answer within {} s", limit.as_secs()),
        )),
    }
}

async fn tls(
    server: &Server,
    tcp: TcpStream,
    config: &Arc<ClientConfig>,
    limit: Duration,
) -> Result<TlsStream<TcpStream>, ConnectorError> {
    let name = ServerName::try_from(server.host.clone())
        .map_err(|bad| ConnectorError::Config(format!("imap host {:?}: {bad}", server.host)))?;
    timed(
        "tls handshake",
        limit,
        TlsConnector::from(config.clone()).connect(name, tcp),
    )
    .await
}

/// A logged-in session (not yet in a mailbox).
pub async fn connect(
    checked: &Checked,
    config: &Arc<ClientConfig>,
) -> Result<Session, ConnectorError> {
    let server = &checked.imap;
    let limit = Duration::from_secs(checked.config.timeout_secs.max(1));
    let tcp = timed(
        "connect",
        limit,
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await?;
    let _ = tcp.set_nodelay(true);
    let client = match server.security {
        Security::Tls => {
            let stream = tls(server, tcp, config, limit).await?;
            let mut client = async_imap::Client::new(stream);
            timed("greeting", limit, client.read_response()).await?;
            client
        }
        Security::StartTls => {
            let mut plain = async_imap::Client::new(tcp);
            timed("greeting", limit, plain.read_response()).await?;
            timed(
                "starttls",
                limit,
                plain.run_command_and_check_ok("STARTTLS", None),
            )
            .await?;
            let stream = tls(server, plain.into_inner(), config, limit).await?;
            async_imap::Client::new(stream)
        }
    };
    match tokio::time::timeout(
        limit,
        client.login(&checked.config.username, checked.config.password.expose()),
    )
    .await
    {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((async_imap::error::Error::No(reason), _))) => Err(ConnectorError::Config(format!(
            "imap login refused for {}: {reason}",
            checked.config.username
        ))),
        Ok(Err((failure, _))) => Err(error("login", failure)),
        Err(_) => Err(error("login", "no answer")),
    }
}

/// Select `mailbox`; a mailbox that does not exist is a configuration error.
pub async fn select(
    session: &mut Session,
    mailbox: &str,
    limit: Duration,
) -> Result<Selected, ConnectorError> {
    let selected = match tokio::time::timeout(limit, session.select(mailbox)).await {
        Ok(Ok(selected)) => selected,
        Ok(Err(async_imap::error::Error::No(reason))) => {
            return Err(ConnectorError::Config(format!(
                "imap mailbox {mailbox:?} cannot be selected: {reason}"
            )));
        }
        Ok(Err(failure)) => return Err(error("select", failure)),
        Err(_) => return Err(error("select", "no answer")),
    };
    let uid_validity = selected.uid_validity.ok_or_else(|| {
        ConnectorError::Config(format!(
            "imap mailbox {mailbox:?} has no UIDVALIDITY: the server does not keep UIDs"
        ))
    })?;
    Ok(Selected {
        uid_validity,
        uid_next: selected.uid_next,
        exists: selected.exists,
    })
}

/// UIDs above `after` in the selected mailbox, ascending.
pub async fn uids_after(
    session: &mut Session,
    after: u32,
    limit: Duration,
) -> Result<Vec<u32>, ConnectorError> {
    // "n:*" also matches the last message when no UID is n or higher: filter it out.
    let found = timed(
        "search",
        limit,
        session.uid_search(format!("UID {}:*", after.saturating_add(1))),
    )
    .await?;
    let mut uids: Vec<u32> = found.into_iter().filter(|uid| *uid > after).collect();
    uids.sort_unstable();
    Ok(uids)
}

/// UIDs of messages that arrived on or after `since_ms` (a day's precision, from the server's
/// SEARCH SINCE; the caller filters further by internal date).
pub async fn uids_since(
    session: &mut Session,
    since_ms: i64,
    limit: Duration,
) -> Result<Vec<(u32, Option<i64>)>, ConnectorError> {
    let day = imap_date(since_ms);
    let found = timed("search", limit, session.uid_search(format!("SINCE {day}"))).await?;
    let mut uids: Vec<u32> = found.into_iter().collect();
    uids.sort_unstable();
    let mut dated = Vec::with_capacity(uids.len());
    for chunk in uids.chunks(200) {
        let set = chunk
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let fetches: Vec<_> = timed("fetch dates", limit, async {
            session
                .uid_fetch(set, "(UID INTERNALDATE)")
                .await?
                .try_collect::<Vec<_>>()
                .await
        })
        .await?;
        for fetch in fetches {
            if let Some(uid) = fetch.uid {
                dated.push((
                    uid,
                    fetch.internal_date().map(|date| date.timestamp_millis()),
                ));
            }
        }
    }
    dated.sort_unstable();
    Ok(dated)
}

/// `1-Jan-2025`, as IMAP's SEARCH wants a date.
fn imap_date(ms: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let days = ms.div_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{day}-{}-{year}", MONTHS[(month - 1) as usize])
}

/// A message's size, or None when it is gone (expunged meanwhile).
pub async fn size_of(
    session: &mut Session,
    uid: u32,
    limit: Duration,
) -> Result<Option<u64>, ConnectorError> {
    let fetches: Vec<_> = timed("fetch size", limit, async {
        session
            .uid_fetch(uid.to_string(), "(UID RFC822.SIZE)")
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    Ok(fetches
        .iter()
        .find(|fetch| fetch.uid == Some(uid))
        .and_then(|fetch| fetch.size)
        .map(u64::from))
}

/// The whole raw message (`headers_only`: just its header), without setting \Seen.
pub async fn raw(
    session: &mut Session,
    uid: u32,
    headers_only: bool,
    limit: Duration,
) -> Result<Option<Vec<u8>>, ConnectorError> {
    let item = if headers_only {
        "(UID BODY.PEEK[HEADER])"
    } else {
        "(UID BODY.PEEK[])"
    };
    let fetches: Vec<_> = timed("fetch", limit, async {
        session
            .uid_fetch(uid.to_string(), item)
            .await?
            .try_collect::<Vec<_>>()
            .await
    })
    .await?;
    Ok(fetches
        .iter()
        .find(|fetch| fetch.uid == Some(uid))
        .and_then(|fetch| {
            if headers_only {
                fetch.header()
            } else {
                fetch.body()
            }
        })
        .map(<[u8]>::to_vec))
}

/// The UID of the message with this Message-ID in the selected mailbox.
pub async fn find_by_message_id(
    session: &mut Session,
    message_id: &str,
    limit: Duration,
) -> Result<Option<u32>, ConnectorError> {
    if message_id.contains(['"', '\\', '\r', '\n']) {
        return Ok(None);
    }
    let found = timed(
        "search",
        limit,
        session.uid_search(format!("HEADER Message-ID \"<{message_id}>\"")),
    )
    .await?;
    Ok(found.into_iter().max())
}

#[cfg(test)]
mod tests {
    use super::imap_date;

    #[test]
    fn imap_dates() {
        assert_eq!(imap_date(0), "1-Jan-1970");
        assert_eq!(imap_date(1_748_944_800_000), "3-Jun-2025");
        assert_eq!(imap_date(951_782_400_000), "29-Feb-2000");
    }
}
