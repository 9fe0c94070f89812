# Sourced by the scripts here. free_port prints a TCP port free on 127.0.0.1 and below the
# kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768–60999 by default): a port in
# that range can be taken as a loader's source port between the pick and the servers' bind
# (then every server fails to bind).
free_port() {
  python3 - <<'PY'
import random, socket
low = int(open('/proc/sys/net/ipv4/ip_local_port_range').read().split()[0])
top = min(low, 32768)
for port in random.sample(range(max(1025, top - 10000), top), 200):
    s = socket.socket()
    try:
        s.bind(('127.0.0.1', port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
else:
    raise SystemExit('no free port below the ephemeral range')
PY
}
