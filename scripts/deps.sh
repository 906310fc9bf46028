#!/usr/bin/env bash
# Installs the Debian packages tern needs to build, test, benchmark and run the
# demo, skipping those already present. The one place that lists them: add a
# package here with the reason in README.md.
set -euo pipefail

build=(meson ninja-build pkg-config gcc libev-dev libssl-dev libyaml-dev libjansson-dev libvirt-dev libesmtp-dev libcurl4-openssl-dev libmnl-dev)
test=(libcmocka-dev python3-pytest curl wrk clang clang-format libclang-rt-14-dev openssl prometheus chromium chromium-driver python3-selenium python3-aiosmtpd keepalived
    qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base busybox-static cpio xz-utils)
bench=(haproxy nginx-light libnginx-mod-stream)

want=("${build[@]}")
case "${1:-all}" in
build) ;;
demo) want+=(wrk) ;; # the demo's scaling loop is driven by wrk
test) want+=("${test[@]}") ;;
*) want+=("${test[@]}" "${bench[@]}") ;;
esac

missing=()
for p in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps: installing ${missing[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
# The Debian packages enable and start their services; the benchmarks run
# their own instances on other ports, so the system ones are not needed.
for svc in haproxy nginx prometheus keepalived; do
    if [[ " ${missing[*]} " == *" $svc"* ]] && command -v systemctl >/dev/null; then
        $sudo systemctl disable --now "$svc" >/dev/null 2>&1 || true
    fi
done
