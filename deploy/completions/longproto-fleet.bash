_longproto__fleet() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="longproto__fleet"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        longproto__fleet)
            opts="-h -V --mode --mqtt --http --sigfox-secret --application-id --topic-root --lorawan --class-c --sigfox --cellular --cellular-addr --cellular-wait --cellular-ca --cellular-server-name --cellular-keys-out --smsc-listen --smsc-system-id --smsc-password --no-data-percent --interval --seed --rx-delay-ms --duration --report-every --unlock-every --api-token --region-prefix --gateway-id --join-eui --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --mode)
                    COMPREPLY=($(compgen -W "integration gateway" -- "${cur}"))
                    return 0
                    ;;
                --mqtt)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sigfox-secret)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --application-id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --topic-root)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --lorawan)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --class-c)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --sigfox)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular-addr)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular-wait)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular-ca)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular-server-name)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cellular-keys-out)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --smsc-listen)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --smsc-system-id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --smsc-password)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --no-data-percent)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --interval)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --seed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --rx-delay-ms)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --duration)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --report-every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --unlock-every)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --api-token)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --region-prefix)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --gateway-id)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --join-eui)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _longproto__fleet -o nosort -o bashdefault -o default longproto-fleet
else
    complete -F _longproto__fleet -o bashdefault -o default longproto-fleet
fi
