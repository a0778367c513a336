//! The connector contract suite for the Discord channel, against the fake Discord: a
//! redelivered gateway message, a burst of messages in one DM, a send repeated after success
//! (Discord's `enforce_nonce`), a 502 then a retry, and shutdown.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use switchboard_connector::contract::{self, Harness};
use switchboard_connector::{ChannelFactory, Connector, ConnectorHost, InstanceConfig};
use tokio_util::sync::CancellationToken;

use super::fake::{FakeDiscord, Fault, User};
use super::{CHANNEL, content, table};
use crate::helpers::eventually;

struct DiscordHarness {
    fake: FakeDiscord,
    connector: Arc<dyn Connector>,
    /// The suite's platform ids -> (channel, Discord message id).
    sent: Mutex<HashMap<String, (u64, u64)>>,
    /// DM channel -> its customer.
    customers: Mutex<HashMap<u64, User>>,
    _dir: tempfile::TempDir,
}

#[async_trait]
impl Harness for DiscordHarness {
    fn connector(&self) -> Arc<dyn Connector> {
        self.connector.clone()
    }

    async fn start(&self, host: Arc<dyn ConnectorHost>, shutdown: CancellationToken) {
        let identifies = self.fake.identifies();
        let connector = self.connector.clone();
        tokio::spawn(async move { connector.run(host, shutdown).await });
        eventually(30, "a new gateway session", || async {
            self.fake.identifies() > identifies && self.fake.connected()
        })
        .await;
        // READY handled (its history read) before the suite's customer writes.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    async fn customer_sends(&self, thread: &str, platform_id: &str, text: &str) {
        let channel: u64 = thread.parse().unwrap();
        let known = self.sent.lock().unwrap().get(platform_id).copied();
        if let Some((channel, message)) = known {
            self.fake.redeliver(channel, message);
            return;
        }
        let customer = self.customers.lock().unwrap()[&channel].clone();
        let message = self.fake.dm(&customer, text);
        self.sent
            .lock()
            .unwrap()
            .insert(platform_id.to_string(), (channel, message));
    }

    async fn fail_next_sends(&self, count: usize) -> bool {
        self.fake.fail_next_send(Fault {
            channel: 0,
            status: 502,
            code: 0,
            message: "Bad Gateway".into(),
            retry_after: None,
            times: count,
        });
        true
    }

    async fn customer_received(&self, thread: &str) -> Vec<String> {
        self.fake
            .bot_messages(thread.parse().unwrap())
            .iter()
            .map(|message| content(message).to_string())
            .collect()
    }

    async fn open_thread(&self, _host: Arc<dyn ConnectorHost>) -> String {
        let customer = self.fake.user("Customer");
        let channel = self.fake.dm_channel(&customer);
        self.customers.lock().unwrap().insert(channel, customer);
        channel.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn discord_connector_passes_the_contract() {
    let fake = FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut settings = table(&fake, &[]);
    settings.remove("kind");
    settings.remove("name");
    let connector = switchboard_discord::DiscordFactory
        .build(InstanceConfig {
            kind: "discord".into(),
            name: CHANNEL.into(),
            data_dir: dir.path().to_path_buf(),
            public_url: None,
            settings,
        })
        .unwrap();
    let harness = DiscordHarness {
        fake,
        connector,
        sent: Mutex::default(),
        customers: Mutex::default(),
        _dir: dir,
    };
    contract::run_all(&harness).await;
}
