#!/usr/bin/env bash
# Prepare this host for rootless Podman: packages, the engine's unprivileged user, its runtime dir and config.
# Idempotent, and quick when nothing is missing (it checks before it does anything).
# Usage: scripts/setup-host.sh [user]        (default user: squall)
set -euo pipefail

user="${1:-squall}"
# chromium + chromium-driver: the console's browser tests (tests/e2e/test_console_browser.py) drive the system's
# browser through its matching driver, so nothing is downloaded at test time.
packages=(podman runc uidmap slirp4netns fuse-overlayfs debootstrap chromium chromium-driver)
# useradd, usermod and runuser live in sbin, which a non-login PATH may lack.
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

say() { printf 'setup-host: %s\n' "$*"; }
die() {
    printf 'setup-host: %s\n' "$*" >&2
    exit 1
}

# The user's Podman configuration. There is no systemd user session (no journald, no systemd cgroup manager), and
# crun refuses cgroups v1 hybrid hosts while runc works everywhere. vfs copies a whole image per container
# (~4.5 s a start); native rootless overlay starts in ~0.2 s, and must be configured before first use.
containers_conf='# Written by scripts/setup-host.sh (Squall): no systemd session, and crun fails on cgroups v1 hybrid.
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
'
storage_conf='# Written by scripts/setup-host.sh (Squall): vfs copies the whole image for every container.
[storage]
driver = "overlay"
'

missing_packages() {
    local status
    status="$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${packages[@]}" 2>/dev/null || true)"
    local p
    for p in "${packages[@]}"; do
        grep -qE "^${p} ii" <<<"$status" || echo "$p"
    done
}

has_subids() { grep -qE "^(${user}|${uid}):" "$1" 2>/dev/null; }

# Lowest start above every range already handed out in /etc/subuid and /etc/subgid.
next_subid_start() {
    awk -F: 'BEGIN { m = 100000 } NF >= 3 { e = $2 + $3; if (e > m) m = e } END { print m }' \
        /etc/subuid /etc/subgid 2>/dev/null
}

file_is() { [[ -f "$1" ]] && [[ "$(cat "$1")"$'\n' == "$2" ]]; }

owned_dir_is() { # path uid mode
    [[ -d "$1" ]] && [[ "$(stat -c '%u %a' "$1")" == "$2 $3" ]]
}

# Run a command as the engine user, with a clean environment built from known values. The working directory
# must be one the user can read: root's own may be 0700.
as_user() {
    (cd / && runuser -u "$user" -- env -i PATH="$PATH" HOME="$home" USER="$user" LOGNAME="$user" \
        XDG_RUNTIME_DIR="$rundir" LANG=C.UTF-8 "$@")
}

resolve_user() {
    uid="" home="" rundir=""
    if entry="$(getent passwd "$user")"; then
        uid="$(cut -d: -f3 <<<"$entry")"
        gid="$(cut -d: -f4 <<<"$entry")"
        home="$(cut -d: -f6 <<<"$entry")"
        rundir="/run/user/$uid"
    fi
}

# What is not there yet, one word per missing piece (empty when the host is ready).
missing_pieces() {
    local p
    for p in $(missing_packages); do echo "package:$p"; done
    if [[ -z "$uid" ]]; then
        echo "user:$user"
        return
    fi
    has_subids /etc/subuid || echo "subuid"
    has_subids /etc/subgid || echo "subgid"
    owned_dir_is "$rundir" "$uid" 700 || echo "runtime-dir"
    file_is "$home/.config/containers/containers.conf" "$containers_conf" || echo "containers.conf"
    file_is "$home/.config/containers/storage.conf" "$storage_conf" || echo "storage.conf"
    [[ -d "$home/.local/share/containers/storage/vfs" ]] && echo "vfs-storage"
    return 0
}

install_packages() {
    local missing
    missing="$(missing_packages)"
    [[ -z "$missing" ]] && return
    say "installing packages: $(echo $missing)"
    export DEBIAN_FRONTEND=noninteractive
    # An update only when something is missing: the package lists may be absent or stale on a fresh machine.
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

create_user() {
    if [[ -z "$uid" ]]; then
        say "creating user $user"
        useradd --create-home --shell /usr/sbin/nologin --comment "Squall rootless Podman" "$user"
        resolve_user
    fi
    local start
    if ! has_subids /etc/subuid; then
        start="$(next_subid_start)"
        say "adding subuid range $start-$((start + 65535)) for $user"
        usermod --add-subuids "$start-$((start + 65535))" "$user"
    fi
    if ! has_subids /etc/subgid; then
        start="$(next_subid_start)"
        say "adding subgid range $start-$((start + 65535)) for $user"
        usermod --add-subgids "$start-$((start + 65535))" "$user"
    fi
}

prepare_dirs_and_config() {
    # /run is a tmpfs: the runtime dir disappears on reboot, so this step is the one that reruns most.
    owned_dir_is /run/user 0 755 || install -d -m 0755 -o root -g root /run/user
    owned_dir_is "$rundir" "$uid" 700 || install -d -m 0700 -o "$uid" -g "$gid" "$rundir"
    local conf_dir="$home/.config/containers"
    [[ -d "$conf_dir" ]] || install -d -m 0755 -o "$uid" -g "$gid" "$home/.config" "$conf_dir"
    if ! file_is "$conf_dir/containers.conf" "$containers_conf"; then
        say "writing $conf_dir/containers.conf"
        printf '%s' "$containers_conf" | install -m 0644 -o "$uid" -g "$gid" /dev/stdin "$conf_dir/containers.conf"
    fi
    if ! file_is "$conf_dir/storage.conf" "$storage_conf"; then
        say "writing $conf_dir/storage.conf"
        printf '%s' "$storage_conf" | install -m 0644 -o "$uid" -g "$gid" /dev/stdin "$conf_dir/storage.conf"
    fi
    if [[ -d "$home/.local/share/containers/storage/vfs" ]]; then
        # Storage created with vfs would keep being used (and mismatch the config) until it is reset.
        say "resetting vfs storage of $user"
        # The reset reads the old vfs database and complains about the new driver on its way out: expected.
        local out
        out="$(as_user podman system reset -f 2>&1)" || die "podman system reset failed as $user: $out"
    fi
}

# The pid of the user's rootless pause process (catatonit -P, which keeps the user namespace alive), if running.
pause_pid() {
    local pid
    # A zombie counts as gone: an init that does not reap orphans leaves them around.
    pid="$(cat "$rundir/libpod/tmp/pause.pid" 2>/dev/null)" &&
        grep -qE '^State:\s*[^Z]' "/proc/$pid/status" 2>/dev/null && echo "$pid"
    return 0
}

make_root_shared() {
    # Rootless Podman warns (and mount propagation into containers misbehaves) when / is private, which it is on
    # hosts booted without systemd. systemd hosts have it shared already.
    [[ "$(findmnt -no PROPAGATION / 2>/dev/null)" == shared* ]] && return
    mount --make-rshared / 2>/dev/null || say "note: / is not a shared mount and could not be made one"
}

verify() {
    local got err before after
    err="$(mktemp)"
    before="$(pause_pid)"
    got="$(as_user podman info --format '{{.Store.GraphDriverName}} {{.Host.OCIRuntime.Name}}' 2>"$err")" ||
        die "podman info failed as $user: $(cat "$err")"
    rm -f "$err"
    # A check must not leave processes behind: stop the pause process podman info started, if it did.
    after="$(pause_pid)"
    [[ -n "$after" && "$after" != "$before" ]] && kill "$after"
    [[ "$got" == "overlay runc" ]] || die "podman as $user uses '$got', expected 'overlay runc'"
    say "rootless podman ready for $user (uid $uid): overlay storage, runc, runtime dir $rundir"
}

resolve_user

if [[ "$(id -u)" != 0 ]]; then
    missing="$(missing_pieces)"
    if [[ -n "$missing" ]]; then
        printf 'setup-host: rootless podman is not set up (missing: %s)\n' "$(echo $missing)" >&2
        printf 'setup-host: run: sudo %s %s\n' "$0" "$user" >&2
        exit 1
    fi
    say "rootless podman is set up for $user (uid $uid)"
    exit 0
fi

make_root_shared
missing="$(missing_pieces)"
if [[ -n "$missing" ]]; then
    install_packages
    create_user
    prepare_dirs_and_config
fi
verify
