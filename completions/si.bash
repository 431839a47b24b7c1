# bash completion for si; written by 'si completion show bash'.
_si_complete() {
    local IFS=$'\n' line kind
    local -a answer
    COMPREPLY=()
    answer=($(COMP_WORDS="${COMP_WORDS[*]}" COMP_CWORD="$COMP_CWORD" \
        _SI_COMPLETE=bash_complete "$1" 2>/dev/null))
    for line in "${answer[@]}"; do
        kind=${line%%,*}
        case $kind in
            file) compopt -o default; COMPREPLY=(); return 0 ;;
            dir) compopt -o dirnames; COMPREPLY=(); return 0 ;;
            plain) COMPREPLY+=("${line#*,}") ;;
        esac
    done
    return 0
}
complete -o nosort -F _si_complete si 2>/dev/null || complete -F _si_complete si
