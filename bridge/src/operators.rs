//! Who may do what: named API tokens, each with its scopes (`read`, `command`) and the
//! devices it may see, and the device groups those selections name.
//!
//! Tokens come from `[operators.token]`, from `operators.tokens_file` (read again within
//! 2 s of a change: tokens rotate without a restart), and from the deprecated
//! `http.api_tokens` (every scope, every device, named `token-1`, `token-2`, …). A secret
//! is kept only as its SHA-256 and compared in constant time.
//!
//! Groups come from `[operators.group]`, from the API (`PUT /v1/groups/{group}/devices/…`)
//! and from ChirpStack's device tags (`chirpstack.group_tag`); the last two are stored.
use crate::commands::store::GroupMembers;
use crate::device::{DeviceId, Network};
use crate::pipeline::lock;
use crate::secret::{SecretFile, SecretFileError, constant_time_eq};
use gateway_config::{OperatorSettings, TokenSettings};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// Where a group membership came from.
pub const FROM_API: &str = "api";
/// A membership from ChirpStack's device tags.
pub const FROM_TAG: &str = "tag";

/// Which devices a token may see.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Network(Network),
    Prefix(Network, String),
    Device(DeviceId),
    Group(String),
}

impl Selector {
    /// Reads a selector the configuration check accepted.
    fn parse(s: &str) -> Option<Selector> {
        if let Some(g) = s.strip_prefix("group:") {
            return Some(Selector::Group(g.to_owned()));
        }
        let (network, id) = s.split_once('/')?;
        let network = Network::from_name(network)?;
        match id.strip_suffix('*') {
            Some("") => Some(Selector::Network(network)),
            Some(prefix) => Some(Selector::Prefix(network, prefix.to_ascii_lowercase())),
            None => DeviceId::new(network, id).ok().map(Selector::Device),
        }
    }
}

/// One named token.
#[derive(Debug)]
pub struct Token {
    name: String,
    sha256: [u8; 32],
    read: bool,
    command: bool,
    /// Empty: every device.
    devices: Vec<Selector>,
}

/// The token a request authenticated with.
#[derive(Debug, Clone)]
pub struct Operator(Arc<Token>);

impl Operator {
    /// Its name: what commands and their history record.
    pub fn name(&self) -> &str {
        &self.0.name
    }
    /// May read states, commands and history.
    pub fn can_read(&self) -> bool {
        self.0.read
    }
    /// May create and cancel commands.
    pub fn can_command(&self) -> bool {
        self.0.command
    }
    /// Sees every device (no selector).
    pub fn sees_all(&self) -> bool {
        self.0.devices.is_empty()
    }
}

fn sha256(secret: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

fn token(name: &str, t: &TokenSettings) -> Option<Token> {
    let mut sha = [0u8; 32];
    hex::decode_to_slice(&t.secret_sha256, &mut sha).ok()?;
    Some(Token {
        name: name.to_owned(),
        sha256: sha,
        read: t.scopes.iter().any(|s| s == "read"),
        command: t.scopes.iter().any(|s| s == "command"),
        devices: t
            .devices
            .iter()
            .filter_map(|d| Selector::parse(d))
            .collect(),
    })
}

/// Why the tokens file did not read; the tokens in force stay.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// It cannot be read, or others may read it.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// Its contents are wrong.
    #[error("operators.tokens_file {path}: {problems}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem, with its key.
        problems: gateway_config::Problems,
    },
}

/// A device's tag value last seen, and the groups it named.
type Tagged = (Option<String>, BTreeSet<String>);

/// Tokens and groups, shared by the HTTP API, the queue and the ChirpStack adapter.
pub struct Operators {
    /// From the configuration (named and deprecated), fixed.
    configured: Vec<Arc<Token>>,
    /// From the tokens file, replaced when it changes.
    from_file: RwLock<Vec<Arc<Token>>>,
    file: Option<SecretFile>,
    /// Members of each group, by source ("config", "api", "tag").
    groups: RwLock<BTreeMap<String, BTreeMap<DeviceId, BTreeSet<&'static str>>>>,
    /// Each device's tag value last seen and the groups it named (to act on changes only).
    tagged: Mutex<HashMap<DeviceId, Tagged>>,
    store: Option<Arc<dyn GroupMembers>>,
}

impl Operators {
    /// The operators of the configuration; the tokens file is read now (an error here
    /// stops the start).
    pub fn new(
        http: &gateway_config::HttpSettings,
        o: &OperatorSettings,
        store: Option<Arc<dyn GroupMembers>>,
    ) -> Result<Self, TokensError> {
        let mut configured: Vec<Arc<Token>> = o
            .token
            .iter()
            .filter_map(|(name, t)| token(name, t).map(Arc::new))
            .collect();
        for (i, secret) in http.api_tokens.iter().enumerate() {
            configured.push(Arc::new(Token {
                name: format!("token-{}", i + 1),
                sha256: sha256(secret.as_bytes()),
                read: true,
                command: true,
                devices: Vec::new(),
            }));
        }
        let mut groups: BTreeMap<String, BTreeMap<DeviceId, BTreeSet<&'static str>>> =
            BTreeMap::new();
        for (name, devices) in &o.group {
            let members = groups.entry(name.clone()).or_default();
            for d in devices {
                if let Ok(d) = DeviceId::parse_path(d) {
                    members.entry(d).or_default().insert("config");
                }
            }
        }
        let ops = Operators {
            configured,
            from_file: RwLock::new(Vec::new()),
            file: (!o.tokens_file.is_empty()).then(|| {
                SecretFile::new(
                    "operators.tokens_file",
                    "tokens",
                    PathBuf::from(&o.tokens_file),
                )
            }),
            groups: RwLock::new(groups),
            tagged: Mutex::new(HashMap::new()),
            store,
        };
        ops.reload()?;
        Ok(ops)
    }

    /// Reads the stored memberships (API and tags) into memory, at start.
    pub async fn load_members(&self) -> Result<(), crate::commands::store::StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let rows = store.group_members().await?;
        let mut groups = write(&self.groups);
        let mut tagged = lock(&self.tagged);
        for (group, device, source) in rows {
            let source = if source == FROM_TAG {
                FROM_TAG
            } else {
                FROM_API
            };
            if source == FROM_TAG {
                let (raw, set) = tagged.entry(device.clone()).or_default();
                set.insert(group.clone());
                *raw = Some(set.iter().cloned().collect::<Vec<_>>().join(","));
            }
            groups
                .entry(group)
                .or_default()
                .entry(device)
                .or_default()
                .insert(source);
        }
        Ok(())
    }

    /// Whether any token is configured (else the API refuses every request).
    pub fn any(&self) -> bool {
        !self.configured.is_empty() || !read(&self.from_file).is_empty()
    }

    /// The token whose secret this is: every token's hash is compared, in constant time.
    pub fn authenticate(&self, secret: &str) -> Option<Operator> {
        let given = sha256(secret.as_bytes());
        let file = read(&self.from_file);
        let mut found = None;
        for t in self.configured.iter().chain(file.iter()) {
            if constant_time_eq(&t.sha256, &given) && found.is_none() {
                found = Some(Operator(t.clone()));
            }
        }
        found
    }

    /// Whether `op` may see `device`.
    pub fn sees(&self, op: &Operator, device: &DeviceId) -> bool {
        if op.sees_all() {
            return true;
        }
        let groups = read(&self.groups);
        op.0.devices.iter().any(|s| match s {
            Selector::Network(n) => device.network == *n,
            Selector::Prefix(n, p) => device.network == *n && device.id.starts_with(p.as_str()),
            Selector::Device(d) => d == device,
            Selector::Group(g) => groups.get(g).is_some_and(|m| m.contains_key(device)),
        })
    }

    /// The members of a group (every source), in order.
    pub fn members(&self, group: &str) -> Vec<DeviceId> {
        read(&self.groups)
            .get(group)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The groups a device is in.
    pub fn groups_of(&self, device: &DeviceId) -> Vec<String> {
        read(&self.groups)
            .iter()
            .filter(|(_, m)| m.contains_key(device))
            .map(|(g, _)| g.clone())
            .collect()
    }

    /// Every member of a group with where its membership comes from.
    pub fn members_with_sources(&self, group: &str) -> Vec<(DeviceId, Vec<&'static str>)> {
        read(&self.groups)
            .get(group)
            .map(|m| {
                m.iter()
                    .map(|(d, s)| (d.clone(), s.iter().copied().collect()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds or removes a device from a group through the API: stored first.
    pub async fn set_member(
        &self,
        group: &str,
        device: &DeviceId,
        present: bool,
    ) -> Result<(), crate::commands::store::StoreError> {
        if let Some(store) = &self.store {
            store
                .set_group_member(group, device, FROM_API, present)
                .await?;
        }
        self.remember(group, device, FROM_API, present);
        Ok(())
    }

    fn remember(&self, group: &str, device: &DeviceId, source: &'static str, present: bool) {
        let mut groups = write(&self.groups);
        if present {
            groups
                .entry(group.to_owned())
                .or_default()
                .entry(device.clone())
                .or_default()
                .insert(source);
        } else if let Some(members) = groups.get_mut(group) {
            if let Some(sources) = members.get_mut(device) {
                sources.remove(source);
                if sources.is_empty() {
                    members.remove(device);
                }
            }
            if members.is_empty() {
                groups.remove(group);
            }
        }
    }

    /// The groups a device's tag names now (`value`: comma-separated names; `None`: no
    /// such tag): memberships from tags follow it, stored when they change.
    pub async fn tagged(&self, device: &DeviceId, value: Option<&str>) {
        if lock(&self.tagged)
            .get(device)
            .is_some_and(|(raw, _)| raw.as_deref() == value)
        {
            return; // the uplinks' usual case: the tag as before
        }
        let now: BTreeSet<String> = value
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|g| gateway_config::valid_name(g))
            .map(str::to_owned)
            .collect();
        let before = {
            let mut tagged = lock(&self.tagged);
            let entry = tagged.entry(device.clone()).or_default();
            entry.0 = value.map(str::to_owned);
            if entry.1 == now {
                return;
            }
            std::mem::replace(&mut entry.1, now.clone())
        };
        for (group, present) in before
            .difference(&now)
            .map(|g| (g, false))
            .chain(now.difference(&before).map(|g| (g, true)))
        {
            self.remember(group, device, FROM_TAG, present);
            if let Some(store) = &self.store {
                if let Err(e) = store
                    .set_group_member(group, device, FROM_TAG, present)
                    .await
                {
                    tracing::error!(device = %device, group, error = %e, "store failed recording a group from a device tag");
                }
            }
        }
        tracing::info!(device = %device, groups = ?now, "groups from the device's tag");
    }

    /// Reads the tokens file again when it changed; `Ok(true)` when new tokens are in
    /// force. On an error the tokens in force stay.
    pub fn reload(&self) -> Result<bool, TokensError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let parsed = file.read_if_changed(|text| {
            gateway_config::parse_tokens_file(text).map_err(|problems| TokensError::Invalid {
                path: file.path().to_owned(),
                problems,
            })
        })?;
        let Some(parsed) = parsed else {
            return Ok(false);
        };
        let tokens: Vec<Arc<Token>> = parsed
            .iter()
            .filter_map(|(name, t)| token(name, t).map(Arc::new))
            .collect();
        *write(&self.from_file) = tokens;
        Ok(true)
    }

    /// Reads the tokens file again every 2 s when it changed (on `jobs`, until `stop`).
    pub fn watch(
        self: &Arc<Self>,
        jobs: &tokio_util::task::TaskTracker,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        if self.file.is_none() {
            return;
        }
        let ops = self.clone();
        crate::secret::watch("API tokens", jobs, stop, move || {
            Ok::<_, TokensError>(ops.reload()?.then(|| read(&ops.from_file).len()))
        });
    }
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

/// The SHA-256 of a secret in hex, as `[operators.token]` wants it
/// (`longproto-bridge hash-token`).
pub fn hash_secret(secret: &str) -> String {
    hex::encode(sha256(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(tokens: &str, groups: &[(&str, &[&str])]) -> Operators {
        let mut o = OperatorSettings {
            token: gateway_config::parse_tokens_file(tokens).unwrap(),
            ..Default::default()
        };
        for (g, ds) in groups {
            o.group
                .insert(g.to_string(), ds.iter().map(|d| d.to_string()).collect());
        }
        Operators::new(&gateway_config::HttpSettings::default(), &o, None).unwrap()
    }

    fn dev(s: &str) -> DeviceId {
        DeviceId::parse_path(s).unwrap()
    }

    #[test]
    fn a_token_sees_its_networks_prefixes_devices_and_groups_only() {
        let line = |name: &str, secret: &str, devices: &str| {
            format!(
                "{name} = {{ secret_sha256 = \"{}\", scopes = [\"read\"], devices = [{devices}] }}\n",
                hash_secret(secret)
            )
        };
        let text = format!(
            "[token]\n{}{}{}",
            line("all", "secret-all-0123456789", ""),
            line(
                "lisbon",
                "secret-lisbon-0123456",
                "\"group:lisbon\", \"sigfox/0051*\""
            ),
            line(
                "one",
                "secret-one-0123456789",
                "\"lorawan/70b3d57ed0000001\""
            ),
        );
        let o = ops(&text, &[("lisbon", &["cellular/ce11000000000c01"])]);
        let all = o.authenticate("secret-all-0123456789").unwrap();
        let lisbon = o.authenticate("secret-lisbon-0123456").unwrap();
        let one = o.authenticate("secret-one-0123456789").unwrap();
        assert!(o.authenticate("secret-none").is_none());
        assert_eq!(lisbon.name(), "lisbon");
        assert!(lisbon.can_read() && !lisbon.can_command());
        for d in [
            "lorawan/70b3d57ed0000001",
            "sigfox/0051aa01",
            "cellular/ce11000000000c01",
        ] {
            assert!(o.sees(&all, &dev(d)), "{d}");
        }
        assert!(o.sees(&lisbon, &dev("cellular/ce11000000000c01")));
        assert!(o.sees(&lisbon, &dev("sigfox/0051aa01")));
        assert!(!o.sees(&lisbon, &dev("sigfox/0052aa01")));
        assert!(!o.sees(&lisbon, &dev("lorawan/70b3d57ed0000001")));
        assert!(o.sees(&one, &dev("lorawan/70b3d57ed0000001")));
        assert!(!o.sees(&one, &dev("lorawan/70b3d57ed0000002")));
    }

    #[tokio::test]
    async fn tags_move_a_device_between_groups() {
        let o = ops("", &[]);
        let d = dev("lorawan/70b3d57ed0000001");
        o.tagged(&d, Some("lisbon, scooters")).await;
        assert_eq!(o.groups_of(&d), ["lisbon", "scooters"]);
        o.tagged(&d, Some("porto")).await;
        assert_eq!(o.groups_of(&d), ["porto"]);
        o.tagged(&d, None).await;
        assert!(o.groups_of(&d).is_empty());
        // a name that is not one makes no group
        o.tagged(&d, Some("Not A Name,ok")).await;
        assert_eq!(o.groups_of(&d), ["ok"]);
    }
}
