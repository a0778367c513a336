//! A configuration file (TOML): every `[[channel]]` table is read as the server reads it (the
//! keys every kind shares, `${VAR}` from the environment, the outbound limits), and a web chat
//! table is parsed and turned into its instance's settings, as its factory does at start.
//! The server's typed sections (`[http]`, `[workflow]`, ...) are serde derives in the server
//! crate, left out so that this build stays small.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_connector::{ChannelTable, InstanceConfig, OutboundLimits};
use switchboard_webchat::WebchatConfig;

fn lookup(name: &str) -> Option<String> {
    (name.len() % 2 == 0).then(|| format!("value of {name}"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(toml::Value::Array(tables)) = file.get("channel") else {
        return;
    };
    for (index, table) in tables.iter().enumerate() {
        // As the config loader hands the tables over: JSON objects.
        let Ok(serde_json::Value::Object(table)) = serde_json::to_value(table) else {
            continue;
        };
        let Ok(read) = ChannelTable::read(index + 1, &table, &lookup) else {
            continue;
        };
        let limits = OutboundLimits::default().tightened(read.outbound);
        if let Some(rate) = limits.per_second {
            assert!(rate.is_finite() && rate > 0.0);
        }
        if read.kind != "webchat" || !read.enabled {
            continue;
        }
        let instance = InstanceConfig {
            kind: read.kind,
            name: read.name,
            data_dir: std::path::PathBuf::from("/nonexistent"),
            public_url: None,
            settings: read.settings,
        };
        if let Ok(config) = instance.parse::<WebchatConfig>() {
            let _ = config.settings(b"fuzz-secret", &instance.name, true);
        }
    }
});
