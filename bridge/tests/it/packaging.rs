//! The man pages and shell completions in `deploy/`, generated from the clap
//! definitions of both binaries, and the `.deb` metadata that installs them.
//!
//! A stale file fails here with the command that writes it again:
//! `LONGPROTO_BLESS=1 cargo nextest run -p longproto-bridge packaging`.
use clap::CommandFactory;
use clap_complete::Shell;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The two programs: name, clap definition, and the crate whose `.deb` installs it.
fn programs() -> Vec<(&'static str, clap::Command, &'static str)> {
    vec![
        (
            "longproto-bridge",
            longproto_bridge::cli::Cli::command(),
            "bridge",
        ),
        (
            "longproto-fleet",
            longproto_fleet::cli::Args::command(),
            "device-node/fleet",
        ),
    ]
}

/// Every generated file: its path under `deploy/`, its text, and where the package puts it.
fn generated() -> Vec<(String, String, String, &'static str)> {
    let mut out = Vec::new();
    for (name, cmd, krate) in programs() {
        // the program's page and one per subcommand (`longproto-bridge-decode.1`, …),
        // which its SUBCOMMANDS section names
        let dir = tempfile::tempdir().unwrap();
        cmd.clone().build();
        clap_mangen::generate_to(cmd.clone(), dir.path()).expect("renders");
        let mut pages: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        pages.sort();
        for page in pages {
            out.push((
                format!("man/{page}"),
                std::fs::read_to_string(dir.path().join(&page)).expect("roff is text"),
                format!("usr/share/man/man1/{page}"),
                krate,
            ));
        }
        for (shell, file, installed) in [
            (
                Shell::Bash,
                format!("completions/{name}.bash"),
                format!("usr/share/bash-completion/completions/{name}"),
            ),
            (
                Shell::Zsh,
                format!("completions/_{name}"),
                format!("usr/share/zsh/vendor-completions/_{name}"),
            ),
            (
                Shell::Fish,
                format!("completions/{name}.fish"),
                format!("usr/share/fish/vendor_completions.d/{name}.fish"),
            ),
        ] {
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), name, &mut text);
            out.push((
                file,
                String::from_utf8(text).expect("completions are text"),
                installed,
                krate,
            ));
        }
    }
    out
}

#[test]
fn man_pages_and_completions_are_generated_from_the_command_lines() {
    let bless = std::env::var_os("LONGPROTO_BLESS").is_some();
    let mut stale = Vec::new();
    for (file, text, _, _) in generated() {
        let path = repo().join("deploy").join(&file);
        if bless {
            std::fs::write(&path, &text).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != text {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "deploy/{{{}}} differ from what the command lines generate; write them again with \
         LONGPROTO_BLESS=1 cargo nextest run -p longproto-bridge packaging",
        stale.join(", ")
    );
    // the pages name every subcommand and option a user can type
    let bridge = std::fs::read_to_string(repo().join("deploy/man/longproto-bridge.1")).unwrap();
    for word in [
        "check\\-config",
        "encode\\-command",
        "\\-\\-config",
        "decode",
    ] {
        assert!(bridge.contains(word), "longproto-bridge.1 lacks {word}");
    }
    let fleet = std::fs::read_to_string(repo().join("deploy/man/longproto-fleet.1")).unwrap();
    for word in [
        "\\-\\-smsc\\-listen",
        "\\-\\-cellular",
        "\\-\\-unlock\\-every",
    ] {
        assert!(fleet.contains(word), "longproto-fleet.1 lacks {word}");
    }
}

#[test]
fn each_package_installs_its_man_page_and_completions() {
    for (file, _, installed, krate) in generated() {
        let manifest = repo().join(krate).join("Cargo.toml");
        let doc: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        let assets = doc["package"]["metadata"]["deb"]["assets"]
            .as_array()
            .unwrap_or_else(|| {
                panic!(
                    "{} has no [package.metadata.deb] assets",
                    manifest.display()
                )
            });
        // cargo-deb's asset paths are relative to the crate's directory
        let from_crate = repo().join("deploy").join(&file);
        let listed = assets.iter().any(|a| {
            let a = a.as_array().expect("an asset is [source, target, mode]");
            let source = repo().join(krate).join(a[0].as_str().unwrap());
            source.canonicalize().ok() == from_crate.canonicalize().ok()
                && a[1].as_str() == Some(installed.as_str())
                && a[2].as_str() == Some("644")
        });
        assert!(
            listed,
            "{}: [package.metadata.deb] assets lack [\"…/deploy/{file}\", \"{installed}\", \"644\"]",
            manifest.display()
        );
    }
}

#[test]
fn every_packaged_file_exists() {
    for krate in ["bridge", "device-node/fleet"] {
        let manifest = repo().join(krate).join("Cargo.toml");
        let doc: toml::Table = std::fs::read_to_string(&manifest).unwrap().parse().unwrap();
        for a in doc["package"]["metadata"]["deb"]["assets"]
            .as_array()
            .unwrap()
        {
            let source = a[0].as_str().unwrap();
            if source.starts_with("target/") {
                continue; // built by cargo deb
            }
            assert!(
                repo().join(krate).join(source).is_file(),
                "{}: the asset {source} does not exist",
                manifest.display()
            );
        }
    }
}
