#!/usr/bin/env bash
# longproto's one test command, for a newcomer and for CI alike:
#   ./tools/test.sh
# It installs what the tests need when it is missing (mosquitto, PostgreSQL and promtool
# from apt, the
# thumbv6m-none-eabi target, clippy and rustfmt, elf2uf2-rs, defmt-print, cargo-nextest
# and cargo-fuzz, rp2040js from npm; Node.js from apt if the machine has none), then runs
# every check.
# protoc needs no install: tools/protoc finds one (see .cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

# A fresh checkout gains nothing from incremental compilation, which would add a few GB
# of caches to the target directory.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

# A cold run builds about 6.5 GB of artifacts; a full disk would otherwise surface as
# "No space left on device" from deep inside a compiler.
need_gb=7
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_gb=$(df -Pk "$target_dir" | awk 'NR == 2 { printf "%d", $4 / 1048576 }')
if [ "${free_gb:-0}" -lt "$need_gb" ]; then
    printf 'warning: %s GB free for %s; a run from a clean target directory needs about %s GB\n' \
        "$free_gb" "$target_dir" "$need_gb" >&2
fi

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

apt_missing=()
[ -x /usr/sbin/mosquitto ] || command -v mosquitto >/dev/null 2>&1 || apt_missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || apt_missing+=(mosquitto-clients)
command -v node >/dev/null 2>&1 || apt_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_missing+=(npm)
python3 -c 'import cryptography' 2>/dev/null || apt_missing+=(python3-cryptography)
command -v promtool >/dev/null 2>&1 || apt_missing+=(prometheus)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_missing+=(postgresql)
if [ ${#apt_missing[@]} -gt 0 ]; then
    step "installing ${apt_missing[*]} (apt)"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_missing[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx thumbv6m-none-eabi; then
    step "adding the thumbv6m-none-eabi target"
    rustup target add thumbv6m-none-eabi
fi
for component in clippy rustfmt; do
    rustup component list --installed | grep -q "^$component" || rustup component add "$component"
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the service as packaged (no demo feature): it builds, and links no broker or simulator"
cargo clippy -p longproto-bridge --no-default-features --lib --bins --locked -- -D warnings
linked=$(cargo tree -p longproto-bridge --no-default-features -e normal --locked --prefix none |
    grep -E '^(rumqttd|lorawan|tempfile|longproto-fleet) ' || true)
if [ -n "$linked" ]; then
    echo "the service links what only the demo needs:"; echo "$linked"; exit 1
fi

step "firmware: device-node/rp2040 in release, its UF2, and its size budget"
command -v elf2uf2-rs >/dev/null 2>&1 || cargo install --locked elf2uf2-rs --no-default-features
firmware=target/thumbv6m-none-eabi/release/longproto-node-rp2040
(
    cd device-node/rp2040
    cargo fmt -- --check
    # first the deliberately broken variant the emulator test must catch, kept beside
    # the real one under its own name; then the firmware users flash
    CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --locked --features broken-wait-dio0-only
    cp "$OLDPWD/$firmware" "$OLDPWD/$firmware-dio0-only"
    CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release --locked
)
elf2uf2-rs "$firmware-dio0-only" "$firmware-dio0-only.uf2"
elf2uf2-rs "$firmware" "$firmware.uf2"
echo "UF2: $firmware.uf2 ($(wc -c <"$firmware.uf2") bytes)"
python3 tools/firmware_size.py "$firmware" --flash-max $((128 * 1024)) --ram-max $((16 * 1024))

step "emulator: rp2040js (npm) and defmt-print for the firmware-in-the-loop test"
(cd device-node/rp2040/emulator && npm ci --no-audit --no-fund --loglevel=error)
command -v defmt-print >/dev/null 2>&1 || cargo install --locked defmt-print

step "host tests, with a PostgreSQL of their own (tools/postgres.sh: a temporary cluster on a free port)"
log=$(mktemp)
unit_dir=$(mktemp -d)
pg_dir=$(mktemp -d)
cleanup() {
    ./tools/postgres.sh stop "$pg_dir" || true
    rm -rf "$log" "$unit_dir" "$pg_dir" "${demo_out:-}"
}
trap cleanup EXIT
LONGPROTO_TEST_POSTGRES=$(./tools/postgres.sh start "$pg_dir" | tail -n 1)
export LONGPROTO_TEST_POSTGRES
echo "PostgreSQL: $LONGPROTO_TEST_POSTGRES"
if ! cargo nextest --version >/dev/null 2>&1; then
    step "installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log"
summary=$(grep -E 'tests run: ' "$log" | tail -n 1)
passed=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$summary")
failed=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$summary")

step "fuzz: every fuzz target for a few seconds from its committed corpus (tools/fuzz.sh)"
./tools/fuzz.sh 6

step "README: the run command exactly as written reaches executed on every network, then stops on Ctrl-C"
# the first `cargo run` line of the README's shell blocks, run letter for letter, so that
# an edit that breaks a newcomer's first command fails here; once every network has a
# command executed it gets the SIGINT a Ctrl-C sends, and must stop cleanly
run_line=$(grep -m1 -E '^cargo run ' README.md | sed -E 's/[[:space:]]+#.*$//')
if [ -z "$run_line" ]; then
    echo "README.md has no line starting with 'cargo run '"; exit 1
fi
echo "\$ $run_line"
demo_out=$(mktemp)
setsid bash -c "exec $run_line" >"$demo_out" 2>&1 &
demo_pid=$!
demo_devices=(lorawan/70b3d57ed0000a01 lorawan/70b3d57ed0000c01 sigfox/0051f0a1 cellular/ce11000000000c01 cellular/ce11000000000c02)
demo_done() {
    for device in "${demo_devices[@]}"; do
        grep -qE "command +$device:.* executed after " "$demo_out" || return 1
    done
}
demo_deadline=$((SECONDS + 900)) # a first build included
until demo_done || [ $SECONDS -ge $demo_deadline ] || ! kill -0 "$demo_pid" 2>/dev/null; do
    sleep 1
done
kill -INT -- "-$demo_pid" 2>/dev/null || true
demo_rc=0
wait "$demo_pid" || demo_rc=$?
if ! demo_done; then
    cat "$demo_out"; echo "the README's run command took no command to executed on every network"; exit 1
fi
if [ "$demo_rc" -ne 0 ]; then
    cat "$demo_out"; echo "the README's run command did not stop cleanly on Ctrl-C (exit $demo_rc)"; exit 1
fi
echo "executed on LoRaWAN class A, class C, Sigfox, cellular, and by SMS for the car without a data session"

step "test vectors agree with the reference encoders (tools/wire_vectors.py, tools/lorawan_vectors.py)"
python3 tools/wire_vectors.py --check
# the LoRaWAN reference needs AES and AES-CMAC from the `cryptography` package
py=python3
if ! $py -c 'import cryptography' 2>/dev/null; then
    if /usr/bin/python3 -c 'import cryptography' 2>/dev/null; then
        py=/usr/bin/python3
    else
        python3 -m pip install --quiet cryptography
    fi
fi
$py tools/lorawan_vectors.py --check

step "deploy: the example configuration is valid and is what 'configfile' prints"
# the binary the host tests built; a plain `cargo build` here would compile the
# dependencies a second time, with the feature set of a non-test build
bridge=target/debug/longproto-bridge
[ -x "$bridge" ] || cargo build -p longproto-bridge --locked
"$bridge" check-config -c deploy/longproto-bridge.toml
diff -u deploy/longproto-bridge.toml <("$bridge" configfile)

step "deploy: the Prometheus alert rules load and fire as their unit tests say (promtool)"
# (that the rules and the Grafana dashboard name only exported metrics is a host test:
# bridge/tests/it/observability.rs)
(cd deploy/prometheus && promtool check rules longproto-alerts.yml && promtool test rules longproto-alerts.test.yml)

step "deploy: systemd-analyze verify (silent) and security (exposure <= 2.0)"
if ! command -v systemd-analyze >/dev/null 2>&1; then
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null
fi
sed "s#/usr/bin/longproto-bridge#$PWD/$bridge#" deploy/longproto-bridge.service > "$unit_dir/longproto-bridge.service"
verify=$(systemd-analyze verify "$unit_dir/longproto-bridge.service" 2>&1)
if [ -n "$verify" ]; then
    echo "systemd-analyze verify is not silent:"; echo "$verify"; exit 1
fi
exposure=$(systemd-analyze security --offline=true "$unit_dir/longproto-bridge.service" | sed -nE 's/.*Overall exposure level for [^:]*: ([0-9.]+).*/\1/p')
echo "exposure: ${exposure:-unknown}"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e + 0 <= 2.0) }' || { echo "exposure ${exposure:-unknown} is over 2.0"; exit 1; }

step "device-node for thumbv6m-none-eabi (no_std, no alloc)"
cargo build -p device-node --target thumbv6m-none-eabi --release --locked

step "all checks passed"
echo "host tests: ${passed:-0} passed, ${failed:-0} failed"
