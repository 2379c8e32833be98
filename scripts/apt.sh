# Debian/Ubuntu package helpers shared by the project's scripts; source it, do not run it.
#
#   . "$(dirname "$0")/apt.sh"
#   apt_install gdal-bin time          # installs what is missing, updating the lists first if needed
#   apt_depends_version postgresql postgresql   # sets APT_VERSION: 15 on bookworm, 16 on noble
#
# Why a library: a fresh Debian or Ubuntu root file system (a debian:bookworm container, a debootstrap
# image) has no package lists at all, so `apt-cache` answers nothing and `apt-get install` cannot find
# any package until `apt-get update` has run. Every script that installs something must handle that
# the same way, and must say what failed instead of dying silently under `set -e`.
#
# The caller defines log() and die() (one line on stderr each) before sourcing this file.
#
# Environment:
#   APT_CONFIG   honoured by apt itself; the project's tests point it at a private, empty apt state.

# Root runs apt directly; another user needs sudo (say so rather than fail obscurely).
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "this step needs root: run as root, or install sudo and allow $(id -un) to use it"
    fi
}

APT_UPDATED=${APT_UPDATED:-0}
# One `apt-get update` per script run at most: it takes seconds to minutes.
apt_update_once() {
    ((APT_UPDATED == 0)) || return 0
    log "running apt-get update (package lists are missing or out of date)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 \
        || die "apt-get update failed (see above): check the network or proxy settings of apt"
    APT_UPDATED=1
}

# Are there package lists at all? A fresh image has none, and then every query below fails.
apt_has_lists() {
    local dir
    dir=$(apt-config shell dir Dir::State::Lists/d 2>/dev/null | sed -n "s/^dir='\(.*\)'$/\1/p")
    [[ -n $dir ]] || dir=/var/lib/apt/lists/
    compgen -G "$dir*_Packages*" >/dev/null
}

# Sets APT_VERSION to the major version that package $2's dependencies name in the form "$1-<N>":
# `apt_depends_version postgresql postgresql` sets 15 when "postgresql" depends on "postgresql-15".
# Leaves it empty when apt does not know the package, even after updating the lists. (A variable, not
# output: a command substitution would run apt_update_once in a subshell and forget that it ran.)
apt_depends_version() {
    local prefix=$1 package=$2
    apt_has_lists || apt_update_once
    APT_VERSION=$(apt_depends_major "$prefix" "$package")
    if [[ -z $APT_VERSION ]] && ((APT_UPDATED == 0)); then
        apt_update_once
        APT_VERSION=$(apt_depends_major "$prefix" "$package")
    fi
}

apt_depends_major() {
    # A failing apt-cache (unknown package, no lists, or cut short by sed's q) must not end the
    # caller under `set -e` and pipefail.
    { apt-cache depends "$2" 2>/dev/null || true; } \
        | sed -n "s/^ *Depends: $1-\([0-9][0-9]*\)\$/\1/p; T; q"
}

# Installs the packages (without recommends), updating the lists once when they are missing or
# when the first attempt fails (stale lists name files the mirror no longer has).
apt_install() {
    apt_has_lists || apt_update_once
    log "installing: $*"
    # LANG matters: Debian's postgresql postinst creates the first cluster with the locale of the
    # environment, and UTF-8 is wanted, not SQL_ASCII.
    local install=(env DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 LC_ALL=C.UTF-8
        apt-get install -y -q --no-install-recommends "$@")
    as_root "${install[@]}" >&2 && return 0
    ((APT_UPDATED == 0)) || die "apt-get install $* failed (see above)"
    apt_update_once
    as_root "${install[@]}" >&2 || die "apt-get install $* failed (see above)"
}
