# fish completion for si; written by 'si completion show fish'.
function __si_complete
    set -l answer (env _SI_COMPLETE=fish_complete COMP_WORDS=(commandline -cp) \
        COMP_CWORD=(commandline -t) si 2>/dev/null)
    for i in (seq 1 3 (count $answer))
        set -l kind $answer[$i]
        set -l value $answer[(math $i + 1)]
        set -l help $answer[(math $i + 2)]
        switch $kind
            case file
                __fish_complete_path (commandline -t)
            case dir
                __fish_complete_directories (commandline -t)
            case plain
                if test "$help" = _
                    echo $value
                else
                    printf '%s\t%s\n' $value $help
                end
        end
    end
end
complete --no-files --command si --arguments '(__si_complete)'
