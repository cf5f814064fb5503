#!/bin/sh
# aptship host setup: channel @CHANNEL@ of @URL@
# Run as root.  Safe to run again: every file is rewritten whole.
#   sh setup.sh             put this host (or $APTSHIP_ROOT) on the channel
#   sh setup.sh --remove    take it off the channel again
# Environment (all optional):
#   APTSHIP_ROOT       target root, e.g. an image being built (default: this host)
#   APTSHIP_ROOT_MODE  chroot (default): paths inside the files are as seen from
#                      inside the root; prefix: apt runs outside the root with its
#                      Dir settings pointing into it, so paths keep the root prefix
#   APTSHIP_FOLLOW=1   also install the converge agent (a systemd timer with jitter)
#   APTSHIP_ALLOW_DOWNGRADES=0  do not let `apt-get install -y` follow a pin down
#   APTSHIP_HOST_ID    this host's id in fleet reports (default: /etc/machine-id)
# What it writes is described in docs/hosts.md.
set -eu
root="${APTSHIP_ROOT:-}"
case "${APTSHIP_ROOT_MODE:-chroot}" in
    chroot) inside="" ;;
    prefix) inside="$root" ;;
    *) echo "aptship: APTSHIP_ROOT_MODE must be 'chroot' or 'prefix'" >&2; exit 2 ;;
esac
channel='@CHANNEL@'
url='@URL@'
pins_list='@PINS_LIST@'
umask 022
@SELECT_SUITE@

# put MODE FILE: write stdin to FILE with MODE, atomically.
put() {
    mkdir -p "$(dirname "$2")"
    tmp="$2.aptship-tmp.$$"
    (umask 077 && cat >"$tmp")
    chmod "$1" "$tmp"
    mv -f "$tmp" "$2"
}

remove_host_files() {
    rm -f "$root/etc/apt/keyrings/aptship.asc" "$root/etc/apt/auth.conf.d/aptship.conf" \
        "$root/etc/apt/apt.conf.d/50aptship" "$root/usr/local/sbin/aptship-report" \
        "$root/usr/local/sbin/aptship-follow" \
        "$root/etc/systemd/system/timers.target.wants/aptship-follow.timer" \
        "$root/etc/systemd/system/aptship-follow.timer" \
        "$root/etc/systemd/system/aptship-follow.service"
    rmdir "$root/etc/aptship/channels" 2>/dev/null || true
}

if [ "${1:-}" = "--remove" ]; then
    rm -f "$root/etc/apt/sources.list.d/aptship-$channel.list" \
        "$root/etc/apt/preferences.d/aptship-$channel.pref" \
        "$root/etc/aptship/channels/$channel"
    if [ -z "$(ls -A "$root/etc/aptship/channels" 2>/dev/null)" ]; then
        remove_host_files
    fi
    echo "aptship: removed channel $channel of $url; now run: apt-get update"
    exit 0
elif [ -n "${1:-}" ]; then
    echo "aptship: unknown argument '$1' (use --remove, or nothing)" >&2
    exit 2
fi

put 644 "$root/etc/apt/keyrings/aptship.asc" <<'@END@'
@KEY@@END@

# The channel, with its pins index enabled (Acquire::IndexTargets below).
printf 'deb [signed-by=%s/etc/apt/keyrings/aptship.asc target+=AptshipPins] %s %s main\n' \
    "$inside" "$url" "$channel" | put 644 "$root/etc/apt/sources.list.d/aptship-$channel.list"

printf 'machine %s login token password %s\n' '@MACHINE@' '@TOKEN@' \
    | put 600 "$root/etc/apt/auth.conf.d/aptship.conf"

# apt keeps the verified pins in its lists directory; this link makes them effective.
mkdir -p "$root/etc/apt/preferences.d"
ln -sfn "../../../var/lib/apt/lists/$pins_list" \
    "$root/etc/apt/preferences.d/aptship-$channel.pref"

printf 'channel=%s\nurl=%s\npins=%s/var/lib/apt/lists/%s\n' \
    "$channel" "$url" "$inside" "$pins_list" | put 644 "$root/etc/aptship/channels/$channel"

if [ ! -s "$root/etc/aptship/host-id" ] || [ -n "${APTSHIP_HOST_ID:-}" ]; then
    id="${APTSHIP_HOST_ID:-}"
    if [ -z "$id" ] && [ -r "$root/etc/machine-id" ]; then
        id=$(tr -cd '0-9a-f' <"$root/etc/machine-id")
        [ ${#id} -eq 32 ] || id=""
    fi
    if [ -z "$id" ]; then
        id=$(od -An -N16 -tx1 /dev/urandom | tr -cd '0-9a-f')
    fi
    case "$id" in
        *[!a-z0-9._-]* | [!a-z0-9]*) echo "aptship: invalid host id '$id'" >&2; exit 2 ;;
    esac
    printf '%s\n' "$id" | put 644 "$root/etc/aptship/host-id"
fi

downgrades=""
if [ "${APTSHIP_ALLOW_DOWNGRADES:-1}" != 0 ]; then
    # Pin-Priority 1001 may point below what is installed (a rollback).  apt has no
    # per-package switch; only packages with such a pin are ever candidates for a
    # downgrade, so this lets `apt-get install -y svc` follow the channel's pins.
    downgrades='APT::Get::Allow-Downgrades "true";'
fi
put 644 "$root/etc/apt/apt.conf.d/50aptship" <<EOF
// aptship (docs/hosts.md): the channel's pins as a signed index, fleet reports.
Acquire::IndexTargets::deb::AptshipPins {
    MetaKey "\$(COMPONENT)/pins";
    ShortDescription "pins";
    Description "\$(RELEASE)/\$(COMPONENT) aptship pins";
    DefaultEnabled "false";
    KeepCompressed "false";
};
$downgrades
DPkg::Post-Invoke { "if [ -x $inside/usr/local/sbin/aptship-report ]; then $inside/usr/local/sbin/aptship-report || true; fi"; };
APT::Update::Post-Invoke-Success { "if [ -x $inside/usr/local/sbin/aptship-report ]; then $inside/usr/local/sbin/aptship-report --updated || true; fi"; };
EOF

{
    printf '#!/bin/sh\n'
    printf "# aptship-report: tell each aptship channel's server what this host runs.\n"
    printf '# apt runs it after every dpkg run and every successful update; it never fails them.\n'
    printf "prefix='%s'\n" "$inside"
    cat <<'@END@'
state="$prefix/var/lib/aptship"
if [ "${1:-}" = "--updated" ]; then
    mkdir -p "$state" && date -u +%Y-%m-%dT%H:%M:%SZ >"$state/last-update"
fi
id=$(cat "$prefix/etc/aptship/host-id" 2>/dev/null) || exit 0
secret=$(sed -n 's/^machine .* login token password \([A-Za-z0-9_-]*\)$/\1/p' \
    "$prefix/etc/apt/auth.conf.d/aptship.conf" 2>/dev/null | head -n 1)
[ -n "$secret" ] || exit 0
if [ -r "$prefix/etc/hostname" ]; then name=$(cat "$prefix/etc/hostname"); else name=$(uname -n); fi
name=$(printf '%s' "$name" | tr -cd 'A-Za-z0-9.-' | cut -c 1-253)
updated=$(cat "$state/last-update" 2>/dev/null | tr -cd '0-9TZ:-')
for conf in "$prefix"/etc/aptship/channels/*; do
    [ -f "$conf" ] || continue
    channel="" url="" pins=""
    . "$conf"
    [ -r "$pins" ] || continue
    packages="" sep=""
    for p in $(sed -n 's/^Package: *\([a-z0-9][a-z0-9+.-]*\) *$/\1/p' "$pins" | sort -u); do
        v=$(dpkg-query --admindir="$prefix/var/lib/dpkg" -W -f '${db:Status-Status} ${Version}' \
            "$p" 2>/dev/null | sed -n 's/^installed \([A-Za-z0-9.+~:-]*\)$/\1/p')
        if [ -n "$v" ]; then v="\"$v\""; else v=null; fi
        packages="$packages$sep\"$p\":$v"
        sep=","
    done
    body="{\"hostname\":\"$name\",\"packages\":{$packages}"
    [ -z "$updated" ] || body="$body,\"apt_update\":\"$updated\""
    body="$body}"
    target="$url/api/v1/channels/$channel/hosts/$id"
    if command -v curl >/dev/null 2>&1; then
        # --retry: a 429 is retried once, after the server's Retry-After
        printf 'user = "token:%s"\n' "$secret" | curl -fsS -K - --max-time 10 \
            --retry 1 --retry-max-time 15 -X PUT \
            -H 'Content-Type: application/json' --data-binary "$body" "$target" >/dev/null 2>&1 \
            || echo "aptship-report: $channel: report not accepted" >&2
    elif command -v python3 >/dev/null 2>&1; then
        if ! APTSHIP_SECRET="$secret" python3 - "$target" "$body" <<'PY'
import base64, os, sys, time, urllib.error, urllib.request
auth = base64.b64encode(("token:" + os.environ["APTSHIP_SECRET"]).encode()).decode()
req = urllib.request.Request(sys.argv[1], data=sys.argv[2].encode(), method="PUT",
    headers={"Content-Type": "application/json", "Authorization": "Basic " + auth})
try:
    urllib.request.urlopen(req, timeout=10).close()
except urllib.error.HTTPError as err:
    if err.code != 429:
        raise
    wait = err.headers.get("Retry-After", "2")
    time.sleep(min(int(wait) if wait.isdigit() else 2, 15))
    urllib.request.urlopen(req, timeout=10).close()
PY
        then
            echo "aptship-report: $channel: report not accepted" >&2
        fi
    else
        echo "aptship-report: needs curl or python3 to report" >&2
    fi
done
exit 0
@END@
} | put 755 "$root/usr/local/sbin/aptship-report"

{
    printf '#!/bin/sh\n'
    printf "# aptship-follow: converge this host to its aptship channels' pins, up or down.\n"
    printf '# Run by the aptship-follow timer, by cron, or by hand (as root).\n'
    printf "prefix='%s'\n" "$inside"
    cat <<'@END@'
set -eu
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
want=""
for conf in "$prefix"/etc/aptship/channels/*; do
    [ -f "$conf" ] || continue
    channel="" url="" pins=""
    . "$conf"
    [ -r "$pins" ] || continue
    for pair in $(awk '/^Package: /{p=$2} /^Pin: version /{print p "=" $3}' "$pins"); do
        p=${pair%%=*}
        have=$(dpkg-query --admindir="$prefix/var/lib/dpkg" -W -f '${db:Status-Status} ${Version}' \
            "$p" 2>/dev/null | sed -n 's/^installed //p')
        if [ -n "$have" ] && [ "$have" != "${pair#*=}" ]; then want="$want $pair"; fi
    done
done
if [ -n "$want" ]; then
    echo "aptship-follow: installing$want"
    # shellcheck disable=SC2086 # one word per package=version
    apt-get install -y -q --allow-downgrades --no-install-recommends $want
else
    echo "aptship-follow: every pinned package is on its pin"
fi
@END@
} | put 755 "$root/usr/local/sbin/aptship-follow"

if [ "${APTSHIP_FOLLOW:-0}" = 1 ]; then
    put 644 "$root/etc/systemd/system/aptship-follow.service" <<EOF
[Unit]
Description=aptship: converge to the channel pins
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
ExecStart=$inside/usr/local/sbin/aptship-follow
EOF
    put 644 "$root/etc/systemd/system/aptship-follow.timer" <<'EOF'
[Unit]
Description=aptship: converge to the channel pins every 15 minutes, with jitter

[Timer]
OnBootSec=5min
OnUnitActiveSec=15min
RandomizedDelaySec=10min
Persistent=true

[Install]
WantedBy=timers.target
EOF
    mkdir -p "$root/etc/systemd/system/timers.target.wants"
    ln -sfn ../aptship-follow.timer "$root/etc/systemd/system/timers.target.wants/aptship-follow.timer"
    if [ -z "$root" ] && [ -d /run/systemd/system ]; then
        systemctl daemon-reload && systemctl start aptship-follow.timer
    fi
fi

echo "aptship: configured channel $channel of $url; now run: apt-get update"
