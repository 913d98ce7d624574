#!/usr/bin/env bash
# Builds the local image `kvstore-control-plane:latest` for docker-compose.yml without a
# registry: a root filesystem with the workspace's binaries (kvstore, apiserver, agent,
# cluster) in /bin plus exactly the shared libraries `ldd` says they load, imported with
# `docker import` (no `FROM`, nothing pulled). Run after `cargo build --workspace --bins`.
#   docker/build-image.sh [IMAGE]      (BIN_DIR=... to take the binaries from elsewhere)
set -euo pipefail

image="${1:-kvstore-control-plane:latest}"
bin_dir="${BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/kvstore/target}/debug}"
bins=(kvstore apiserver agent cluster)
for b in "${bins[@]}"; do
  if [ ! -x "$bin_dir/$b" ]; then
    echo "build-image: $bin_dir/$b is missing; run \`cargo build --workspace --bins\` first" >&2
    exit 1
  fi
done

# Several builders (parallel tests) serialise on a lock; each imports the current binaries.
lock="${TMPDIR:-/tmp}/kvstore-control-plane-image.lock"
exec 9>"$lock"
flock 9

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
root="$work/rootfs"
mkdir -p "$root/bin" "$root/tmp" "$root/etc" "$root/seed" "$root/data" "$root/proc" "$root/sys" "$root/dev"
chmod 1777 "$root/tmp"
for b in "${bins[@]}"; do
  cp "$bin_dir/$b" "$root/bin/$b"
  # Every library the binary loads (and the dynamic loader), at the same path.
  ldd "$bin_dir/$b" | awk '/=> \//{print $3} /^[ \t]*\/.*ld-linux/{print $1}' | while read -r lib; do
    real="$(readlink -f "$lib")"
    mkdir -p "$root$(dirname "$lib")"
    cp -n "$real" "$root$lib" 2>/dev/null || true
  done
done
echo 'root:x:0:0:root:/root:/bin/false' > "$root/etc/passwd"
echo 'root:x:0:' > "$root/etc/group"
printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"

tar -C "$root" -cf "$work/rootfs.tar" .
docker import \
  --change 'ENV PATH=/bin' \
  --change 'ENV RUST_LOG=info' \
  --change 'ENTRYPOINT []' \
  --change 'CMD ["/bin/cluster", "--help"]' \
  "$work/rootfs.tar" "$image" >/dev/null
echo "build-image: built $image from $bin_dir" >&2
