# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_longproto_bridge_global_optspecs
    string join \n c/config= h/help V/version
end

function __fish_longproto_bridge_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_longproto_bridge_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_longproto_bridge_using_subcommand
    set -l cmd (__fish_longproto_bridge_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -s V -l version -d 'Print version'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "check-config" -d 'Check the configuration: exit 0 when valid, 1 listing every problem'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "configfile" -d 'Print the fully commented default configuration'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "decode" -d 'Print the decoded JSON of one payload; exit 1 with the reason when it does not decode. fPort 20 with longproto-v1 decodes command frames (a downlink)'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "demo" -d 'Run the bridge with embedded defaults and a simulated fleet, for a first look: an embedded MQTT broker (unless -c names one), SQLite in a temporary directory, LoRaWAN class A and C vehicles and a Sigfox vehicle taking an unlock, a locate and a lock. Ctrl-C stops it'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "hash-token" -d 'Print the SHA-256 of an API token\'s secret, read from standard input (one line), as [operators.token] NAME = { secret_sha256 = "..." } wants it; the secret itself goes nowhere'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "encode-command" -d 'Print the hex of a command frame, from its JSON: the request body plus its counter, e.g. \'{"command":"unlock","args":{"auto_relock_s":30},"counter":42}\'. An array of them gives the frames one after another (a coalesced downlink)'
complete -c longproto-bridge -n "__fish_longproto_bridge_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand check-config" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand check-config" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand configfile" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand configfile" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand decode" -l codec -d 'longproto-v1, cayenne-lpp or raw' -r
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand decode" -l fport -d 'The LoRaWAN fPort; leave out for a Sigfox payload' -r
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand decode" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand decode" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand demo" -l duration-s -d 'Stop after this many seconds' -r
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand demo" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand demo" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand hash-token" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand hash-token" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand encode-command" -s c -l config -d 'Configuration file (TOML); repeat to merge several, later ones win. Then LONGPROTO__SECTION__KEY environment variables override single keys' -r -F
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand encode-command" -s h -l help -d 'Print help'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "check-config" -d 'Check the configuration: exit 0 when valid, 1 listing every problem'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "configfile" -d 'Print the fully commented default configuration'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "decode" -d 'Print the decoded JSON of one payload; exit 1 with the reason when it does not decode. fPort 20 with longproto-v1 decodes command frames (a downlink)'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "demo" -d 'Run the bridge with embedded defaults and a simulated fleet, for a first look: an embedded MQTT broker (unless -c names one), SQLite in a temporary directory, LoRaWAN class A and C vehicles and a Sigfox vehicle taking an unlock, a locate and a lock. Ctrl-C stops it'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "hash-token" -d 'Print the SHA-256 of an API token\'s secret, read from standard input (one line), as [operators.token] NAME = { secret_sha256 = "..." } wants it; the secret itself goes nowhere'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "encode-command" -d 'Print the hex of a command frame, from its JSON: the request body plus its counter, e.g. \'{"command":"unlock","args":{"auto_relock_s":30},"counter":42}\'. An array of them gives the frames one after another (a coalesced downlink)'
complete -c longproto-bridge -n "__fish_longproto_bridge_using_subcommand help; and not __fish_seen_subcommand_from check-config configfile decode demo hash-token encode-command help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
