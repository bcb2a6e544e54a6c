#!/usr/bin/env bash
# Install or upgrade SDP from this offline bundle (no network, no package index). As root:
#
#   ./install.sh [--prefix /opt/sdp] [--no-restart]
#
# Needs Debian 12 on x86_64 with python3 (3.11) and python3-venv. Steps, each checked:
#  1. the bundle is complete (SHA256SUMS) and the machine is the target;
#  2. a virtualenv for this release in PREFIX/releases/RELEASE, from the bundle's wheels only
#     (pip --no-index), kept when it is already there and complete;
#  3. an existing /etc/sdp/node.yaml must be valid for the new release, or nothing changes;
#  4. PREFIX/current switches to the new release (one atomic rename; the old release stays:
#     switching back is the same rename, see docs/install.md);
#  5. the systemd units and the examples (/etc/sdp/examples/) are refreshed — node.yaml,
#     reconcile.env and the secrets are never written;
#  6. a running sdp-node / sdp-reconcile is restarted on the new release (not with
#     --no-restart). Sandbox containers are not the agent's children: they keep running and
#     serving while it restarts; the agent only reads and labels them.
# The two releases before the current one are kept; older ones are removed.
set -euo pipefail
cd "$(dirname "$0")"

prefix=/opt/sdp
restart=yes
while (($#)); do
    case $1 in
        --prefix) prefix=$2; shift 2 ;;
        --no-restart) restart=no; shift ;;
        *) echo "install.sh: unknown argument $1 (see the header of $0)" >&2; exit 2 ;;
    esac
done
readonly etc=/etc/sdp units=/etc/systemd/system keep=3

say() { echo "install.sh: $*" >&2; }
fail() { say "$*"; exit 1; }

release=$(cat RELEASE)
version=$(cat VERSION)
[ "$(id -u)" = 0 ] || fail "run as root (it installs into $prefix and $units)"
sha256sum --check --quiet --strict SHA256SUMS || fail "the bundle is damaged: SHA256SUMS do not match"
[ "$(uname -m)" = x86_64 ] || fail "this bundle is for x86_64, not $(uname -m)"
command -v python3 >/dev/null || fail "python3 is missing: apt-get install python3 (Debian 12)"
python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
    || fail "this bundle is for CPython 3.11 (Debian 12's python3), not $(python3 -V)"
python3 -c 'import ensurepip, venv' 2>/dev/null \
    || fail "python3-venv is missing: apt-get install python3-venv (from the Debian 12 media)"

# The machine's pip configuration plays no part: the bundle's wheels are the only source.
while read -r variable; do unset "$variable"; done < <(compgen -e | grep '^PIP_' || true)
export PIP_CONFIG_FILE=/dev/null

# 2. The release's virtualenv.
releases=$prefix/releases
home=$releases/$release
if [ ! -f "$home/.complete" ]; then
    say "installing release $release into $home"
    rm -rf "$home"  # an interrupted earlier attempt: it never got its .complete marker
    mkdir -p "$releases"
    python3 -m venv "$home"
    "$home/bin/python" -m pip install --quiet --disable-pip-version-check --no-index \
        --no-cache-dir --find-links "$PWD/wheels" "sdp==$version"
    "$home/bin/sdp-node" --help >/dev/null
    "$home/bin/sdp-reconcile" --help >/dev/null
    mkdir -p "$home/share/doc"
    cp doc/*.md "$home/share/doc/"
    echo "$release" >"$home/.complete"
else
    say "release $release is already installed in $home"
fi

# 3. The node's configuration must work with the new release before anything switches.
if [ -f "$etc/node.yaml" ]; then
    "$home/bin/sdp-node" --check --config "$etc/node.yaml" >/dev/null \
        || fail "$etc/node.yaml is not valid for release $release (see above): nothing changed"
fi

# 4. Switch.
previous=$(readlink "$prefix/current" 2>/dev/null || true)
ln -sfn "releases/$release" "$prefix/current.new"
mv -T "$prefix/current.new" "$prefix/current"
say "current -> releases/$release${previous:+ (was $previous)}"

# 5. Units and examples.
install -d -m 0750 "$etc" "$etc/examples"
install -m 0644 examples/* "$etc/examples/"
systemd_running=no
[ -d /run/systemd/system ] && systemd_running=yes
changed_units=no
install -d "$units"
for unit in systemd/*.service; do
    target=$units/$(basename "$unit")
    if ! cmp -s "$unit" "$target"; then
        install -m 0644 "$unit" "$target"
        changed_units=yes
    fi
done
if [ "$systemd_running" = yes ] && [ "$changed_units" = yes ]; then
    systemctl daemon-reload
fi

# 6. Restart what runs.
if [ "$systemd_running" = yes ] && [ "$restart" = yes ]; then
    for service in sdp-node sdp-reconcile; do
        if systemctl --quiet is-active "$service.service"; then
            say "restarting $service on release $release"
            systemctl restart "$service.service"
            systemctl --quiet is-active "$service.service" \
                || fail "$service did not come back: journalctl -u $service"
        fi
    done
elif [ "$restart" = yes ]; then
    say "no systemd here: restart sdp-node yourself to run release $release"
fi

# Keep the current release and the two before it.
mapfile -t old < <(cd "$releases" && ls -1t --ignore='.*' | grep -vx -- "$release" \
    | tail -n +"$keep" || true)
for name in "${old[@]}"; do
    [ -n "$name" ] && rm -rf "${releases:?}/$name" && say "removed old release $name"
done
say "done: $prefix/current is release $release (sdp $version)"
