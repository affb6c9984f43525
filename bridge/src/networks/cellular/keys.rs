//! The cellular devices' keys: `[cellular] keys_file`, one line per device,
//! `<device id> <key, 32 hex digits> [<number> [frames|wake]]`; `#` starts a comment.
//! A device with a number (E.164, with or without its `+`) is reachable by SMS too
//! (`networks::sms`): `frames` (the default) sends the commands themselves, `wake` a
//! wake-up that makes the device poll at once.
//!
//! The file must not be readable by others: a key in it can unlock a vehicle. It is read
//! at start (a problem stops the bridge, naming the line) and again whenever its
//! modification time, size or inode changes (a problem then keeps the keys in force and
//! is logged). Keys never reach a log line: [`DeviceKey`]'s `Debug` hides them.
use crate::device::{DeviceId, Network};
use crate::secret::{SecretFile, SecretFileError};
use device_node::seal::DeviceKey;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

/// Why the keys file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// It cannot be read, or others may read it.
    #[error(transparent)]
    File(#[from] SecretFileError),
    /// A line is wrong.
    #[error("cellular.keys_file {path}, line {line}: {message}")]
    BadLine {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// How a device is reached by SMS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmsContact {
    /// Its number, digits only (E.164 without the `+`).
    pub number: String,
    /// Send a wake-up instead of the frames.
    pub wake: bool,
}

/// The keys in force, by device and by number.
#[derive(Default)]
struct Table {
    keys: HashMap<DeviceId, (DeviceKey, Option<SmsContact>)>,
    numbers: HashMap<String, DeviceId>,
}

/// The keys in force, and the file they come from.
pub struct DeviceKeys {
    file: Option<SecretFile>,
    keys: RwLock<Arc<Table>>,
}

impl DeviceKeys {
    /// Reads `path` (empty: no keys, every request is refused).
    pub fn load(path: &str) -> Result<Self, KeysError> {
        let keys = DeviceKeys {
            file: (!path.is_empty())
                .then(|| SecretFile::new("cellular.keys_file", "keys", PathBuf::from(path))),
            keys: RwLock::new(Arc::new(Table::default())),
        };
        keys.reload()?;
        Ok(keys)
    }

    fn table(&self) -> Arc<Table> {
        self.keys.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The key of a device, if it has one.
    pub fn get(&self, device: &DeviceId) -> Option<DeviceKey> {
        self.table().keys.get(device).map(|(k, _)| k.clone())
    }

    /// The key and SMS contact of a device that has a number.
    pub fn sms_of(&self, device: &DeviceId) -> Option<(DeviceKey, SmsContact)> {
        let t = self.table();
        let (key, contact) = t.keys.get(device)?;
        Some((key.clone(), contact.clone()?))
    }

    /// The device of a number (as an SMSC writes it: digits, perhaps a leading `+`).
    pub fn by_number(&self, number: &str) -> Option<(DeviceId, DeviceKey)> {
        let t = self.table();
        let device = t.numbers.get(number.trim_start_matches('+'))?;
        Some((device.clone(), t.keys.get(device)?.0.clone()))
    }

    /// How many devices have a key.
    pub fn len(&self) -> usize {
        self.table().keys.len()
    }

    /// Whether no device has a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads the file again every 2 s when it changed (on `jobs`, until `stop`): one
    /// watcher for every adapter holding these keys (cellular, SMS).
    pub fn watch(
        self: &Arc<Self>,
        jobs: &tokio_util::task::TaskTracker,
        stop: &tokio_util::sync::CancellationToken,
    ) {
        let keys = self.clone();
        crate::secret::watch("device keys", jobs, stop, move || {
            Ok::<_, KeysError>(keys.reload()?.then(|| keys.len()))
        });
    }

    /// Reads the file again when it changed; `Ok(true)` when new keys are in force. On
    /// an error the keys in force stay.
    pub fn reload(&self) -> Result<bool, KeysError> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        let Some(parsed) = file.read_if_changed(|text| parse(file.path(), text))? else {
            return Ok(false);
        };
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(parsed);
        Ok(true)
    }
}

fn parse(path: &Path, text: &str) -> Result<Table, KeysError> {
    let mut table = Table::default();
    for (i, raw) in text.lines().enumerate() {
        let bad = |message: String| KeysError::BadLine {
            path: path.to_owned(),
            line: i + 1,
            message,
        };
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (id, key) = match words[..] {
            [id, key] | [id, key, _] | [id, key, _, _] => (id, key),
            _ => {
                return Err(bad(
                    "expected \"<device id> <key, 32 hex digits> [<number> [frames|wake]]\""
                        .to_owned(),
                ));
            }
        };
        let device = DeviceId::new(Network::Cellular, id).map_err(|e| bad(e.to_string()))?;
        // the key itself is never quoted back: only its length
        let bytes: [u8; 16] = hex::decode(key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                bad(format!(
                    "the key of {device} is not 32 hex digits ({} characters)",
                    key.len()
                ))
            })?;
        let contact = match words.get(2) {
            None => None,
            Some(number) => {
                let digits = number.strip_prefix('+').unwrap_or(number);
                if !(6..=15).contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(bad(format!(
                        "number of {device}: \"{}\" is not an E.164 number (6 to 15 digits, perhaps after a +)",
                        crate::device::excerpt(number)
                    )));
                }
                let wake = match words.get(3).copied() {
                    None | Some("frames") => false,
                    Some("wake") => true,
                    Some(other) => {
                        return Err(bad(format!(
                            "SMS mode of {device}: \"{}\" is neither frames nor wake",
                            crate::device::excerpt(other)
                        )));
                    }
                };
                if let Some(earlier) = table.numbers.insert(digits.to_owned(), device.clone()) {
                    return Err(bad(format!("number of {device} is {earlier}'s already")));
                }
                Some(SmsContact {
                    number: digits.to_owned(),
                    wake,
                })
            }
        };
        if table
            .keys
            .insert(device.clone(), (DeviceKey::new(bytes), contact))
            .is_some()
        {
            return Err(bad(format!("{device} has a key on an earlier line")));
        }
    }
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("keys");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn keys_load_reload_and_refuse_a_world_readable_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = "2b7e151628aed2a6abf7158809cf4f3c";
        let path = write(dir.path(), &format!("# fleet\nCAFE01 {key}\n\n"), 0o600);
        let keys = DeviceKeys::load(path.to_str().unwrap()).unwrap();
        let cafe01 = DeviceId::new(Network::Cellular, "cafe01").unwrap();
        let cafe02 = DeviceId::new(Network::Cellular, "cafe02").unwrap();
        assert!(keys.get(&cafe01).is_some());
        assert!(keys.get(&cafe02).is_none());
        assert_eq!(keys.sms_of(&cafe01), None);

        let longer = format!("cafe01 {key}\ncafe02 {key} +491701234567 wake # added\n");
        std::fs::write(&path, longer).unwrap();
        assert!(keys.reload().unwrap());
        assert!(keys.get(&cafe02).is_some());
        let contact = keys.sms_of(&cafe02).unwrap().1;
        assert_eq!(
            (contact.number.as_str(), contact.wake),
            ("491701234567", true)
        );
        assert_eq!(keys.by_number("+491701234567").unwrap().0, cafe02);
        assert_eq!(keys.by_number("491701234567").unwrap().0, cafe02);
        assert!(!keys.reload().unwrap(), "unchanged: not read again");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&path, format!("cafe03 {key}\n")).unwrap();
        let e = keys.reload().unwrap_err().to_string();
        assert!(e.contains("mode 0644") && e.contains("chmod 600"), "{e}");
        assert!(keys.get(&cafe02).is_some(), "the keys in force stay");
    }

    #[test]
    fn a_bad_line_is_named_and_the_key_is_not_quoted() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "2b7e151628aed2a6abf7158809cf4f";
        let path = write(dir.path(), &format!("cafe01 {secret}\n"), 0o600);
        let e = DeviceKeys::load(path.to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1") && e.contains("30 characters"), "{e}");
        assert!(!e.contains(secret), "{e}");
        let path = write(
            dir.path(),
            &format!("cafe01 {secret}3c +4917012345678\ncafe02 {secret}3c 4917012345678 wake\n"),
            0o600,
        );
        let e = DeviceKeys::load(path.to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("line 2") && e.contains("cellular/cafe01's already"),
            "{e}"
        );
        let path = write(dir.path(), &format!("cafe01 {secret}3c 12ab45678\n"), 0o600);
        let e = DeviceKeys::load(path.to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not an E.164 number"), "{e}");
        let path = write(dir.path(), "zz 2b7e151628aed2a6abf7158809cf4f3c\n", 0o640);
        let e = DeviceKeys::load(path.to_str().unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("line 1") && e.contains("\"zz\""), "{e}");
    }
}
