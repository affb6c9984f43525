//! The newcomer's first command: `longproto-bridge demo` runs for a bounded time, with
//! nothing installed (an embedded broker, SQLite in a temporary directory), and its
//! commands reach `executed` on LoRaWAN class A, class C and Sigfox.
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
