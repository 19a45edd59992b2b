#!/usr/bin/env bash
# Builds the sus-node container image FROM scratch out of this project's own build output: the
# sus-node and sus binaries, the shared libraries they link (as ldd lists them on this machine),
# the reference data, and nothing else. No base image is pulled, so it works on an engine with
# no registry.
#
#   deploy/image/build.sh [--profile release|debug] [--tag sus-node:latest] [--no-cargo]
#                         [--bin-dir DIR]
#
# --no-cargo uses binaries already built under target/<profile>/ (tests build debug ones), or
# under --bin-dir.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
profile=release tag=sus-node:latest cargo_build=1 bin_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --no-cargo) cargo_build=0; shift ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
target="${CARGO_TARGET_DIR:-$root/target}"
case "$profile" in
  release) flag=(--release) ;;
  debug) flag=() ;;
  *) echo "build.sh: --profile must be release or debug" >&2; exit 2 ;;
esac
if [ "$cargo_build" = 1 ]; then
  (cd "$root" && cargo build --locked "${flag[@]}" -p sus-node -p sus-client --bin sus-node --bin sus)
fi
bin_dir="${bin_dir:-$target/$profile}"
bins=("$bin_dir/sus-node" "$bin_dir/sus")
for b in "${bins[@]}"; do
  [ -x "$b" ] || { echo "build.sh: $b is missing (build it, or drop --no-cargo)" >&2; exit 1; }
done

ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/data" "$ctx/rootfs/etc"
chmod 1777 "$ctx/rootfs/tmp"
cp "${bins[@]}" "$ctx/rootfs/usr/local/bin/"
# Shared libraries (and the dynamic loader) at the paths the binaries expect.
for lib in $(ldd "${bins[@]}" | grep -v ':$' | grep -o '/[^ ]*' | sort -u); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
cp -r "$root/refdata" "$ctx/rootfs/refdata"
rm -rf "$ctx/rootfs/refdata/tools"
# Name lookups for the resolver in libc: files first, then DNS (container names).
printf 'hosts: files dns\n' > "$ctx/rootfs/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/usr/local/bin/sus-node\nsus:x:10001:10001:sus:/data:/usr/local/bin/sus-node\n' > "$ctx/rootfs/etc/passwd"
printf 'root:x:0:\nsus:x:10001:\n' > "$ctx/rootfs/etc/group"
cp "$root/deploy/image/Dockerfile" "$ctx/Dockerfile"
# (The legacy builder's deprecation notice goes to stderr: show it only if the build fails.)
if ! docker build -q -t "$tag" "$ctx" >"$ctx/build.log" 2>&1; then
  cat "$ctx/build.log" >&2
  exit 1
fi
echo "built $tag ($profile; $(du -sh "$ctx/rootfs" | cut -f1) uncompressed)"
