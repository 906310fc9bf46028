#!/usr/bin/env bash
# Builds the tiny guest of the real-VM tests from Debian packages only and
# prints the directory that holds it (vmlinux, initrd.gz, disk.qcow2).
#
#   tests/vm/build-guest.sh [CACHE_DIR]      (default /var/cache/tern-test-vm)
#
# - kernel: Debian's linux-image (the package linux-image-amd64 depends on),
#   fetched with `apt-get download` and unpacked with dpkg-deb, not installed;
#   the uncompressed ELF `vmlinux` is cut out of the bzImage, so QEMU boots it
#   through PVH and skips the in-guest XZ decompression (3-4 s under TCG);
# - initramfs: busybox-static, the virtio modules in dependency order
#   (modules.dep), and /init: network through udhcpc (kept running, renews),
#   busybox httpd on :8080 serving /index.html (names the host: its SMBIOS
#   serial, else vm-<uuid>), /cgi-bin/burn?N (N loop turns of CPU work) and
#   /cgi-bin/slow?N (answers after N s), acpid so `virsh shutdown` works;
# - disk.qcow2: 16 MiB qcow2 starting with MASTER-DISK-CONTENT, the template's
#   disk (clones are overlays on it).
#
# The result is cached under CACHE_DIR/<kernel package>/<hash of this
# script>: a rerun with the same kernel and script prints the directory at
# once. Needs busybox-static, cpio, xz-utils, qemu-utils (scripts/deps.sh).
set -euo pipefail

CACHE=${1:-/var/cache/tern-test-vm}
SELF=$(readlink -f "$0")
MODS="virtio_net virtio_balloon virtio_blk virtio_pci button evdev"

KPKG=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
if [ -z "$KPKG" ]; then
    # No package lists: use a kernel already unpacked in the cache.
    for k in "$CACHE"/linux-image-*; do [ -d "$k" ] && KPKG=$(basename "$k"); done
fi
[ -n "$KPKG" ] || {
    echo "build-guest: cannot tell which linux-image package to use" >&2
    exit 1
}
KDIR=$CACHE/$KPKG
OUT=$KDIR/$(sha256sum "$SELF" | cut -c1-12)
if [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initrd.gz" ] && [ -s "$OUT/disk.qcow2" ]; then
    echo "$OUT"
    exit 0
fi
mkdir -p "$KDIR"
exec 9>"$KDIR/.lock"
flock 9
if [ -s "$OUT/vmlinux" ] && [ -s "$OUT/initrd.gz" ] && [ -s "$OUT/disk.qcow2" ]; then
    echo "$OUT"
    exit 0
fi

# 1. The kernel package, unpacked once per kernel.
if [ ! -d "$KDIR/kroot/lib/modules" ]; then
    work=$(mktemp -d)
    (cd "$work" && apt-get download -q "$KPKG" >/dev/null 2>&1) || {
        rm -rf "$work"
        echo "build-guest: apt-get download $KPKG failed" >&2
        exit 1
    }
    rm -rf "$KDIR/kroot.tmp"
    dpkg-deb -x "$work"/"$KPKG"_*.deb "$KDIR/kroot.tmp"
    rm -rf "$work"
    mv "$KDIR/kroot.tmp" "$KDIR/kroot"
fi
KVER=$(find "$KDIR/kroot/lib/modules" -mindepth 1 -maxdepth 1 -printf '%f\n' | head -1)
MDIR=$KDIR/kroot/lib/modules/$KVER

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 2. vmlinux: the ELF inside the bzImage (XZ stream), bootable through PVH.
if [ ! -s "$KDIR/vmlinux" ]; then
    vmlinuz=$KDIR/kroot/boot/vmlinuz-$KVER
    off=$(grep -abo $'\xfd7zXZ\x00' "$vmlinuz" | head -1 | cut -d: -f1)
    tail -c +$((off + 1)) "$vmlinuz" | xz -dc >"$tmp/vmlinux" 2>/dev/null || true
    [ "$(head -c 4 "$tmp/vmlinux" | od -An -c | tr -d ' ')" = '177ELF' ] || {
        echo "build-guest: no ELF kernel inside $vmlinuz" >&2
        exit 1
    }
    mv "$tmp/vmlinux" "$KDIR/vmlinux"
fi

# 3. The initramfs.
R=$tmp/root
mkdir -p "$R"/{bin,dev,proc,sys,run,tmp,www/cgi-bin,etc/acpi/PWRF,usr/share/udhcpc,lib/modules}
cp /bin/busybox "$R/bin/busybox"
file "$R/bin/busybox" 2>/dev/null | grep -q 'dynamically' && {
    echo "build-guest: /bin/busybox is not static (install busybox-static)" >&2
    exit 1
}

# Modules with their dependencies, dependencies first. The package has no
# modules.dep (depmod runs at install), so each module's own "depends=" field
# (its .modinfo section) is read.
order=()
add_mod() { # name
    local m=$1 path dep
    for x in "${order[@]:-}"; do [ "$x" = "$m" ] && return 0; done
    path=$(grep -E "(^|/)${m//_/[-_]}\.ko(\.[a-z]+)?$" "$MDIR/modules.order" | head -1) || true
    # Built in, or absent: nothing to load.
    [ -n "$path" ] && [ -f "$MDIR/$path" ] || return 0
    for dep in $(tr '\0' '\n' <"$MDIR/$path" | sed -n 's/^depends=//p' | head -1 | tr ',' ' '); do
        add_mod "$dep"
    done
    order+=("$m")
    cp "$MDIR/$path" "$R/lib/modules/$m.ko"
}
for m in $MODS; do add_mod "$m"; done
echo "${order[*]}" >"$R/etc/modules"

cat >"$R/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in $(cat /etc/modules); do
  insmod /lib/modules/$m.ko || echo "insmod $m failed" > /dev/console
done
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }
NAME=$(arg vmname); UUID=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null)
[ -n "$NAME" ] || NAME=$(cat /sys/class/dmi/id/product_serial 2>/dev/null)
case "$NAME" in ""|" "|"Not Specified") NAME=vm-$UUID;; esac
hostname "$NAME"; ip link set lo up; ip link set eth0 up
IP=$(arg vmip); GW=$(arg vmgw)
if [ -n "$IP" ]; then ip addr add "$IP" dev eth0; [ -n "$GW" ] && ip route add default via "$GW"
else udhcpc -i eth0 -s /usr/share/udhcpc/default.script -t 20 -T 1 -n -p /run/udhcpc.pid; fi
MAC=$(cat /sys/class/net/eth0/address); ADDR=$(ip -4 -o addr show dev eth0 | awk '{print $4}')
BASE=$(head -c 19 /dev/vda 2>/dev/null)
printf 'host=%s uuid=%s mac=%s addr=%s base=%s\n' "$NAME" "$UUID" "$MAC" "$ADDR" "$BASE" > /www/index.html
acpid -c /etc/acpi -l /dev/console
httpd -p 8080 -h /www
echo "GUEST-READY $(cat /proc/uptime) $(cat /www/index.html)" > /dev/console
while :; do sleep 3600; done
EOF

cat >"$R/www/cgi-bin/slow" <<'EOF'
#!/bin/sh
sleep ${QUERY_STRING:-1}
printf 'Content-Type: text/plain\r\n\r\n'; cat /www/index.html
EOF

# CPU work: N turns of a shell loop (~0.1 ms each under TCG).
cat >"$R/www/cgi-bin/burn" <<'EOF'
#!/bin/sh
n=${QUERY_STRING:-1000}
case "$n" in *[!0-9]*|"") n=1000;; esac
i=0; while [ $i -lt $n ]; do i=$((i+1)); done
printf 'Content-Type: text/plain\r\n\r\nburned %s ' "$n"; cat /www/index.html
EOF

cat >"$R/usr/share/udhcpc/default.script" <<'EOF'
#!/bin/sh
case "$1" in
  deconfig) [ -f /run/dhcp.ip ] || ip addr flush dev "$interface" ;;
  bound|renew)
    if [ "$(cat /run/dhcp.ip 2>/dev/null)" != "$ip/${mask:-24}" ]; then
      ip addr flush dev "$interface"
      ip addr add "$ip/${mask:-24}" dev "$interface"
      [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
      echo "$ip/${mask:-24}" > /run/dhcp.ip
    fi ;;
esac
exit 0
EOF

printf '#!/bin/sh\necho GUEST-POWEROFF >/dev/console; sync; poweroff -f\n' >"$R/etc/acpi/PWRF/00000080"
echo ok >"$R/www/healthz"
chmod +x "$R/init" "$R/www/cgi-bin/"* "$R/usr/share/udhcpc/default.script" "$R/etc/acpi/PWRF/00000080"

mkdir -p "$OUT.tmp"
(cd "$R" && find . | cpio -o -H newc --quiet | gzip -9) >"$OUT.tmp/initrd.gz"

# 4. The template's disk.
printf 'MASTER-DISK-CONTENT' >"$tmp/disk.raw"
truncate -s 16M "$tmp/disk.raw"
qemu-img convert -f raw -O qcow2 "$tmp/disk.raw" "$OUT.tmp/disk.qcow2"

ln -f "$KDIR/vmlinux" "$OUT.tmp/vmlinux" 2>/dev/null || cp "$KDIR/vmlinux" "$OUT.tmp/vmlinux"
echo "$KVER" >"$OUT.tmp/kernel-version"
rm -rf "$OUT"
mv "$OUT.tmp" "$OUT"
# Guests of older versions of this script, and of older kernels.
for old in "$KDIR"/*; do
    case "$(basename "$old")" in kroot | vmlinux | "$(basename "$OUT")") ;; *) rm -rf "$old" ;; esac
done
for old in "$CACHE"/linux-image-*; do
    [ "$old" = "$KDIR" ] || rm -rf "$old"
done
echo "$OUT"
