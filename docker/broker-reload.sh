#!/bin/sh
# The compose broker: mosquitto, told to reload (SIGHUP) whenever the site's password file, ACL,
# certificate or key changes. `ctxscope collector enroll`, `revoke` and `renew-cert` on the host rewrite
# those files but cannot signal a broker inside a container: without this, a revoked device would keep
# its open connection until someone sent the HUP by hand.
#
#   broker-reload.sh [CONFIG_DIR]   (default /mosquitto/config; runs mosquitto -c CONFIG_DIR/mosquitto.conf)
#
# The files are compared every CTXSCOPE_BROKER_WATCH_S seconds (default 2) by inode, size and mtime: the
# site replaces each in one step (a new inode), so no change is missed and none is seen half written.
# SIGTERM/SIGINT stop mosquitto cleanly; if mosquitto exits, so does this script, with its status, and
# the container's restart policy brings both back.
set -u
dir=${1:-/mosquitto/config}
interval=${CTXSCOPE_BROKER_WATCH_S:-2}

fingerprint() {
  for name in passwd acl server.crt server.key; do
    stat -c '%n %i %s %Y' "$dir/$name" 2>/dev/null || echo "$dir/$name absent"
  done
}

mosquitto -c "$dir/mosquitto.conf" &
broker=$!
trap 'kill -TERM "$broker" 2>/dev/null' TERM INT
seen=$(fingerprint)
while kill -0 "$broker" 2>/dev/null; do
  sleep "$interval" &
  wait $! # returns at once on a signal, so a stop is not held up by the sleep
  now=$(fingerprint)
  if [ "$now" != "$seen" ]; then
    echo "broker-reload: the site's broker files changed; mosquitto told to reload (SIGHUP)" >&2
    kill -HUP "$broker" 2>/dev/null
    seen=$now
  fi
done
wait "$broker"
