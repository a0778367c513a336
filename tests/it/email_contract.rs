//! The connector contract suite for the email channel, against the real Postfix and Dovecot
//! of tests/peers/mail. The platform refusing deliveries is a TCP proxy in front of the
//! submission port that answers new connections with SMTP's `421` (service not available)
//! while told to: Postfix itself cannot be made to refuse one test's mail only.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_connector::contract::{self, Harness};
use switchboard_connector::{Connector, ConnectorHost};
use switchboard_email::EmailChannel;
use switchboard_email::inbound::Position;
use switchboard_email::testing::{MailUser, channel_config, mailbox};
use switchboard_email::thread::{parse_thread, thread_key};
use tokio::io::AsyncWriteExt;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

const SUBMISSION_PORT: u16 = 2587;

/// Forwards to the submission port, or refuses the next `refuse` connections with a 421.
#[derive(Clone, Default)]
struct SmtpProxy {
    refuse: Arc<AtomicUsize>,
    live: Arc<Mutex<Vec<AbortHandle>>>,
}

impl SmtpProxy {
    async fn start(&self) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = self.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let refusing = proxy
                    .refuse
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if refusing {
                    let _ = client
                        .write_all(b"421 4.3.2 Service not available, closing channel\r\n")
                        .await;
                    let _ = client.shutdown().await;
                    continue;
                }
                let task = tokio::spawn(async move {
                    let Ok(mut server) =
                        tokio::net::TcpStream::connect(("127.0.0.1", SUBMISSION_PORT)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                });
                proxy.live.lock().unwrap().push(task.abort_handle());
            }
        });
        port
    }

    /// Refuse the next `count` connections and cut the open ones, so that a pooled
    /// connection cannot slip past.
    fn refuse_next(&self, count: usize) {
        self.refuse.store(count, Ordering::SeqCst);
        for task in self.live.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

struct MailHarness {
    connector: Arc<EmailChannel>,
    support: String,
    customer: MailUser,
    proxy: SmtpProxy,
    /// Mails the customer sent to the support mailbox so far (each one UID there).
    sent: AtomicUsize,
    threads: AtomicUsize,
    host: Mutex<Option<Arc<dyn ConnectorHost>>>,
}

impl MailHarness {
    async fn new() -> MailHarness {
        let support = mailbox("support");
        let proxy = SmtpProxy::default();
        let port = proxy.start().await;
        let mut config = channel_config(&support);
        config.smtp_url = format!("smtp://127.0.0.1:{port}");
        let connector = Arc::new(EmailChannel::new("mail".into(), config).unwrap());
        MailHarness {
            connector,
            support,
            customer: MailUser::new("customer"),
            proxy,
            sent: AtomicUsize::new(0),
            threads: AtomicUsize::new(0),
            host: Mutex::new(None),
        }
    }

    fn host(&self) -> Arc<dyn ConnectorHost> {
        self.host.lock().unwrap().clone().expect("started")
    }

    /// The cursor's last UID, once the connector has one.
    async fn last_uid(&self) -> Option<u32> {
        let cursor = self.host().cursor("imap:INBOX").await.unwrap()?;
        let position: Position = serde_json::from_str(&cursor.value).unwrap();
        Some(position.last_uid)
    }
}

#[async_trait]
impl Harness for MailHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    async fn start(&self, host: Arc<dyn ConnectorHost>, shutdown: CancellationToken) {
        *self.host.lock().unwrap() = Some(host.clone());
        let connector = self.connector.clone();
        tokio::spawn(async move { connector.run(host, shutdown).await });
        // Until the connector has read the mailbox once, mail would count as already there.
        for _ in 0..300 {
            if self.last_uid().await.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the connector never read the mailbox");
    }

    async fn customer_sends(&self, thread: &str, platform_id: &str, text: &str) {
        let (_, subject) = parse_thread(thread).expect("an email thread");
        let message_id = format!("{platform_id}.{}", self.customer.address);
        self.customer
            .write(&self.support, subject, &message_id, None, text)
            .await;
        let count = self.sent.fetch_add(1, Ordering::SeqCst) as u32 + 1;
        // Handed over and taken: the cursor is past this mail (UIDs count from 1).
        for _ in 0..600 {
            if self.last_uid().await.is_some_and(|last| last >= count) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("mail {count} was never taken by the connector");
    }

    async fn fail_next_sends(&self, count: usize) -> bool {
        self.proxy.refuse_next(count);
        true
    }

    async fn customer_received(&self, thread: &str) -> Vec<String> {
        let (_, subject) = parse_thread(thread).expect("an email thread");
        let wanted = format!("Re: {subject}");
        self.customer
            .inbox()
            .await
            .into_iter()
            .filter(|mail| mail.subject == wanted)
            .map(|mail| mail.text)
            .collect()
    }

    async fn open_thread(&self, _host: Arc<dyn ConnectorHost>) -> String {
        let n = self.threads.fetch_add(1, Ordering::SeqCst);
        thread_key(&self.customer.address, &format!("Contract {n}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn email_connector_passes_the_contract() {
    let harness = MailHarness::new().await;
    contract::run_all(&harness).await;
}
