//! `longproto-fleet`: a simulated fleet that drives a running longproto-bridge without
//! hardware. See `longproto-fleet --help`, `man longproto-fleet` and the README.
use anyhow::Context;
use clap::Parser;
use longproto_fleet::cli::{Args, ModeArg};
use longproto_fleet::{self as fleet, FleetSpec, Targets, gateway::GatewayOptions};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let url = url::Url::parse(&a.mqtt).with_context(|| format!("--mqtt {:?}", a.mqtt))?;
    let host = url.host_str().unwrap_or("127.0.0.1").to_owned();
    let port = url.port().unwrap_or(1883);
    if a.unlock_every.is_some() && a.api_token.is_none() {
        anyhow::bail!("--unlock-every needs --api-token (or LONGPROTO_FLEET_API_TOKEN)");
    }
    if a.sigfox > 0 && a.sigfox_secret.is_empty() {
        anyhow::bail!("--sigfox needs --sigfox-secret (or LONGPROTO_FLEET_SIGFOX_SECRET)");
    }
    let mode = match a.mode {
        ModeArg::Integration => fleet::Mode::Integration,
        ModeArg::Gateway => {
            let mut join_eui = [0u8; 8];
            hex::decode_to_slice(&a.join_eui, &mut join_eui)
                .with_context(|| format!("--join-eui {:?}: 16 hex digits", a.join_eui))?;
            fleet::Mode::Gateway(GatewayOptions {
                topic_prefix: a.region_prefix.clone(),
                gateway_id: a.gateway_id.clone(),
                join_eui,
            })
        }
    };
    if a.no_data_percent > 0 && a.smsc_listen.is_none() {
        anyhow::bail!(
            "--no-data-percent needs --smsc-listen: vehicles without data are reached by SMS"
        );
    }
    let mut devices = fleet::build(&FleetSpec {
        lorawan: a.lorawan,
        class_c_percent: a.class_c,
        sigfox: a.sigfox,
        cellular: a.cellular,
        interval_s: a.interval,
        seed: a.seed,
    });
    if a.smsc_listen.is_some() {
        let p = a.no_data_percent as u32;
        let cellular = devices
            .iter_mut()
            .filter(|d| d.radio == fleet::Radio::Cellular);
        for (k, d) in (0u32..).zip(cellular) {
            d.number = Some(fleet::sms::number_of(&d.id));
            // spread evenly: exactly the share, one vehicle in every 100 / percent
            d.data_session = (k + 1) * p / 100 == k * p / 100;
        }
    }
    let ids: Vec<(String, &str)> = devices
        .iter()
        .map(|d| {
            let network = match d.radio {
                fleet::Radio::Sigfox => "sigfox",
                fleet::Radio::Lorawan(_) => "lorawan",
                fleet::Radio::Cellular => "cellular",
            };
            (d.id.clone(), network)
        })
        .collect();
    if let Some(path) = &a.cellular_keys_out {
        let ids: Vec<&str> = devices
            .iter()
            .filter(|d| d.radio == fleet::Radio::Cellular)
            .map(|d| d.id.as_str())
            .collect();
        let text = match a.smsc_listen {
            Some(_) => fleet::sms::keys_file(a.seed, &ids),
            None => fleet::cellular::keys_file(a.seed, &ids),
        };
        write_private(path, &text)
            .with_context(|| format!("--cellular-keys-out {}", path.display()))?;
    }
    let cellular = match a.cellular {
        0 => None,
        _ => Some(fleet::cellular::CellularTarget {
            addr: a.cellular_addr,
            tls: match &a.cellular_ca {
                None => None,
                Some(ca) => Some(fleet::cellular::tls_client(ca, &a.cellular_server_name)?),
            },
            max_wait_s: a.cellular_wait,
        }),
    };
    println!(
        "fleet: {} LoRaWAN ({}% class C, {:?} mode), {} Sigfox, {} cellular, every {} s, seed {}; broker {}, bridge http://{}",
        a.lorawan, a.class_c, a.mode, a.sigfox, a.cellular, a.interval, a.seed, a.mqtt, a.http
    );
    let class_c: Vec<&str> = devices
        .iter()
        .filter(|d| d.radio == fleet::Radio::Lorawan(fleet::Class::C))
        .map(|d| d.id.as_str())
        .collect();
    println!("class C: {}", class_c.join(" "));
    let fleet = fleet::Fleet::new(
        devices,
        Targets {
            mqtt_host: host,
            mqtt_port: port,
            http: Some(a.http),
            sigfox_secret: a.sigfox_secret.clone(),
            application_id: a.application_id.clone(),
            topic_root: a.topic_root.clone(),
            rx_delay: Duration::from_millis(a.rx_delay_ms),
            cellular,
        },
    );
    let mut tasks = fleet.start(mode);
    if let Some(addr) = a.smsc_listen {
        let smsc = fleet::smsc::Smsc::start_on(addr, &a.smsc_system_id, &a.smsc_password)
            .await
            .with_context(|| format!("--smsc-listen {addr}"))?;
        println!(
            "test SMSC on smpp://{} (system_id {})",
            smsc.addr(),
            a.smsc_system_id
        );
        tasks.extend(fleet.start_sms(&smsc));
    }
    if let (Some(every), Some(token)) = (a.unlock_every, a.api_token.clone()) {
        let http = a.http;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every.max(1)));
            tick.tick().await;
            for (id, network) in ids.iter().cycle() {
                tick.tick().await;
                let path = format!("/v1/devices/{network}/{id}/commands");
                let body = json!({"command": "unlock", "args": {"auto_relock_s": 120}});
                match fleet::post(http, &path, &format!("Bearer {token}"), &body).await {
                    Ok((202, c)) => println!("unlock {network}/{id}: command {}", c["id"]),
                    Ok((status, e)) => println!("unlock {network}/{id}: refused {status}: {e}"),
                    Err(e) => println!("unlock {network}/{id}: {e}"),
                }
            }
        }));
    }
    let started = Instant::now();
    let mut report = tokio::time::interval(Duration::from_secs(a.report_every.max(1)));
    report.tick().await;
    let deadline = a.duration.map(|s| started + Duration::from_secs(s));
    loop {
        let stop = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        tokio::select! {
            _ = report.tick() => println!("{:>6.1} s  {}", started.elapsed().as_secs_f64(), fleet.stats().summary()),
            _ = stop => break,
        }
    }
    for t in &tasks {
        t.abort();
    }
    let stats = fleet.stats();
    println!(
        "done after {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        stats.summary()
    );
    let mut commands: Vec<_> = stats.commands.iter().collect();
    commands.sort_by_key(|(_, c)| c.first);
    for (id, c) in commands {
        match c.round_trip_s {
            Some(rt) => println!("command {id}: executed, round trip {rt:.2} s"),
            None => println!("command {id}: {}", c.state),
        }
    }
    Ok(())
}

/// Writes a file only its owner may read.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}
