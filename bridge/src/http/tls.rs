//! TLS for the cellular listener: TLS 1.3 only, X25519 only, one session ticket per
//! handshake, and ticket keys that survive a restart.
//!
//! Why each choice (bytes on the air, docs/benchmarks.md):
//! - X25519 alone: a post-quantum hybrid key share adds about a kilobyte to every
//!   full handshake;
//! - TLS 1.3: resumption by ticket with a key exchange, in one round trip;
//! - one ticket per handshake instead of rustls's two: a device resumes with one, and
//!   gets a fresh one each time;
//! - ticket keys in a file (`tls_ticket_keys_file`, mode 600): rustls's own keys are
//!   random per process, so a restart would void every ticket and cost every vehicle a
//!   full handshake. A new key every [`ROTATE_AFTER`]; the previous one still opens
//!   tickets, so a ticket lives at least that long.
use anyhow::Context;
use ring::aead::{self, Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::server::ProducesTickets;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a ticket key issues tickets.
pub const ROTATE_AFTER: Duration = Duration::from_secs(12 * 3600);
const NAME_LEN: usize = 4;
const NONCE_LEN: usize = 12;

/// The server configuration of `[cellular] tls_cert` / `tls_key`.
pub fn server_config(
    cert_path: &str,
    key_path: &str,
    ticket_keys_file: &str,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let cert_pem = std::fs::read(cert_path)
        .with_context(|| format!("cellular.tls_cert: cannot read {cert_path}"))?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .context("cellular.tls_cert: not a PEM certificate")?;
    anyhow::ensure!(
        !certs.is_empty(),
        "cellular.tls_cert: {cert_path} holds no certificate"
    );
    let key_pem = std::fs::read(key_path)
        .with_context(|| format!("cellular.tls_key: cannot read {key_path}"))?;
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .context("cellular.tls_key: not a PEM key")?
        .with_context(|| format!("cellular.tls_key: {key_path} holds no private key"))?;
    let mut provider = rustls::crypto::ring::default_provider();
    provider.kx_groups = vec![rustls::crypto::ring::kx_group::X25519];
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("cellular TLS: TLS 1.3 with X25519")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("cellular.tls_key: does not match tls_cert")?;
    config.send_tls13_tickets = 1;
    config.ticketer = if ticket_keys_file.is_empty() {
        rustls::crypto::ring::Ticketer::new().context("cellular TLS: session tickets")?
    } else {
        Arc::new(TicketKeys::open(Path::new(ticket_keys_file))?)
    };
    Ok(Arc::new(config))
}

/// A ticket key: its name (the ticket's first bytes), when it was made, the key.
struct TicketKey {
    name: [u8; NAME_LEN],
    created_s: u64,
    secret: [u8; 32],
    aead: LessSafeKey,
}

impl TicketKey {
    fn new(name: [u8; NAME_LEN], created_s: u64, secret: [u8; 32]) -> Self {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &secret).expect("a 32-byte key");
        TicketKey {
            name,
            created_s,
            secret,
            aead: LessSafeKey::new(unbound),
        }
    }

    fn random(rng: &SystemRandom, created_s: u64) -> anyhow::Result<Self> {
        let mut name = [0u8; NAME_LEN];
        let mut secret = [0u8; 32];
        rng.fill(&mut name)
            .and_then(|_| rng.fill(&mut secret))
            .map_err(|_| anyhow::anyhow!("no randomness for a ticket key"))?;
        Ok(TicketKey::new(name, created_s, secret))
    }
}

/// Session-ticket keys kept in a file: the current one and the one before.
pub struct TicketKeys {
    path: PathBuf,
    rng: SystemRandom,
    keys: Mutex<Vec<TicketKey>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TicketKeys({})", self.path.display())
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TicketKeys {
    /// The keys in `path`, made (and written) when the file is missing, rotated when the
    /// current one is old.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let what = || format!("cellular.tls_ticket_keys_file {}", path.display());
        let mut keys = Vec::new();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                for (i, line) in text.lines().enumerate() {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let parsed = match words[..] {
                        [created, name, secret] => (|| {
                            Some(TicketKey::new(
                                hex::decode(name).ok()?.try_into().ok()?,
                                created.parse().ok()?,
                                hex::decode(secret).ok()?.try_into().ok()?,
                            ))
                        })(),
                        [] => continue,
                        _ => None,
                    };
                    let key = parsed.with_context(|| {
                        format!("{}, line {}: expected \"<created, unix s> <name, 8 hex> <key, 64 hex>\"", what(), i + 1)
                    })?;
                    keys.push(key);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(what),
        }
        let t = TicketKeys {
            path: path.to_owned(),
            rng: SystemRandom::new(),
            keys: Mutex::new(keys),
        };
        t.rotate_if_due(now_s()).with_context(what)?;
        Ok(t)
    }

    /// A new current key when there is none or it is [`ROTATE_AFTER`] old; the file is
    /// rewritten (mode 600, by rename).
    fn rotate_if_due(&self, now: u64) -> anyhow::Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if keys
            .first()
            .is_some_and(|k| now < k.created_s + ROTATE_AFTER.as_secs())
        {
            return Ok(());
        }
        keys.insert(0, TicketKey::random(&self.rng, now)?);
        keys.truncate(2);
        let mut text = String::new();
        for k in keys.iter() {
            text += &format!(
                "{} {} {}\n",
                k.created_s,
                hex::encode(k.name),
                hex::encode(k.secret)
            );
        }
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        Ok(())
    }
}

impl ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        ROTATE_AFTER.as_secs() as u32
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        if let Err(e) = self.rotate_if_due(now_s()) {
            tracing::error!(error = %e, "cannot rotate the TLS ticket key; the current one stays");
        }
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&key.name);
        out.extend_from_slice(&nonce);
        let mut sealed = plain.to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&key.name),
                &mut sealed,
            )
            .ok()?;
        out.extend_from_slice(&sealed);
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_LEN + NONCE_LEN + aead::MAX_TAG_LEN {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let key = keys.iter().find(|k| k.name == name)?;
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(name), &mut buf)
            .ok()?;
        Some(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_open_after_a_restart_and_after_one_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ticket-keys");
        let first = TicketKeys::open(&path).unwrap();
        let ticket = first.encrypt(b"session state").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        let restarted = TicketKeys::open(&path).unwrap();
        assert_eq!(restarted.decrypt(&ticket).unwrap(), b"session state");

        let later = now_s() + ROTATE_AFTER.as_secs();
        restarted.rotate_if_due(later).unwrap();
        assert_eq!(
            restarted.decrypt(&ticket).unwrap(),
            b"session state",
            "the previous key still opens"
        );
        restarted
            .rotate_if_due(later + ROTATE_AFTER.as_secs())
            .unwrap();
        assert!(
            restarted.decrypt(&ticket).is_none(),
            "two rotations later it is gone"
        );

        let mut forged = first.encrypt(b"x").unwrap();
        *forged.last_mut().unwrap() ^= 1;
        assert!(first.decrypt(&forged).is_none());
    }
}
