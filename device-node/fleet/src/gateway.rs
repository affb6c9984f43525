//! Gateway mode: the fleet as radio frames. Each LoRaWAN device joins by OTAA and sends
//! genuine data frames (encrypted FRMPayload, MIC, FCnt) built with the `lorawan` crate;
//! a simulated gateway publishes them as a ChirpStack gateway bridge does
//! (`gw.UplinkFrame`, protobuf, on `{prefix}/gateway/{id}/event/up`), takes
//! `gw.DownlinkFrame`s from `{prefix}/gateway/{id}/command/down`, hands each frame to the
//! device it is for (join accept: MIC checked with the AppKey; data: by DevAddr, MIC
//! checked, decrypted with the session keys), and answers `gw.DownlinkTxAck` on
//! `event/ack`. Point a real ChirpStack v4 (with the gateway and the devices registered,
//! AppKey `key_for(dev_eui)`) at the same broker and it drives it end to end.
use super::{Fleet, Radio, lock, now_ms};
use chirpstack_api::gw;
use lorawan::creator::{DataPayloadCreator, JoinRequestCreator};
use lorawan::keys::{AppEui, AppKey, AppSKey, DevEui, NewSKey};
use lorawan::parser::{
    DataHeader, DataPayload, DevNonce, FCtrl, FRMPayload, JoinAcceptPayload, PhyPayload, parse,
};
use prost::Message;
use rumqttc::{AsyncClient, Event, Packet, QoS};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Why a downlink frame was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not a LoRaWAN frame at all.
    #[error("not a LoRaWAN PHYPayload: {0}")]
    Malformed(String),
    /// A join accept arrived while no join was pending.
    #[error("a join accept while no join request is pending")]
    NoJoinPending,
    /// The MIC does not verify with this device's key.
    #[error("MIC mismatch")]
    BadMic,
    /// A data frame for another device.
    #[error("DevAddr {0} is not this device's")]
    OtherDevice(String),
    /// A frame counter at or below one already taken.
    #[error("FCntDown {got} replayed (last {last})")]
    Replay {
        /// The frame's counter.
        got: u32,
        /// The last one taken.
        last: u32,
    },
    /// An uplink-direction frame, or one the device cannot take.
    #[error("not a downlink for an end device")]
    NotDownlink,
}

/// One end device's LoRaWAN 1.0.x MAC state.
#[derive(Debug, Clone)]
pub struct Session {
    /// DevEUI, most significant byte first.
    pub dev_eui: [u8; 8],
    /// JoinEUI, most significant byte first.
    pub join_eui: [u8; 8],
    /// AppKey.
    pub app_key: [u8; 16],
    /// The DevNonce of the last join request.
    pub dev_nonce: u16,
    /// Set by the join accept.
    pub joined: Option<Joined>,
    join_pending: bool,
    join_sent_ms: u64,
}

/// What a join accept gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joined {
    /// DevAddr, most significant byte first.
    pub dev_addr: [u8; 4],
    /// Network session key.
    pub nwk_skey: [u8; 16],
    /// Application session key.
    pub app_skey: [u8; 16],
    /// Next uplink frame counter.
    pub f_cnt_up: u32,
    /// Last downlink frame counter taken.
    pub f_cnt_down: Option<u32>,
    /// A confirmed downlink was taken and the next uplink has not acknowledged it yet
    /// (LoRaWAN 1.0.4 §4.3.1.2: the ACK bit in the next uplink, as the firmware does).
    pub ack_owed: bool,
}

/// The simulator's AppKey for a DevEUI (for registering simulated devices in ChirpStack):
/// the DevEUI twice. Simulated devices only.
pub fn key_for(dev_eui: &[u8; 8]) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(dev_eui);
    k[8..].copy_from_slice(dev_eui);
    k
}

fn lsb<const N: usize>(mut b: [u8; N]) -> [u8; N] {
    b.reverse();
    b
}

impl Session {
    /// A device that has not joined yet.
    pub fn new(dev_eui: [u8; 8], join_eui: [u8; 8], app_key: [u8; 16]) -> Self {
        Session {
            dev_eui,
            join_eui,
            app_key,
            dev_nonce: 0,
            joined: None,
            join_pending: false,
            join_sent_ms: 0,
        }
    }

    /// A join request with the next DevNonce (LoRaWAN 1.0.4 counts them up).
    pub fn join_request(&mut self) -> Vec<u8> {
        self.dev_nonce = self.dev_nonce.wrapping_add(1);
        self.join_pending = true;
        self.join_sent_ms = now_ms();
        let mut phy = JoinRequestCreator::new();
        phy.set_app_eui(AppEui::from(lsb(self.join_eui)))
            .set_dev_eui(DevEui::from(lsb(self.dev_eui)))
            .set_dev_nonce(&self.dev_nonce.to_le_bytes());
        phy.build(&AppKey::from(self.app_key)).to_vec()
    }

    /// Takes a join accept: checks its MIC, derives the session keys.
    pub fn take_join_accept(&mut self, phy: &[u8]) -> Result<&Joined, FrameError> {
        if !self.join_pending {
            return Err(FrameError::NoJoinPending);
        }
        let key = AppKey::from(self.app_key);
        let PhyPayload::JoinAccept(JoinAcceptPayload::Encrypted(enc)) =
            parse(phy.to_vec()).map_err(|e| FrameError::Malformed(format!("{e:?}")))?
        else {
            return Err(FrameError::NotDownlink);
        };
        let accept = enc.decrypt(&key);
        if !accept.validate_mic(&key) {
            return Err(FrameError::BadMic);
        }
        let nonce_bytes = self.dev_nonce.to_le_bytes();
        let nonce = DevNonce::new(&nonce_bytes[..]).ok_or(FrameError::NotDownlink)?;
        let nwk: NewSKey = accept.derive_newskey(&nonce, &key);
        let app: AppSKey = accept.derive_appskey(&nonce, &key);
        let mut dev_addr = [0u8; 4];
        dev_addr.copy_from_slice(accept.dev_addr().as_ref());
        dev_addr.reverse();
        let mut nwk_skey = [0u8; 16];
        nwk_skey.copy_from_slice(nwk.as_ref());
        let mut app_skey = [0u8; 16];
        app_skey.copy_from_slice(app.as_ref());
        self.join_pending = false;
        Ok(self.joined.insert(Joined {
            dev_addr,
            nwk_skey,
            app_skey,
            f_cnt_up: 0,
            f_cnt_down: None,
            ack_owed: false,
        }))
    }

    /// A data uplink: `payload` on `f_port`, encrypted, with its MIC; None before the join.
    /// It acknowledges a confirmed downlink taken since the last uplink.
    pub fn data_up(&mut self, f_port: u8, payload: &[u8], confirmed: bool) -> Option<Vec<u8>> {
        let j = self.joined.as_mut()?;
        let mut phy = DataPayloadCreator::new();
        let mut fctrl = FCtrl::new(0, true);
        if j.ack_owed {
            fctrl.set_ack();
        }
        phy.set_confirmed(confirmed)
            .set_fctrl(&fctrl)
            .set_uplink(true)
            .set_f_port(f_port)
            .set_dev_addr(&lsb(j.dev_addr))
            .set_fcnt(j.f_cnt_up);
        let frame = phy
            .build(
                payload,
                &[],
                &NewSKey::from(j.nwk_skey),
                &AppSKey::from(j.app_skey),
            )
            .ok()?
            .to_vec();
        j.f_cnt_up += 1;
        j.ack_owed = false;
        Some(frame)
    }

    /// Takes a data downlink for this device: (fPort, decrypted payload); MAC-only frames
    /// give fPort 0 and no payload.
    pub fn take_data_down(&mut self, phy: &[u8]) -> Result<(u8, Vec<u8>), FrameError> {
        let j = self.joined.as_mut().ok_or(FrameError::NotDownlink)?;
        let PhyPayload::Data(DataPayload::Encrypted(enc)) =
            parse(phy.to_vec()).map_err(|e| FrameError::Malformed(format!("{e:?}")))?
        else {
            return Err(FrameError::NotDownlink);
        };
        if enc.is_uplink() {
            return Err(FrameError::NotDownlink);
        }
        let mut addr = [0u8; 4];
        addr.copy_from_slice(enc.fhdr().dev_addr().as_ref());
        addr.reverse();
        if addr != j.dev_addr {
            return Err(FrameError::OtherDevice(hex::encode(addr)));
        }
        // the 16 bits on the air, extended from the last one taken: ahead by at most
        // MAX_FCNT_GAP (16384), else a replay (or a gap no device should accept)
        let low = enc.fhdr().fcnt();
        let full = match j.f_cnt_down {
            None => low as u32,
            Some(last) => {
                let ahead = low.wrapping_sub(last as u16) as u32;
                if ahead == 0 || ahead > 16_384 {
                    return Err(FrameError::Replay {
                        got: (last & !0xFFFF) | low as u32,
                        last,
                    });
                }
                last + ahead
            }
        };
        let nwk = NewSKey::from(j.nwk_skey);
        let app = AppSKey::from(j.app_skey);
        let dec = enc
            .decrypt_if_mic_ok(nwk.inner(), app.inner(), full)
            .map_err(|_| FrameError::BadMic)?;
        j.f_cnt_down = Some(full);
        // MType 101: ConfirmedDataDown
        if phy[0] >> 5 == 0b101 {
            j.ack_owed = true;
        }
        let port = dec.f_port().unwrap_or(0);
        let data = match dec.frm_payload() {
            FRMPayload::Data(d) => d.to_vec(),
            _ => Vec::new(),
        };
        Ok((port, data))
    }
}

/// A `gw.UplinkFrame` as a gateway bridge publishes it (EU868, SF7BW125, 868.1 MHz).
pub fn uplink_frame(phy: Vec<u8>, gateway_id: &str, uplink_id: u32) -> gw::UplinkFrame {
    gw::UplinkFrame {
        phy_payload: phy,
        tx_info: Some(gw::UplinkTxInfo {
            frequency: 868_100_000,
            modulation: Some(gw::Modulation {
                parameters: Some(gw::modulation::Parameters::Lora(gw::LoraModulationInfo {
                    bandwidth: 125_000,
                    spreading_factor: 7,
                    code_rate: gw::CodeRate::Cr45 as i32,
                    ..Default::default()
                })),
            }),
        }),
        rx_info: Some(gw::UplinkRxInfo {
            gateway_id: gateway_id.to_owned(),
            uplink_id,
            rssi: -80,
            snr: 9.0,
            // the concentrator's counter, which ChirpStack hands back for RX1 timing
            context: (now_ms() as u32).wrapping_mul(1000).to_be_bytes().to_vec(),
            crc_status: gw::CrcStatus::CrcOk as i32,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The gateway's answer to a `gw.DownlinkFrame`: the first item sent, the rest ignored.
pub fn tx_ack(down: &gw::DownlinkFrame, gateway_id: &str) -> gw::DownlinkTxAck {
    gw::DownlinkTxAck {
        gateway_id: gateway_id.to_owned(),
        downlink_id: down.downlink_id,
        items: (0..down.items.len())
            .map(|i| gw::DownlinkTxAckItem {
                status: if i == 0 {
                    gw::TxAckStatus::Ok as i32
                } else {
                    gw::TxAckStatus::Ignored as i32
                },
            })
            .collect(),
        ..Default::default()
    }
}

/// Gateway mode's settings.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// ChirpStack's region topic prefix (`eu868`).
    pub topic_prefix: String,
    /// The gateway id (16 hex digits).
    pub gateway_id: String,
    /// The JoinEUI of every device.
    pub join_eui: [u8; 8],
}

/// Runs the fleet's LoRaWAN devices as radio frames through one simulated gateway.
pub async fn run(fleet: Arc<Fleet>, opts: GatewayOptions) {
    let id = format!("longproto-fleet-gateway-{}", opts.gateway_id);
    let (client, mut eventloop) = super::mqtt_client(&fleet.targets, &id);
    let mut sessions: HashMap<String, Session> = HashMap::new();
    for d in lock(&fleet.devices).iter() {
        if let Radio::Lorawan(_) = d.radio {
            let mut eui = [0u8; 8];
            if hex::decode_to_slice(&d.id, &mut eui).is_ok() {
                sessions.insert(
                    d.id.clone(),
                    Session::new(eui, opts.join_eui, key_for(&eui)),
                );
            }
        }
    }
    let sessions = Arc::new(std::sync::Mutex::new(sessions));
    let base = format!("{}/gateway/{}", opts.topic_prefix, opts.gateway_id);
    let down_topic = format!("{base}/command/down");
    {
        let (client, fleet, sessions, base) = (
            client.clone(),
            fleet.clone(),
            sessions.clone(),
            base.clone(),
        );
        tokio::spawn(async move { report(fleet, client, sessions, base).await });
    }
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let _ = client.subscribe(down_topic.clone(), QoS::AtLeastOnce).await;
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == down_topic => {
                let Ok(down) = gw::DownlinkFrame::decode(p.payload.as_ref()) else {
                    lock(&fleet.stats).errors += 1;
                    continue;
                };
                if let Some(item) = down.items.first() {
                    deliver(&fleet, &sessions, &item.phy_payload);
                }
                let ack = tx_ack(&down, &opts.gateway_id).encode_to_vec();
                let _ = client
                    .publish(format!("{base}/event/ack"), QoS::AtLeastOnce, false, ack)
                    .await;
            }
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Finds the device a downlink is for and hands it over.
fn deliver(fleet: &Fleet, sessions: &std::sync::Mutex<HashMap<String, Session>>, phy: &[u8]) {
    let mut sessions = lock(sessions);
    for (id, s) in sessions.iter_mut() {
        let taken = if phy.first().map(|b| b >> 5) == Some(1) {
            s.take_join_accept(phy).map(|_| None)
        } else {
            s.take_data_down(phy).map(Some)
        };
        match taken {
            Ok(Some((port, data))) if port == device_node::COMMAND_FPORT => {
                fleet.with(id, |d, stats| d.receive(&data, now_ms(), stats));
                return;
            }
            Ok(_) => return,
            Err(_) => continue,
        }
    }
    lock(&fleet.stats).errors += 1;
}

/// Each device joins, then reports when its node says so.
async fn report(
    fleet: Arc<Fleet>,
    client: AsyncClient,
    sessions: Arc<std::sync::Mutex<HashMap<String, Session>>>,
    base: String,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut uplink_id = 0u32;
    loop {
        tick.tick().await;
        let now = now_ms();
        let mut frames = Vec::new();
        for (id, radio) in fleet.due(now) {
            if !matches!(radio, Radio::Lorawan(_)) {
                continue;
            }
            let mut sessions = lock(&sessions);
            let Some(s) = sessions.get_mut(&id) else {
                continue;
            };
            if s.joined.is_none() {
                // a join accept comes within 6 s (JOIN_ACCEPT_DELAY2) or not at all
                if !s.join_pending || now > s.join_sent_ms + 10_000 {
                    frames.push(s.join_request());
                }
                continue;
            }
            let payload = fleet.with(&id, |d, stats| {
                let status = d.vehicle.status();
                let mut buf = [0u8; 51];
                let n = d.node.build_uplink(Some(status), now, &mut buf, 51);
                stats.lorawan_uplinks += 1;
                buf[..n].to_vec()
            });
            if let Some(frame) =
                payload.and_then(|p| s.data_up(device_node::TELEMETRY_FPORT, &p, false))
            {
                frames.push(frame);
            }
        }
        for phy in frames {
            uplink_id = uplink_id.wrapping_add(1);
            let gateway_id = base.rsplit('/').next().unwrap_or_default();
            let up = uplink_frame(phy, gateway_id, uplink_id).encode_to_vec();
            let _ = client
                .publish(format!("{base}/event/up"), QoS::AtLeastOnce, false, up)
                .await;
        }
    }
}
