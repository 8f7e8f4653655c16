#!/usr/bin/env bash
# Makes the local base image tether-base:bookworm (Debian 12 minbase plus
# ca-certificates) when it is not there yet, for machines that cannot pull
# debian:bookworm-slim. Uses debootstrap against the Debian mirror apt already
# uses (or $DEBIAN_MIRROR), then `docker import`. About 25 s; cached as a
# Docker image, so a second run returns at once.
#
#   deploy/compose/base-image.sh            # make it if absent
#   deploy/compose/base-image.sh --force    # make it again
#   TETHER_BASE_IMAGE=name:tag ...          # another image name
#
# Needs root (debootstrap does); installs debootstrap with apt-get if missing.
set -euo pipefail

image=${TETHER_BASE_IMAGE:-tether-base:bookworm}
suite=bookworm

force=0
case "${1:-}" in
  --force) force=1 ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

if ((!force)) && docker image inspect "$image" >/dev/null 2>&1; then
  echo "base-image: $image is present"
  exit 0
fi

sudo=()
if ((EUID != 0)); then
  if command -v sudo >/dev/null; then
    sudo=(sudo)
  else
    echo "base-image: debootstrap needs root (or sudo)" >&2
    exit 1
  fi
fi

if ! command -v debootstrap >/dev/null; then
  echo "base-image: installing debootstrap"
  "${sudo[@]}" apt-get install -y debootstrap >/dev/null ||
    { "${sudo[@]}" apt-get update >/dev/null && "${sudo[@]}" apt-get install -y debootstrap >/dev/null; }
fi

# The first mirror that apt uses for "$suite" itself (not -security or
# -updates), from one-line .list files or deb822 .sources files.
find_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    awk -v suite="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    # Stanzas are separated by blank lines; keep the URIs of one whose
    # Types has deb and whose Suites has "$suite".
    awk -v suite="$suite" '
      function flush() {
        if (deb && has_suite && uris != "") { split(uris, u, " "); print u[1]; found = 1 }
        deb = 0; has_suite = 0; uris = ""
      }
      /^[[:space:]]*$/ { flush(); if (found) exit; next }
      /^#/ { next }
      tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
      tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
      tolower($1) == "uris:" { uris = ""; for (i = 2; i <= NF; i++) uris = uris " " $i }
      END { if (!found) flush() }' "$f"
  done
}

mirror=${DEBIAN_MIRROR:-$(find_mirror | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}

dir=$(mktemp -d /var/tmp/tether-base.XXXXXX)
cleanup() {
  # debootstrap mounts /proc and /sys inside the tree; never delete through
  # a mount left behind by an interrupted run.
  local m
  for m in $(awk -v d="$dir" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
    "${sudo[@]}" umount -l "$m" || true
  done
  "${sudo[@]}" rm -rf --one-file-system "$dir"
}
trap cleanup EXIT

start=$SECONDS
echo "base-image: debootstrap --variant=minbase $suite from $mirror"
if ! "${sudo[@]}" debootstrap --variant=minbase --include=ca-certificates \
  "$suite" "$dir/root" "$mirror" >"$dir/debootstrap.log" 2>&1; then
  tail -n 20 "$dir/debootstrap.log" >&2
  echo "base-image: debootstrap failed" >&2
  exit 1
fi

# Nothing the image needs: downloaded packages, package lists, logs.
"${sudo[@]}" rm -rf "$dir/root/var/cache/apt/archives/"*.deb \
  "$dir/root/var/lib/apt/lists/"* "$dir/root/var/log/"* \
  "$dir/root/var/cache/debconf/"*-old

"${sudo[@]}" tar -C "$dir/root" --numeric-owner -c . |
  docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $suite ($mirror) + ca-certificates" \
    - "$image" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$image")
echo "base-image: $image made in $((SECONDS - start))s ($((size / 1000000)) MB)"
