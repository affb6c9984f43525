#!/usr/bin/env bash
# Runs every fuzz target of the project (device-node/fuzz and bridge/fuzz) for SECONDS
# each (default 5), starting from its committed corpus:
#   ./tools/fuzz.sh [--grow] [SECONDS] [TARGET...]
# The test command runs it briefly; a long run is e.g. `./tools/fuzz.sh --grow 600
# uplink_json`. New inputs go to a temporary directory, or with --grow into the committed
# corpus (then minimise it: `cargo fuzz cmin -s none TARGET` in the crate's folder). A
# crash stops the run, and its input is kept under <crate>/artifacts/.
# cargo-fuzz's flags need a nightly compiler; RUSTC_BOOTSTRAP=1 lets the stable one take
# them. Without a sanitizer (`-s none`): the code under test forbids unsafe, and a
# build without one is several times quicker.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
grow=false
if [ "${1:-}" = --grow ]; then grow=true; shift; fi
seconds=${1:-5}
shift || true
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
ran=0
for crate in device-node/fuzz bridge/fuzz; do
    targets=$(sed -nE 's/^name = "([a-z_]+)"$/\1/p' "$crate/Cargo.toml" | grep -v fuzz)
    for target in $targets; do
        if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$target"; then
            continue
        fi
        mkdir -p "$work/$target" "$crate/corpus/$target"
        corpus=$crate/corpus/$target
        if $grow; then into=corpus/$target; else into=$work/$target; fi
        (
            cd "$crate"
            cargo fuzz run -s none --target-dir "$root/target/fuzz" "$target" \
                "$into" "corpus/$target" -- \
                -max_total_time="$seconds" -print_final_stats=1 2>&1
        ) | tee "$work/$target.log" | grep -E '^(==|INFO: -max_total_time|.*panicked)' || true
        if ! grep -q 'Done [0-9]* runs' "$work/$target.log"; then
            tail -n 40 "$work/$target.log"
            echo "fuzz target $target failed (input kept under $crate/artifacts/$target/)"
            exit 1
        fi
        runs=$(sed -nE 's/.*Done ([0-9]+) runs.*/\1/p' "$work/$target.log" | tail -n 1)
        # libFuzzer's last status line: edges covered (cov), features (ft), corpus size
        cov=$(grep -E '^#[0-9]+' "$work/$target.log" | tail -n 1 | grep -oE 'cov: [0-9]+ ft: [0-9]+' || true)
        printf 'fuzz %-20s %10s runs in %ss  %s  corpus %s files\n' "$target" "$runs" "$seconds" \
            "${cov:-cov: ?}" "$(find "$corpus" -type f 2>/dev/null | wc -l)"
        ran=$((ran + 1))
    done
done
echo "fuzz: $ran targets ran without a failure"
