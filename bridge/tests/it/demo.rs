//! The newcomer's first command: `longproto-bridge demo` runs for a bounded time, with
//! nothing installed (an embedded broker, SQLite in a temporary directory), and its
//! commands reach `executed` on LoRaWAN class A, class C, Sigfox, cellular, and SMS for
//! the car without a data session.
use std::process::Command;

#[test]
fn the_demo_takes_commands_to_executed_on_every_network() {
    let out = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .args(["demo", "--duration-s", "26"])
        .env_remove("RUST_LOG")
        .output()
        .expect("the demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("mosquitto_sub -p "),
        "it prints the lines to play along:\n{stdout}"
    );
    for device in [
        "lorawan/70b3d57ed0000a01",
        "lorawan/70b3d57ed0000c01",
        "sigfox/0051f0a1",
        "cellular/ce11000000000c01",
        "cellular/ce11000000000c02",
    ] {
        let executed = stdout
            .lines()
            .any(|l| l.contains(&format!("command   {device}:")) && l.contains(" executed after "));
        assert!(
            executed,
            "no command reached executed on {device}:\n{stdout}\n{stderr}"
        );
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("command   cellular/ce11000000000c02:")
                && l.contains("(by SMS, message ")),
        "the car without a data session got its unlock by SMS:\n{stdout}"
    );
    assert!(
        stdout.contains("telemetry lorawan/70b3d57ed0000a01: unlocked"),
        "the unlock shows in the telemetry:\n{stdout}"
    );
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("WARN"),
        "the demo logged problems:\n{stderr}"
    );
}

#[test]
fn on_a_terminal_the_demo_redraws_a_live_view() {
    // `script` runs the demo under a real pseudo-terminal
    let command = format!(
        "{} demo --duration-s 16",
        env!("CARGO_BIN_EXE_longproto-bridge")
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .expect("script runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exit {:?}\n{screen}", out.status);
    let frames = screen.matches("\x1b[H\x1b[2J").count();
    assert!(frames >= 10, "{frames} redraws in 16 s");
    let last = screen.rsplit("\x1b[H\x1b[2J").next().unwrap();
    assert!(
        last.contains("device") && last.contains("lorawan/70b3d57ed0000c01"),
        "the fleet table:\n{last}"
    );
    let row = last
        .lines()
        .find(|l| l.contains("lorawan/70b3d57ed0000c01") && l.contains("locate"))
        .unwrap_or_else(|| panic!("no locate row:\n{last}"));
    assert!(
        row.contains("executed"),
        "the class C locate reached executed on screen:\n{last}"
    );
}

#[test]
fn ctrl_c_ends_the_demo_cleanly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_longproto-bridge"))
        .args(["demo"])
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the demo runs");
    std::thread::sleep(std::time::Duration::from_secs(5));
    let _ = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the demo did not stop within 15 s of Ctrl-C"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        status.success(),
        "exit {status:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.trim_end().ends_with("stopping"), "{stdout}");
}
