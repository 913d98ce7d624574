#!/usr/bin/env bash
# Builds the local test image `kvstore-busybox:latest` if Docker does not have it yet
# (no registry can be reached here, so nothing is pulled). The image is a root filesystem
# with Debian's statically linked busybox and a symlink per applet (sh, httpd, nc, sleep,
# wget, ...), imported with `docker import` and a default CMD. Safe to run every time and
# from several processes at once: a lock serialises builders, and a present image is kept.
set -euo pipefail

image="${1:-kvstore-busybox:latest}"

if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

lock="${TMPDIR:-/tmp}/kvstore-images.lock"
exec 9>"$lock"
flock 9
# Another builder may have finished while we waited for the lock.
if docker image inspect "$image" >/dev/null 2>&1; then
  exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"

# `apt-get download` fetches the .deb without installing it on the host; the package
# lists may be missing on a fresh machine, so refresh them once if the first try fails.
if ! apt-get download busybox-static >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  apt-get download busybox-static >/dev/null
fi

mkdir pkg rootfs
dpkg-deb -x busybox-static_*.deb pkg
mkdir -p rootfs/bin rootfs/sbin rootfs/usr/bin rootfs/usr/sbin rootfs/tmp rootfs/www rootfs/etc rootfs/proc rootfs/sys rootfs/dev
cp pkg/bin/busybox rootfs/bin/busybox
chmod 1777 rootfs/tmp
# One symlink per applet the binary reports, all in /bin (PATH lookups and `sh -c` work).
for applet in $(rootfs/bin/busybox --list); do
  [ "$applet" = busybox ] && continue
  ln -sf busybox "rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > rootfs/etc/passwd
echo 'root:x:0:' > rootfs/etc/group
echo 'kvstore-busybox' > rootfs/www/index.html

tar -C rootfs -cf rootfs.tar .
docker import \
  --change 'CMD ["/bin/sh"]' \
  --change 'ENV PATH=/bin:/sbin:/usr/bin:/usr/sbin' \
  rootfs.tar "$image" >/dev/null
echo "images: built $image" >&2
