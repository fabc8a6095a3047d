#!/bin/sh
# Installs insmon from this offline bundle on a Debian 12 (or Debian-family: Kylin, UOS)
# host with no network: the Debian packages beside it (Python's venv, Prometheus,
# Alertmanager, gammu-smsd), the `insmon` user, insmon in /opt/insmon/.venv from the
# bundled wheels only, the site's configs in /etc/insmon where none exist, and the systemd
# units of insmon, insmon-pager, insmon-prometheus and insmon-alertmanager, enabled. What
# it writes in /etc/insmon pages nobody until the site fills it in (insmon doctor says).
#
#   ./install.sh              install (a second run changes nothing)
#   ./install.sh --upgrade    replace the code with this bundle's; every config, the
#                             pager's database (backed up, migrated at its start) and
#                             the metric history are kept
#   ./install.sh --uninstall [--purge]   remove the code and the units, and give Debian's
#                             units back the states they had before the install; configs
#                             and data stay unless --purge
# Then: /opt/insmon/.venv/bin/insmon doctor
set -eu
umask 022  # what it installs is read by the services' users, whatever root's umask is

BUNDLE=$(cd "$(dirname "$0")" && pwd)
PREFIX=/opt/insmon
VENV=$PREFIX/.venv          # a link to venv-<version>-<bundle>: swapped in whole
ETC=/etc/insmon
UNITS=/usr/local/lib/systemd/system
SERVICES="insmon insmon-pager insmon-prometheus insmon-alertmanager"
# Debian's own services of the packages installed here: ours take their ports.
DEBIAN_SERVICES="prometheus prometheus-alertmanager"
# Every Debian unit of the bundle's packages, as it was before the first install (enabled
# or not, running or not): --uninstall gives each its state back. A package the bundle
# installed leaves its unit disabled (gammu-smsd: until the site sets up its modem).
PACKAGE_SERVICES="$DEBIAN_SERVICES gammu-smsd prometheus-node-exporter"
BEFORE=/var/lib/insmon-install/units-before
# gammu-smsd runs as the pager's user (its RunOnReceive writes the pager's store)
GAMMU_DROPIN=gammu-smsd.service.d/insmon.conf
# `insmon` on root's PATH: the command the doctor's mends and the configs' headers name
LINK=/usr/local/bin/insmon
POLICY=/usr/sbin/policy-rc.d
POLICY_MARK="# insmon install.sh: no service starts while it installs packages"
# pip takes the bundle's wheels and nothing else: no index, no config of the host's
unset PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_FIND_LINKS PIP_REQUIRE_VIRTUALENV
export PIP_CONFIG_FILE=/dev/null

say() { printf 'install.sh: %s\n' "$*"; }
stopped_pager=0
die() {
    printf 'install.sh: %s\n' "$*" >&2
    if [ "$stopped_pager" = 1 ]; then  # whatever failed, the pager pages again
        systemctl start insmon-pager || true
    fi
    exit 1
}
changed=0
did() { say "$*"; changed=1; }

mode=install purge=0
for arg in "$@"; do
    case $arg in
        --upgrade) mode=upgrade ;;
        --uninstall) mode=uninstall ;;
        --purge) purge=1 ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (--upgrade, --uninstall [--purge], --help)" ;;
    esac
done
[ "$purge" = 0 ] || [ "$mode" = uninstall ] || die "--purge goes with --uninstall"
[ "$(id -u)" = 0 ] || die "run as root (it creates a user and installs services)"
command -v dpkg-query >/dev/null && command -v apt-get >/dev/null ||
    die "this is not a Debian-family host (no dpkg, no apt): the bundle is for Debian 12"
[ -d /run/systemd/system ] && command -v systemctl >/dev/null ||
    die "systemd is not running on this host (no /run/systemd/system): the bundle's" \
        "services are systemd units, which it starts and stops; nothing was changed"
# one install.sh at a time
exec 9>/run/insmon-install.lock
flock -n 9 || die "another install.sh is running"

# Every file of the bundle is in the manifest with its digest, and nothing else is there.
check_bundle() {
    (cd "$BUNDLE" && sha256sum --check --quiet --strict SHA256SUMS) >&2 ||
        die "the bundle does not match its manifest (SHA256SUMS, listed above): copy it again"
    listed=$(mktemp)
    sed 's/^[0-9a-f]*  //' "$BUNDLE/SHA256SUMS" | sort >"$listed"
    extra=$(cd "$BUNDLE" && { find . ! -type d ! -type f -printf '%P (not a file)\n'
        find . -type f ! -path ./SHA256SUMS -printf '%P\n' | sort | comm -23 - "$listed"; })
    rm -f "$listed"
    [ -z "$extra" ] || die "the bundle holds what its manifest does not list:" $extra
    # shellcheck disable=SC1091
    . "$BUNDLE/BUNDLE"   # version=, arch=, debians= (checked above)
    host=$(dpkg --print-architecture)
    [ "$host" = "$arch" ] || die "this bundle is for $arch, this host is $host"
}

# The state of the bundle's Debian units before its first install (not after an older
# install.sh's: unknown then), for --uninstall.
record_units() {
    [ ! -e "$BEFORE" ] && [ -z "$current" ] || return 0
    mkdir -p "$(dirname "$BEFORE")"
    for s in $PACKAGE_SERVICES; do
        enabled=$(systemctl is-enabled "$s.service" 2>/dev/null) || enabled=${enabled:-absent}
        active=$(systemctl is-active "$s.service" 2>/dev/null) || true
        echo "$s ${enabled:-absent} ${active:-inactive}"
    done >"$BEFORE.new"
    mv "$BEFORE.new" "$BEFORE"
}

debian_packages() {
    # a leftover of an install.sh killed while apt ran: its own policy, and dpkg's state
    if grep -qsF "$POLICY_MARK" "$POLICY"; then
        rm -f "$POLICY"
        did "removed $POLICY left by an interrupted install.sh"
    fi
    if [ -n "$(dpkg --audit 2>/dev/null)" ]; then
        DEBIAN_FRONTEND=noninteractive dpkg --configure -a >&2 ||
            die "dpkg was interrupted and cannot finish: dpkg --configure -a says why"
        did "finished what an interrupted dpkg left (dpkg --configure -a)"
    fi
    # the packages asked for by name; apt takes their dependencies from the bundle as
    # needed, keeping whatever the host already has
    missing=""
    for p in $debians; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q ' installed$' ||
            missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    apt=$(mktemp -d)
    ln -s "$BUNDLE/debs" "$apt/debs"  # apt's source line cannot hold a space
    echo "deb [trusted=yes] file:$apt/debs ./" >"$apt/sources.list"
    mkdir -p "$apt/lists/partial"
    cat >"$apt/apt.conf" <<EOF
Dir::Etc::SourceList "$apt/sources.list";
Dir::Etc::SourceParts "/nonexistent";
Dir::State::Lists "$apt/lists";
APT::Install-Recommends "false";
Acquire::Languages "none";
EOF
    # Debian's prometheus and alertmanager would start on our ports during the install;
    # the mark lets the next run remove it should this one be killed
    made_policy=0
    if [ ! -e "$POLICY" ]; then
        trap 'rm -f "$POLICY"' EXIT INT TERM
        printf '#!/bin/sh\n%s\nexit 101\n' "$POLICY_MARK" >"$POLICY"
        chmod 755 "$POLICY"
        made_policy=1
    fi
    status=0
    APT_CONFIG="$apt/apt.conf" apt-get update -q >"$apt/log" 2>&1 &&
        APT_CONFIG="$apt/apt.conf" DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -q $missing >>"$apt/log" 2>&1 || status=$?
    [ "$made_policy" = 0 ] || rm -f "$POLICY"
    if [ "$status" != 0 ]; then
        cat "$apt/log" >&2
        rm -rf "$apt"
        die "apt could not install the bundle's Debian packages (above)"
    fi
    rm -rf "$apt"
    did "installed the Debian packages:$missing"
    # apt enabled their units (and policy-rc.d kept them from starting): what the bundle
    # brought runs only when the site says (Debian's prometheus and alertmanager never:
    # ours take their ports)
    for s in $PACKAGE_SERVICES; do
        case " $missing " in *" $s "*) ;; *) continue ;; esac
        systemctl -q is-enabled "$s" 2>/dev/null || continue
        systemctl disable -q "$s"
        did "left $s.service disabled (installed by the bundle: systemctl enable --now $s" \
            "when the site wants it)"
    done
}

user() {
    getent group insmon >/dev/null || { groupadd --system insmon; did "created group insmon"; }
    getent passwd insmon >/dev/null || {
        useradd --system --gid insmon --home-dir /var/lib/insmon --no-create-home \
            --shell /usr/sbin/nologin insmon
        did "created user insmon"
    }
    # the pager's token, and only it, is shared with Alertmanager (user prometheus)
    getent group insmon-token >/dev/null || {
        groupadd --system insmon-token; did "created group insmon-token"
    }
    member insmon insmon-token
    # the pager hands SMS to gammu-smsd's outbox (group gammu's, from Debian's package);
    # gammu-smsd, run as insmon, opens the modem (group dialout's)
    ! getent group gammu >/dev/null || member insmon gammu
    ! getent group dialout >/dev/null || member insmon dialout
}

member() {  # user group
    id -nG "$1" | tr ' ' '\n' | grep -qx "$2" && return 0
    usermod -a -G "$2" "$1"
    did "added $1 to group $2"
}

installed_version() {
    [ -x "$VENV/bin/insmon" ] && "$VENV/bin/insmon" --version 2>/dev/null | sed 's/^insmon //'
}

# What is installed against this bundle: nothing to do, an install, or an upgrade (said
# before anything changes).
preflight() {
    current=$(installed_version || true)
    stamp=$(sha256sum "$BUNDLE/SHA256SUMS" | cut -d' ' -f1)
    same=0
    [ -z "$current" ] || [ "$(cat "$PREFIX/BUNDLE.sha256" 2>/dev/null)" != "$stamp" ] || same=1
    [ "$same" = 1 ] || [ -z "$current" ] || [ "$mode" = upgrade ] ||
        die "insmon $current is installed: ./install.sh --upgrade to replace it with $version"
    if [ "$same" = 0 ] && [ -n "$current" ] && dpkg --compare-versions "$version" lt "$current"
    then
        die "insmon $current is installed, newer than this bundle's $version: its pager" \
            "database may be migrated past what $version reads; nothing changed"
    fi
}

# The new code beside the old, complete before anything running is touched: a venv of
# this bundle's own (its scripts name the path they were made at, so it is made where it
# stays).
prepare() {
    [ "$same" = 0 ] || return 0
    python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
        die "the bundle's wheels are for Python 3.11 (Debian 12); this host's python3 is" \
            "$(python3 -V 2>&1)"
    new="$PREFIX/venv-$version-$(echo "$stamp" | cut -c1-12)"
    rm -rf "$new" "$PREFIX/share.new"
    mkdir -p "$PREFIX"
    if ! { python3 -m venv "$new" && "$new/bin/pip" install --quiet --no-index \
            --find-links "$BUNDLE/wheels" --disable-pip-version-check "insmon==$version"; }
    then
        rm -rf "$new"
        die "pip could not install insmon $version from the bundle (above); the code is as" \
            "it was"
    fi
    cp -R "$BUNDLE/share" "$PREFIX/share.new"
}

backup_pager_db() {
    db=/var/lib/insmon-pager/pager.db
    [ -e "$db" ] && [ -n "$current" ] && [ "$same" = 0 ] || return 0
    # the pager migrates its store when the new code starts; the copy is the way back
    if systemctl -q is-active insmon-pager; then
        systemctl stop insmon-pager
        stopped_pager=1
    fi
    copy="$db.before-$version"
    "$VENV/bin/python" -c 'import sqlite3, sys
source, target = sqlite3.connect(sys.argv[1]), sqlite3.connect(sys.argv[2])
source.backup(target)' "$db" "$copy" || die "could not back up the pager's database"
    chown insmon:insmon "$copy"
    chmod 0640 "$copy"
    did "backed up the pager's database to $copy"
}

# The new venv swapped in by renaming a link: a kill at any moment leaves one whole venv.
swap() {
    [ "$same" = 0 ] || return 0
    if [ -d "$VENV" ] && [ ! -L "$VENV" ]; then  # a venv made in place (an older install.sh)
        mv "$VENV" "$PREFIX/venv-inplace"
        ln -s venv-inplace "$VENV"
    fi
    ln -sfn "$(basename "$new")" "$PREFIX/.venv.link"
    mv -T "$PREFIX/.venv.link" "$VENV"
    for old in "$PREFIX"/venv-*; do
        [ "$old" = "$new" ] || rm -rf "$old"
    done
    [ ! -e "$PREFIX/share" ] || mv "$PREFIX/share" "$PREFIX/share.old"
    mv "$PREFIX/share.new" "$PREFIX/share"
    rm -rf "$PREFIX/share.old"
    echo "$stamp" >"$PREFIX/BUNDLE.sha256"
    did "installed insmon $version in $VENV${current:+ (was $current)}"
}

link() {
    [ "$(readlink "$LINK" 2>/dev/null)" != "$VENV/bin/insmon" ] || return 0
    if [ -e "$LINK" ] || [ -L "$LINK" ]; then
        say "left $LINK as it is (not the bundle's): $VENV/bin/insmon is insmon's command"
        return 0
    fi
    mkdir -p "$(dirname "$LINK")"
    ln -s "$VENV/bin/insmon" "$LINK"
    did "linked $LINK to $VENV/bin/insmon"
}

# A file of the site's: put in place only where there is none (an upgrade keeps it),
# whole or not at all (a full disk or a kill leaves no half a file that the next run
# would keep as the site's).
site_file() {  # source target mode group
    [ -e "$2" ] && return 0
    partial="$(dirname "$2")/.$(basename "$2").new"
    install -m "$3" -o root -g "$4" "$1" "$partial" && mv "$partial" "$2" ||
        { rm -f "$partial"; die "could not write $2 (is the disk full?); nothing of it kept"; }
    did "wrote $2"
}

# A new random secret (hex) for the group's reading, whole or not at all, like site_file.
secret() {  # target bytes group
    partial="$(dirname "$1")/.$(basename "$1").new"
    (umask 027; od -An -N"$2" -tx1 /dev/urandom | tr -d ' \n' >"$partial") &&
        [ "$(wc -c <"$partial")" -eq $(($2 * 2)) ] && chgrp "$3" "$partial" &&
        mv "$partial" "$1" ||
        { rm -f "$partial"; die "could not write $1 (is the disk full?)"; }
}

configs() {
    # readable by Prometheus too (its config); the files with secrets are group insmon
    [ -d "$ETC" ] || { install -d -m 0755 -o root -g root "$ETC"; did "created $ETC"; }
    # starting points that page nobody: this host's checks, a pager with no one to page
    site_file "$BUNDLE/site/hospital.yaml" "$ETC/hospital.yaml" 0640 insmon
    site_file "$BUNDLE/site/pager.yaml" "$ETC/pager.yaml" 0640 insmon
    site_file "$BUNDLE/share/examples/web.yml" "$ETC/web.yml" 0640 insmon
    site_file "$BUNDLE/site/prometheus.yml" "$ETC/prometheus.yml" 0644 root
    site_file "$BUNDLE/site/alertmanager.yml" "$ETC/alertmanager.yml" 0644 root
    if [ ! -e "$ETC/pager-token" ]; then
        # Alertmanager (group insmon-token, its unit) sends it with every page; the pager
        # takes pages only with it
        secret "$ETC/pager-token" 24 insmon-token
        did "wrote $ETC/pager-token (a new random token)"
    fi
    if [ "$(stat -c %G "$ETC/pager-token")" != insmon-token ]; then
        chgrp insmon-token "$ETC/pager-token"
        chmod 0640 "$ETC/pager-token"
        did "gave $ETC/pager-token to group insmon-token"
    fi
    if [ ! -e "$ETC/pager-pair-key" ]; then
        # the two pagers' own key (pair.key_file), never Alertmanager's: the pager alone
        # reads it; the other pager host needs a copy of this file
        secret "$ETC/pager-pair-key" 32 insmon
        did "wrote $ETC/pager-pair-key (a new random key: copy it to the other pager host)"
    fi
    for dir in /var/lib/insmon /var/lib/insmon-pager; do
        [ -d "$dir" ] || { install -d -m 0750 -o insmon -g insmon "$dir"; did "created $dir"; }
    done
    # the audit trail: insmon's service is its one writer (its key audit.key beside it,
    # made at its first start); `insmon maintenance` and `drill` hand it their records
    # over audit.sock there. The group reads (an older install let it write: no more).
    if [ ! -d /var/lib/insmon/audit ]; then
        install -d -m 0750 -o insmon -g insmon /var/lib/insmon/audit
        did "created /var/lib/insmon/audit"
    elif [ -n "$(find /var/lib/insmon/audit -maxdepth 0 -perm /022)" ]; then
        chmod go-w /var/lib/insmon/audit
        did "made /var/lib/insmon/audit writable by insmon alone"
    fi
}

units() {
    install -d "$UNITS"
    reload=0
    for s in $SERVICES; do
        if ! cmp -s "$BUNDLE/systemd/$s.service" "$UNITS/$s.service"; then
            install -m 0644 "$BUNDLE/systemd/$s.service" "$UNITS/$s.service"
            did "installed $UNITS/$s.service"
            reload=1
        fi
    done
    smsd=0
    if ! cmp -s "$BUNDLE/systemd/$GAMMU_DROPIN" "$UNITS/$GAMMU_DROPIN"; then
        install -D -m 0644 "$BUNDLE/systemd/$GAMMU_DROPIN" "$UNITS/$GAMMU_DROPIN"
        did "installed $UNITS/$GAMMU_DROPIN (gammu-smsd runs as insmon)"
        reload=1 smsd=1
    fi
    [ "$reload" = 0 ] || systemctl daemon-reload
    # a gammu-smsd running (the site's, or as an older drop-in said) runs as this one says
    # now, not from some later reboot on
    if [ "$smsd" = 1 ] && systemctl -q is-active gammu-smsd; then
        systemctl restart gammu-smsd
        did "restarted gammu-smsd as the drop-in says (insmon doctor checks its modem)"
    fi
    for s in $DEBIAN_SERVICES; do
        if systemctl -q is-enabled "$s" 2>/dev/null; then
            systemctl disable -q "$s"
            did "disabled Debian's $s.service (insmon-${s#prometheus-} takes its port;" \
                "--uninstall gives it back its state from before the install)"
        fi
        ! systemctl -q is-active "$s" || { systemctl stop "$s"; did "stopped Debian's $s"; }
    done
    for s in $SERVICES; do
        systemctl -q is-enabled "$s" 2>/dev/null || { systemctl enable -q "$s"; did "enabled $s"; }
    done
}

start() {
    for s in $SERVICES; do
        if [ "$mode" = upgrade ] && [ "$changed" = 1 ]; then
            systemctl restart "$s"
        elif ! systemctl -q is-active "$s"; then
            systemctl start "$s" && did "started $s"
        fi
    done
    stopped_pager=0
}

uninstall() {
    for s in $SERVICES; do
        [ -e "$UNITS/$s.service" ] || continue
        systemctl stop "$s" 2>/dev/null || true
        systemctl disable -q "$s" 2>/dev/null || true
        rm -f "$UNITS/$s.service"
        did "removed $s.service"
    done
    if [ -e "$UNITS/$GAMMU_DROPIN" ]; then
        rm -rf "$UNITS/$(dirname "$GAMMU_DROPIN")"
        did "removed $UNITS/$(dirname "$GAMMU_DROPIN") (gammu-smsd as insmon)"
    fi
    systemctl daemon-reload
    restore_units
    if grep -qs -- '--user=insmon' /etc/systemd/system/gammu-smsd.service.d/*.conf; then
        say "left: a drop-in of the site's in /etc/systemd/system/gammu-smsd.service.d runs" \
            "gammu-smsd as insmon (systemctl revert gammu-smsd removes it)"
    fi
    if [ "$purge" = 1 ] && getent passwd insmon >/dev/null &&
            pgrep -u insmon >/dev/null 2>&1; then
        die "processes of user insmon still run (pgrep -u insmon): stop them, then" \
            "--uninstall --purge again; nothing of the data was removed"
    fi
    if [ "$(readlink "$LINK" 2>/dev/null)" = "$VENV/bin/insmon" ]; then
        rm -f "$LINK"
        did "removed $LINK"
    fi
    [ ! -e "$PREFIX" ] || { rm -rf "$PREFIX"; did "removed $PREFIX"; }
    if [ "$purge" = 1 ]; then
        purge
    else
        say "kept $ETC and the data in /var/lib/insmon*: --uninstall --purge removes them"
    fi
    say "the Debian packages stay (apt remove prometheus prometheus-alertmanager gammu-smsd)"
}

# Each of the bundle's Debian units as it was before the install: enabled or not, running
# or not (one running as insmon by the bundle's drop-in restarts as Debian's unit says).
restore_units() {
    if [ ! -e "$BEFORE" ]; then
        say "no record of Debian's units from before the install (an earlier --uninstall" \
            "gave them back, or an older install.sh installed): left as they are"
        return
    fi
    while read -r s enabled active; do
        systemctl cat "$s.service" >/dev/null 2>&1 || continue  # not installed now
        if [ "$enabled" = enabled ]; then
            systemctl -q is-enabled "$s" 2>/dev/null ||
                { systemctl enable -q "$s"; did "enabled $s.service again, as before"; }
        elif systemctl -q is-enabled "$s" 2>/dev/null; then
            systemctl disable -q "$s"
            did "disabled $s.service, as before the install"
        fi
        if [ "$active" = active ]; then
            systemctl restart "$s" && did "$s.service runs again, as before" ||
                say "$s.service ran before the install and does not start now:" \
                    "journalctl -u $s says why"
        elif systemctl -q is-active "$s"; then
            systemctl stop "$s"
            did "stopped $s.service, as before the install"
        fi
    done <"$BEFORE"
    rm -f "$BEFORE"
}

purge() {
    for path in "$ETC" /var/lib/insmon /var/lib/insmon-pager /var/lib/insmon-prometheus \
                /var/lib/insmon-alertmanager /var/lib/insmon-install \
                /etc/systemd/system/insmon*.service.d; do
        [ ! -e "$path" ] || { rm -rf "$path"; did "removed $path"; }
    done
    # what gammu-smsd wrote as insmon (messages, a dummy phone's folder) goes to Debian's
    # user gammu, whose spool it is: nothing is left to a removed user's number
    mine="( -user insmon -o -group insmon )"
    if getent passwd gammu >/dev/null && getent passwd insmon >/dev/null &&
            [ -n "$(find /var/spool/gammu $mine -print -quit 2>/dev/null)" ]; then
        find /var/spool/gammu $mine -exec chown gammu:gammu {} +
        did "gave the files of insmon in /var/spool/gammu to Debian's gammu:gammu"
    fi
    uid=$(id -u insmon 2>/dev/null || true)
    ! getent passwd insmon >/dev/null || { userdel insmon; did "removed user insmon"; }
    for group in insmon insmon-token; do
        ! getent group "$group" >/dev/null || { groupdel "$group"; did "removed group $group"; }
    done
    [ -z "$uid" ] || say "left: files of the removed user insmon elsewhere, if the site made" \
        "any (find / -xdev -uid $uid lists them); /etc/gammu-smsdrc, the site's modem config"
}

if [ "$mode" = uninstall ]; then
    uninstall
    exit 0
fi
check_bundle
preflight
record_units
debian_packages
user
prepare
backup_pager_db
swap
link
configs
units
start
if [ "$changed" = 0 ]; then
    say "insmon $version is installed as this bundle has it: nothing to change"
else
    say "done. Next: $VENV/bin/insmon doctor"
fi
