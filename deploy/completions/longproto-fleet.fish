complete -c longproto-fleet -l mode -d 'LoRaWAN path: `integration` needs only the broker; `gateway` needs a ChirpStack' -r -f -a "integration\t'LoRaWAN devices behind a ChirpStack double on ChirpStack\'s MQTT integration'
gateway\t'LoRaWAN radio frames through a simulated gateway, for a real ChirpStack'"
complete -c longproto-fleet -l mqtt -d 'The MQTT broker the bridge (and ChirpStack) use' -r
complete -c longproto-fleet -l http -d 'The bridge\'s HTTP server (Sigfox callbacks, and commands with --unlock-every)' -r
complete -c longproto-fleet -l sigfox-secret -d 'The bridge\'s Sigfox callback secret' -r
complete -c longproto-fleet -l application-id -d 'The ChirpStack application id in event topics' -r
complete -c longproto-fleet -l topic-root -d 'The bridge\'s topic root' -r
complete -c longproto-fleet -l lorawan -d 'LoRaWAN devices' -r
complete -c longproto-fleet -l class-c -d 'Share of the LoRaWAN devices that are class C, percent' -r
complete -c longproto-fleet -l sigfox -d 'Sigfox devices' -r
complete -c longproto-fleet -l cellular -d 'Cellular devices: each a long poll on the bridge\'s cellular listener' -r
complete -c longproto-fleet -l cellular-addr -d 'The bridge\'s cellular listener' -r
complete -c longproto-fleet -l cellular-wait -d 'The longest wait a cellular device asks for, seconds' -r
complete -c longproto-fleet -l cellular-ca -d 'Speak TLS to the cellular listener, trusting this CA certificate (PEM)' -r -F
complete -c longproto-fleet -l cellular-server-name -d 'The name in the listener\'s certificate' -r
complete -c longproto-fleet -l cellular-keys-out -d 'Write the cellular devices\' keys here (mode 600), as the bridge\'s `[cellular] keys_file` reads them, and go on' -r -F
complete -c longproto-fleet -l smsc-listen -d 'Start a test SMSC listening here (SMPP 3.4): every cellular vehicle gets a number and takes SMS through it. Point the bridge\'s `[sms] server` at smpp://this' -r
complete -c longproto-fleet -l smsc-system-id -d 'The test SMSC\'s account: system_id' -r
complete -c longproto-fleet -l smsc-password -d 'The test SMSC\'s account: password' -r
complete -c longproto-fleet -l no-data-percent -d 'Share of the cellular vehicles whose data session is down (they never poll; SMS only), percent; needs --smsc-listen' -r
complete -c longproto-fleet -l interval -d 'Normal reporting interval in seconds (a fifth of it while active after an unlock)' -r
complete -c longproto-fleet -l seed -d 'Seed for the fleet\'s make-up (positions, charge, class mix)' -r
complete -c longproto-fleet -l rx-delay-ms -d 'From an uplink to its receive window (ms)' -r
complete -c longproto-fleet -l duration -d 'Stop after this many seconds (default: run until Ctrl-C)' -r
complete -c longproto-fleet -l report-every -d 'Print a summary line this often (seconds)' -r
complete -c longproto-fleet -l unlock-every -d 'Ask the bridge for an `unlock` of the next device this often (seconds); needs --api-token' -r
complete -c longproto-fleet -l api-token -d 'A bearer token of the bridge\'s API' -r
complete -c longproto-fleet -l region-prefix -d 'Gateway mode: ChirpStack\'s region topic prefix' -r
complete -c longproto-fleet -l gateway-id -d 'Gateway mode: the gateway id' -r
complete -c longproto-fleet -l join-eui -d 'Gateway mode: the devices\' JoinEUI' -r
complete -c longproto-fleet -s h -l help -d 'Print help (see more with \'--help\')'
complete -c longproto-fleet -s V -l version -d 'Print version'
