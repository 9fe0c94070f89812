# Sourced by the CI scripts. listening_addr FILE: waits up to 5 s for a server's
# `listening on http://ADDR` line in FILE and prints ADDR (nothing if it never came).
listening_addr() {
    local addr=""
    for _ in $(seq 1 50); do
        addr=$(sed -n 's#^listening on http://##p' "$1")
        [ -n "$addr" ] && break
        sleep 0.1
    done
    printf '%s' "$addr"
}
