#!/usr/bin/env bash
# Builds the container image of oar-tiles: an OCI image whose root file system is made from Debian
# bookworm's own packages (no base image is pulled from a registry), holding the release binary.
#
#   scripts/image.sh                        # release build; writes and prints the archive's path
#   scripts/image.sh --binary target/debug/oar-tiles --tag 0.1.0-test   # an already built binary
#   podman run --rm oar-tiles:0.1.0 --help  # it is in podman's store too
#
# What is in it:
#   - Debian bookworm's Essential packages and ca-certificates (from bookworm, bookworm-updates and
#     bookworm-security), made by mmdebstrap; manuals, documentation (but its copyright files) and
#     translations are left out by dpkg path filters. No apt, no compiler.
#   - the user oar-tiles (uid and gid 10001, home /data), as whom the image runs;
#   - /data, owned by that user: the working directory and HOME, where to mount a volume;
#   - the binary, stripped, as the entrypoint /usr/local/bin/oar-tiles (default argument --help);
#   - labels org.opencontainers.image.{title,description,version,revision,source,licenses,created}:
#     version from Cargo.toml, revision the git HEAD (with -dirty when tracked files differ from it).
# It has two layers: the Debian root, which changes only with Debian's packages, and the binary.
#
# Output: the OCI archive target/image/oar-tiles-TAG.oci.tar (podman load, skopeo copy
# oci-archive:…), and the same image in the local podman store as oar-tiles:TAG. The archive's
# absolute path is the last line on stdout; progress goes to stderr. Where podman cannot store
# images (a root file system on overlayfs, as in a container) it warns, and the archive is still
# written; exit status 0.
#
# The Debian layer is cached in ~/.cache/oar-tiles/image-base/KEY (with packages.txt, the versions
# it holds), KEY a hash of everything it is made from (suite, mirrors, packages, dpkg filters,
# user); it is made again when older than OAR_TILES_IMAGE_BASE_MAX_DAYS days, so security updates
# reach new images, or with --refresh-base.
#
# Options:
#   --binary PATH    package this binary instead of running `cargo build --release --locked`
#   --tag TAG        the image's tag (default: the version in Cargo.toml)
#   --out DIR        where the archive goes (default: target/image)
#   --no-store       write the archive only, not into podman's store (podman is then not needed)
#   --refresh-base   make the Debian layer again even if a cached one is fresh enough
#   -h, --help       this text
#
# Environment:
#   OAR_TILES_IMAGE_SOURCE         the source label (default: the URL of the git remote `origin`)
#   OAR_TILES_IMAGE_BASE_MAX_DAYS  age after which the cached Debian layer is remade (default 7)
#   DEBIAN_MIRROR                  default http://deb.debian.org/debian
#   DEBIAN_SECURITY_MIRROR         default http://deb.debian.org/debian-security
#   XDG_CACHE_HOME, CARGO_TARGET_DIR   honoured
#
# Runs as root (mmdebstrap writes files owned by other users, apt installs what is missing:
# mmdebstrap, umoci, binutils' strip and objdump, podman) on Debian 12 or a system that has them.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
# shellcheck source=scripts/apt.sh
. scripts/apt.sh

usage() { sed -n '2,/^set -euo/{/^set -euo/d; s/^# \{0,1\}//; p}' "$0"; }

readonly SUITE=bookworm
readonly USER_NAME=oar-tiles USER_ID=10001 DATA_DIR=/data
readonly DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
readonly DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
readonly MAX_DAYS=${OAR_TILES_IMAGE_BASE_MAX_DAYS:-7}
readonly CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/oar-tiles/image-base
# Raise when the way the Debian layer is made changes in a way its other inputs do not show.
readonly BASE_RECIPE=1

binary='' tag='' out=target/image store=1 refresh=0
while (($#)); do
    case $1 in
        --binary) binary=${2:?--binary needs a path}; shift 2 ;;
        --tag) tag=${2:?--tag needs a tag}; shift 2 ;;
        --out) out=${2:?--out needs a folder}; shift 2 ;;
        --no-store) store=0; shift ;;
        --refresh-base) refresh=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see scripts/image.sh --help)" ;;
    esac
done
[[ $MAX_DAYS =~ ^[0-9]+$ ]] || die "OAR_TILES_IMAGE_BASE_MAX_DAYS must be a whole number of days, not '$MAX_DAYS'"
((EUID == 0)) || die "run as root: mmdebstrap makes the root file system with files of other owners"

started=$SECONDS
PATH=$PATH:/usr/sbin:/sbin

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v mmdebstrap >/dev/null 2>&1 || missing+=(mmdebstrap)
command -v umoci >/dev/null 2>&1 || missing+=(umoci)
{ command -v strip && command -v objdump; } >/dev/null 2>&1 || missing+=(binutils)
command -v flock >/dev/null 2>&1 || missing+=(util-linux)
((store == 0)) || command -v podman >/dev/null 2>&1 || missing+=(podman)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"

# --- what the image says about itself -----------------------------------------------------------
version=$(awk -F'"' '/^\[/ { package = ($0 == "[package]") } package && /^version *=/ { print $2; exit }' Cargo.toml)
[[ -n $version ]] || die "no version found in the [package] table of Cargo.toml"
tag=${tag:-$version}
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "'$tag' is not a valid image tag"
if revision=$(git rev-parse HEAD 2>/dev/null); then
    git diff --quiet HEAD -- 2>/dev/null || revision+=-dirty
    commit_time=$(git log -1 --format=%ct)
else
    revision=unknown
    commit_time=
fi
source_url=${OAR_TILES_IMAGE_SOURCE:-$(git remote get-url origin 2>/dev/null || true)}
# A remote's URL may carry credentials (https://user:token@host/…): never put them in a label.
source_url=$(sed -E 's#^([a-z+]+://)[^/@]*@#\1#' <<<"$source_url")
if [[ -z $source_url ]]; then
    source_url="unknown: built from a checkout without a git remote (set OAR_TILES_IMAGE_SOURCE)"
    log "warning: no git remote 'origin' and no OAR_TILES_IMAGE_SOURCE: the source label says so"
fi
# A clean checkout's image is dated by its commit, so the same commit and Debian layer make the
# same image; a dirty one by now.
if [[ -n $commit_time && $revision != *-dirty ]]; then created_epoch=$commit_time; else created_epoch=$(date +%s); fi
created=$(date -u -d "@$created_epoch" +%Y-%m-%dT%H:%M:%SZ)

# --- the binary ---------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/oar-tiles-image.XXXXXX")
# apt, inside mmdebstrap, downloads as the user _apt into the new root below this folder.
chmod 0755 "$work"
trap 'rm -rf "$work"' EXIT
if [[ -z $binary ]]; then
    command -v cargo >/dev/null 2>&1 \
        || die "cargo not found: install Rust (https://rustup.rs), or pass --binary PATH"
    log "building the release binary (cargo build --release --locked)"
    cargo build --release --locked >&2 || die "cargo build --release --locked failed (see above)"
    binary=${CARGO_TARGET_DIR:-target}/release/oar-tiles
fi
[[ -f $binary && -x $binary ]] || die "no executable at $binary"
mkdir -p "$work/app/usr/local/bin"
strip -o "$work/app/usr/local/bin/oar-tiles" "$binary" || die "strip $binary failed"
chmod 0755 "$work/app/usr/local/bin/oar-tiles"

# --- the Debian layer, cached ----------------------------------------------------------------------
packages=(ca-certificates)
dpkg_filters=(
    'path-exclude=/usr/share/man/*'
    'path-exclude=/usr/share/doc/*' 'path-include=/usr/share/doc/*/copyright'
    'path-exclude=/usr/share/locale/*' 'path-include=/usr/share/locale/locale.alias'
    'path-exclude=/usr/share/info/*' 'path-exclude=/usr/share/lintian/*'
)
sources=(
    "deb $DEBIAN_MIRROR $SUITE main"
    "deb $DEBIAN_MIRROR $SUITE-updates main"
    "deb $DEBIAN_SECURITY_MIRROR $SUITE-security main"
)
key=$(printf '%s\n' "$BASE_RECIPE" "$SUITE" essential "${packages[@]}" "${dpkg_filters[@]}" \
    "${sources[@]}" "$USER_NAME:$USER_ID:$DATA_DIR" | sha256sum | cut -c1-16)
base=$CACHE/$key

# The root file system as a layer tarball, made by mmdebstrap into a folder and completed there.
make_base() {
    local root=$work/root layer=$work/base.tar dpkgopts=() filter
    for filter in "${dpkg_filters[@]}"; do dpkgopts+=("--dpkgopt=$filter"); done
    log "making the Debian $SUITE root file system with mmdebstrap (once per $MAX_DAYS days; about a minute)"
    # merged-usr: /bin and friends are links made before dpkg runs, so the usrmerge package (and
    # the Perl it needs, 50 MB) is not installed to make them.
    mmdebstrap --mode=root --variant=essential --include="$(IFS=,; echo "${packages[*]}")" \
        --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr "${dpkgopts[@]}" \
        "$SUITE" "$root" "${sources[@]}" >&2 \
        || die "mmdebstrap could not make the root file system (see above): check that $DEBIAN_MIRROR answers"
    # Written, not useradd'ed: the same entries every time, with no date of creation in them.
    echo "$USER_NAME:x:$USER_ID:$USER_ID:oar-tiles:$DATA_DIR:/usr/sbin/nologin" >>"$root/etc/passwd"
    echo "$USER_NAME:x:$USER_ID:" >>"$root/etc/group"
    echo "$USER_NAME:!:0::::::" >>"$root/etc/shadow"
    echo "$USER_NAME:!::" >>"$root/etc/gshadow"
    install -d -m 0755 -o "$USER_ID" -g "$USER_ID" "$root$DATA_DIR"
    # shellcheck disable=SC2016 # dpkg-query's format, not the shell's
    chroot "$root" dpkg-query -W -f='${Package} ${Version}\n' >"$work/packages.txt" \
        || die "cannot list the packages of the new root file system"
    glibc=$(awk '$1 == "libc6" { sub(/-.*/, "", $2); print $2 }' "$work/packages.txt")
    [[ -n $glibc ]] || die "the new root file system has no libc6"
    # A runtime mounts /dev, /proc and /sys itself: the image keeps only the empty folders; no
    # device node, no apt list or log of the build.
    find "$root/dev" -mindepth 1 -delete
    rm -rf "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/* "$root/var/log"/*.log
    tar --sort=name --numeric-owner -C "$root" -cf "$layer" . || die "cannot pack the root file system"
    rm -rf "$root"
    mkdir "$work/base"
    if ! { umoci init --layout "$work/base/layout" && umoci new --image "$work/base/layout:base" \
        && umoci raw add-layer --image "$work/base/layout:base" \
            --history.created_by "mmdebstrap --variant=essential --include=${packages[*]} $SUITE" "$layer"; } >&2; then
        die "umoci could not make the base image layout"
    fi
    mv "$work/packages.txt" "$work/base/packages.txt"
    stat -c %s "$layer" >"$work/base/layer-bytes"
    rm -f "$layer"
    # Written last: its presence says the folder is complete, its date how old it is.
    echo "$glibc" >"$work/base/glibc"
    rm -rf "$base.new" && mv "$work/base" "$base.new"
    rm -rf "$base" && mv "$base.new" "$base"
    # Older recipes' layers are of no further use.
    find "$CACHE" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name .lock -exec rm -rf {} +
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 || die "cannot lock $CACHE/.lock"
if ((refresh)) || [[ ! -f $base/glibc ]] || (($(date +%s) - $(stat -c %Y "$base/glibc") >= MAX_DAYS * 86400)); then
    make_base
else
    log "using the cached Debian layer $base (made $(date -r "$base/glibc" '+%F %R'))"
fi

# The image is bookworm's glibc: a binary linked on a newer system (Ubuntu 24.04) would not start.
glibc=$(cat "$base/glibc")
needed=$(objdump -T "$work/app/usr/local/bin/oar-tiles" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)
if [[ -n $needed && $(printf '%s\n' "$needed" "$glibc" | sort -V | tail -1) != "$glibc" ]]; then
    die "$binary needs glibc $needed, the image's Debian $SUITE has $glibc: build it on Debian 12 (or an older glibc)"
fi

# --- the image ----------------------------------------------------------------------------------
log "adding the binary and the configuration"
layout=$work/layout
cp -a "$base/layout" "$layout"
flock -u 9
# Owned by root and dated by the commit: the same binary makes the same layer.
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$created_epoch" --no-recursion \
    -C "$work/app" -cf "$work/app.tar" ./usr ./usr/local ./usr/local/bin ./usr/local/bin/oar-tiles \
    || die "cannot pack the binary"
labels=(
    "org.opencontainers.image.title=oar-tiles"
    "org.opencontainers.image.description=$(awk -F'"' '/^description *=/ { print $2; exit }' Cargo.toml)"
    "org.opencontainers.image.version=$version"
    "org.opencontainers.image.revision=$revision"
    "org.opencontainers.image.source=$source_url"
    "org.opencontainers.image.licenses=$(awk -F'"' '/^license *=/ { print $2; exit }' Cargo.toml)"
    "org.opencontainers.image.created=$created"
)
config=(
    --config.user "$USER_ID:$USER_ID"
    --config.entrypoint /usr/local/bin/oar-tiles --config.cmd=--help
    --config.workingdir "$DATA_DIR"
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    --config.env "HOME=$DATA_DIR"
    --config.stopsignal SIGTERM
    --created "$created" --history.created "$created"
)
for label in "${labels[@]}"; do config+=(--config.label "$label"); done
# Named as `podman save` names its images, so `podman load` and `skopeo copy` know it as oar-tiles:TAG.
ref=oar-tiles:$tag
if ! { umoci raw add-layer --image "$layout:base" --tag "$ref" --history.created "$created" \
    --history.created_by "scripts/image.sh: /usr/local/bin/oar-tiles ($revision)" "$work/app.tar" \
    && umoci config --image "$layout:$ref" "${config[@]}" \
    && umoci rm --image "$layout:base" \
    && umoci gc --layout "$layout"; } >&2; then
    die "umoci could not add the binary and the configuration"
fi

mkdir -p "$out"
archive=$(cd "$out" && pwd)/oar-tiles-$tag.oci.tar
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$created_epoch" -C "$layout" \
    -cf "$archive.new" oci-layout index.json blobs || die "cannot write $archive"
mv "$archive.new" "$archive"

stored="not in podman's store"
if ((store)); then
    log "loading it into podman's store as oar-tiles:$tag"
    name=localhost/oar-tiles:$tag
    previous=$(podman image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
    # The archive is the product; the store is a convenience that some machines cannot offer (a
    # root file system on overlayfs, as in a container or chroot, refuses podman's overlay driver).
    if id=$(podman pull -q "oci-archive:$archive" 2>"$work/podman.err") && podman tag "$id" "$name" 2>>"$work/podman.err"; then
        stored=$name
        # The image this tag named before is of no use once untagged; one still in use stays.
        if [[ -n $previous && $previous != "$id"* ]]; then podman rmi "$previous" >/dev/null 2>&1 || true; fi
    else
        log "warning: podman could not store the image here: $(grep -v '^ *$' "$work/podman.err" | tail -1)"
        log "warning: the archive is complete: load it where podman works with 'podman load -i $archive'"
    fi
fi

app_bytes=$(stat -c %s "$work/app/usr/local/bin/oar-tiles")
log "done in $((SECONDS - started)) s: $(du -m "$archive" | cut -f1) MB compressed, $((($(cat "$base/layer-bytes") + app_bytes) / 1000000)) MB unpacked; $stored; revision $revision"
echo "$archive"
