//! A device is `{network}/{id}`: the network it is reached through and its id there.
use std::fmt;

/// The networks a device can be reached through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Network {
    /// LoRaWAN through ChirpStack; the id is the DevEUI.
    Lorawan,
    /// Sigfox backend callbacks; the id is the Sigfox device id.
    Sigfox,
    /// HTTP long-poll for cellular devices (a later part).
    Cellular,
}

impl Network {
    /// The name in topics and URLs.
    pub const fn name(self) -> &'static str {
        match self {
            Network::Lorawan => "lorawan",
            Network::Sigfox => "sigfox",
            Network::Cellular => "cellular",
        }
    }

    /// The network of a name.
    pub fn from_name(s: &str) -> Option<Network> {
        [Network::Lorawan, Network::Sigfox, Network::Cellular]
            .into_iter()
            .find(|n| n.name() == s)
    }
}

/// A LoRaWAN device's class (as ChirpStack's `deviceClassEnabled` says): class A takes a
/// downlink only right after its uplinks, B and C at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceClass {
    /// Receive windows after each uplink only.
    A,
    /// Ping slots besides.
    B,
    /// Listening all the time.
    C,
}

impl DeviceClass {
    /// "A", "B" or "C", as stored.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeviceClass::A => "A",
            DeviceClass::B => "B",
            DeviceClass::C => "C",
        }
    }

    /// The class of "A", "B" or "C".
    pub fn from_letter(s: &str) -> Option<DeviceClass> {
        match s {
            "A" => Some(DeviceClass::A),
            "B" => Some(DeviceClass::B),
            "C" => Some(DeviceClass::C),
            _ => None,
        }
    }

    /// Whether the device takes a downlink outside the windows its uplinks open.
    pub const fn always_reachable(self) -> bool {
        !matches!(self, DeviceClass::A)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A device: network and lowercase hex id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId {
    /// The network.
    pub network: Network,
    /// The id, lowercase hex.
    pub id: String,
}

/// Why a device id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceIdError {
    /// Not one of lorawan, sigfox, cellular.
    #[error("unknown network \"{0}\"; expected lorawan, sigfox or cellular")]
    UnknownNetwork(String),
    /// Not hex of the right length for the network.
    #[error("\"{id}\" is not a {network} device id: expected {expected}")]
    BadId {
        /// The network.
        network: Network,
        /// The id as given.
        id: String,
        /// What an id of that network looks like.
        expected: &'static str,
    },
}

impl DeviceId {
    /// A device id, normalised to lowercase (and a Sigfox id to 8 digits with leading
    /// zeros); input in any case is accepted.
    pub fn new(network: Network, id: &str) -> Result<Self, DeviceIdError> {
        let (ok, expected) = match network {
            Network::Lorawan => (id.len() == 16, "16 hex digits (the DevEUI)"),
            Network::Sigfox => ((1..=8).contains(&id.len()), "1 to 8 hex digits"),
            Network::Cellular => ((1..=32).contains(&id.len()), "1 to 32 hex digits"),
        };
        if !ok || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(DeviceIdError::BadId {
                network,
                id: excerpt(id).into_owned(),
                expected,
            });
        }
        let id = match network {
            // a Sigfox id is a 32-bit number in hex, written with or without leading
            // zeros ({device} in a callback has none): one device, one form
            Network::Sigfox => format!("{:0>8}", id.to_ascii_lowercase()),
            _ => id.to_ascii_lowercase(),
        };
        Ok(DeviceId { network, id })
    }

    /// Parses the `{network}/{id}` form (as [`fmt::Display`] writes it and the store keeps it).
    pub fn parse_path(s: &str) -> Result<Self, DeviceIdError> {
        let (network, id) = s.split_once('/').unwrap_or((s, ""));
        DeviceId::parse(network, id)
    }

    /// Parses a network name and an id, as in a URL or a topic.
    pub fn parse(network: &str, id: &str) -> Result<Self, DeviceIdError> {
        let network = Network::from_name(network)
            .ok_or_else(|| DeviceIdError::UnknownNetwork(excerpt(network).into_owned()))?;
        DeviceId::new(network, id)
    }
}

/// Text from input as an error message quotes it: whole when short, else its first 64
/// characters and its length, so a 10 KB id is not echoed back whole.
pub fn excerpt(s: &str) -> std::borrow::Cow<'_, str> {
    const KEEP: usize = 64;
    match s.char_indices().nth(KEEP) {
        None => s.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()).into(),
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_checks_length() {
        let d = DeviceId::parse("lorawan", "70B3D57ED0051A2B").unwrap();
        assert_eq!(d.to_string(), "lorawan/70b3d57ed0051a2b");
        assert_eq!(DeviceId::parse("sigfox", "1A2B3C").unwrap().id, "001a2b3c");
        assert_eq!(
            DeviceId::parse("sigfox", "001a2b3c").unwrap(),
            DeviceId::parse("sigfox", "1a2b3c").unwrap()
        );
        assert!(DeviceId::parse("lorawan", "70b3").is_err());
        assert_eq!(
            DeviceId::parse_path("sigfox/1A2B").unwrap().to_string(),
            "sigfox/00001a2b"
        );
        assert!(DeviceId::parse_path("sigfox").is_err());
        assert!(DeviceId::parse("sigfox", "123456789").is_err());
        assert!(DeviceId::parse("sigfox", "12x4").is_err());
        assert_eq!(
            DeviceId::parse("lora", "00").unwrap_err().to_string(),
            "unknown network \"lora\"; expected lorawan, sigfox or cellular"
        );
    }
}
