#!/usr/bin/env bash
# Build (or report the cache key of) the Debian 12 guest image of `make test-vm`.
#
#   tools/vm/build-image.sh --key          print the cache key (hash of what goes into the image)
#   tools/vm/build-image.sh --packages     print the guest's package list
#   tools/vm/build-image.sh OUT_DIR        build OUT_DIR/{rootfs.img,vmlinuz,initrd.img,image.info}
#
# Only Debian packages, through debootstrap, from the mirror apt on this machine already uses
# (read from apt's sources at run time; LBLAB_VM_MIRROR overrides, e.g. on an Ubuntu host). The
# image holds the stock kernel (linux-image-amd64), Open vSwitch, Mininet, everything
# tools/setup.sh installs, and lblab's Python venv (/opt/lblab-venv, requirements.txt pinned,
# built in the chroot). lblab itself is not in the image: the guest mounts the checkout
# read-only at /lblab, and a .pth file in the venv makes it importable.
set -euo pipefail
cd "$(dirname "$0")/../.."

SUITE=bookworm
VENV=/opt/lblab-venv
# What the kernel lane needs on top of tools/setup.sh's list.
GUEST_PACKAGES=(linux-image-amd64 systemd-sysv udev kmod iproute2 openvswitch-switch mininet
                iperf3 iputils-ping ethtool python3 python3-venv ca-certificates)

setup_packages() {  # tools/setup.sh's PACKAGES=( ... ) array, so the two lists cannot drift
  local block
  block=$(sed -n '/^PACKAGES=(/,/)/p' tools/setup.sh)
  [ -n "$block" ] || { echo "no PACKAGES=( ... ) in tools/setup.sh" >&2; return 1; }
  (eval "$block"; printf '%s\n' "${PACKAGES[@]}")
}

package_list() {
  { printf '%s\n' "${GUEST_PACKAGES[@]}"; setup_packages; } | sort -u
}

cache_key() {  # everything that changes the image's contents
  { echo "suite=$SUITE"; package_list; cat "$0" requirements.txt; } | sha256sum | cut -c1-16
}

case "${1:-}" in
  --key) cache_key; exit 0 ;;
  --packages) package_list; exit 0 ;;
  ""|-*) echo "usage: $0 --key | --packages | OUT_DIR" >&2; exit 2 ;;
esac
OUT=$1

if [ "$(id -u)" -ne 0 ]; then echo "building the VM image needs root (debootstrap)" >&2; exit 1; fi

retry() {  # network steps: registries hiccup, CI must not
  local n=1
  until "$@"; do
    if [ $n -ge 4 ]; then echo "failed after $n attempts: $*" >&2; return 1; fi
    echo "retrying in $((n * 5))s: $*" >&2; sleep $((n * 5)); n=$((n + 1))
  done
}

debian_mirror() {  # the Debian mirror apt uses here, for the main (non-security) suite
  if [ -n "${LBLAB_VM_MIRROR:-}" ]; then echo "$LBLAB_VM_MIRROR"; return; fi
  local f uri
  # deb822 .sources: the URIs of a stanza whose Suites include a Debian release name.
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    uri=$(awk 'BEGIN{RS=""; FS="\n"}
      { uris=""; suites=""; types="";
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { uris=$i; sub(/^URIs:[ \t]*/, "", uris) }
          if ($i ~ /^Suites:/) { suites=$i }
          if ($i ~ /^Types:/) { types=$i } }
        if (types ~ /(^|[ \t])deb([ \t]|$)/ && suites ~ /(bookworm|trixie|bullseye|stable)([ \t]|$)/ \
            && uris !~ /security/) { split(uris, u, /[ \t]+/); print u[1]; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  # one-line format
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                 if ($(i+1) ~ /^(bookworm|trixie|bullseye|stable)$/ && $i !~ /security/) {
                   print $i; exit } }' "$f")
    [ -n "$uri" ] && { echo "$uri"; return; }
  done
  echo "no Debian mirror found in apt's sources (set LBLAB_VM_MIRROR=<Debian mirror URL>)" >&2
  return 1
}

MIRROR=$(debian_mirror)
WORK="$OUT.build.$$"
ROOT="$WORK/root"

unmount_under() {  # only mounts inside our own build folder, deepest first
  local m
  for m in $(awk -v p="$(realpath -m "$1")/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
}
cleanup() {
  unmount_under "$WORK"
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$WORK/debs"
mapfile -t PKGS < <(package_list)
t0=$(date +%s)
echo "vm image: debootstrap $SUITE (${#PKGS[@]} packages + dependencies) from $MIRROR"
bootstrap() {
  unmount_under "$ROOT"; rm -rf --one-file-system "$ROOT"  # a failed try leaves a half root
  debootstrap --variant=minbase --cache-dir="$(realpath "$WORK/debs")" \
    --include="$(IFS=,; echo "${PKGS[*]}")" "$SUITE" "$ROOT" "$MIRROR" > "$WORK/debootstrap.log" 2>&1 \
    || { tail -n 30 "$WORK/debootstrap.log" >&2; return 1; }
}
retry bootstrap
t1=$(date +%s)
echo "vm image: debootstrap took $((t1 - t0))s ($(du -sm "$ROOT" | cut -f1) MiB)"

# --- configuration -------------------------------------------------------------------------
echo lblab-vm > "$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tlblab-vm\n' > "$ROOT/etc/hosts"
cat > "$ROOT/etc/fstab" <<'EOF'
/dev/vda  /     ext4   rw,noatime            0 1
tmpfs     /tmp  tmpfs  rw,nosuid,nodev,mode=1777  0 0
EOF
# The checkout's mount point; the guest runner mounts the 9p share there (read-only).
mkdir -p "$ROOT/lblab"
# Policy for package scripts in the chroot: start no services.
printf '#!/bin/sh\nexit 101\n' > "$ROOT/usr/sbin/policy-rc.d"; chmod +x "$ROOT/usr/sbin/policy-rc.d"

# The test unit: mounts the checkout, runs tools/vm/guest-run.sh from it with its output on
# ttyS1 (the results port), and powers the guest off whatever happens.
cat > "$ROOT/usr/local/sbin/lblab-vm-boot" <<'EOF'
#!/bin/bash
exec >/dev/ttyS1 2>&1
stty -F /dev/ttyS1 -onlcr 2>/dev/null || true
echo "LBLAB-VM: guest up, kernel $(uname -r)"
modprobe -a 9pnet_virtio 9p || true
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 lblab /lblab; then
  echo "LBLAB-VM-RESULT: FAIL (could not mount the checkout)"; exit 1
fi
exec /bin/bash /lblab/tools/vm/guest-run.sh
EOF
chmod +x "$ROOT/usr/local/sbin/lblab-vm-boot"
cat > "$ROOT/etc/systemd/system/lblab-vm-test.service" <<'EOF'
[Unit]
Description=lblab kernel-lane tests (results on ttyS1)
After=local-fs.target systemd-udevd.service systemd-modules-load.service
SuccessAction=poweroff-force
FailureAction=poweroff-force

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/lblab-vm-boot
TimeoutStartSec=infinity
StandardInput=null

[Install]
WantedBy=multi-user.target
EOF
chroot "$ROOT" systemctl enable lblab-vm-test.service >/dev/null 2>&1 || \
  ln -sf /etc/systemd/system/lblab-vm-test.service \
    "$ROOT/etc/systemd/system/multi-user.target.wants/lblab-vm-test.service"
# Nothing else to start at boot: services the tests start themselves (OVS, DNS servers, nginx), and
# gettys and timers that would only eat the emulated CPU.
for unit in openvswitch-switch.service ovsdb-server.service ovs-vswitchd.service \
            unbound.service unbound-resolvconf.service nsd.service nginx.service bird.service \
            apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
            fstrim.timer man-db.timer dpkg-db-backup.timer systemd-tmpfiles-clean.timer \
            getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyS1.service; do
  ln -sf /dev/null "$ROOT/etc/systemd/system/$unit"
done

# --- lblab's Python venv, in the chroot ------------------------------------------------------
echo "vm image: building $VENV (requirements.txt) in the chroot"
mount -t proc proc "$ROOT/proc"
cp requirements.txt "$ROOT/tmp/lblab-requirements.txt"
# pip in the chroot trusts what this machine trusts (a TLS-inspecting proxy's CA, say).
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/tmp/host-ca.crt"
chroot_env=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
            PIP_CERT=/tmp/host-ca.crt PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
            PIP_DEFAULT_TIMEOUT=120)
for v in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  [ -n "${!v:-}" ] && chroot_env+=("$v=${!v}")
done
"${chroot_env[@]}" chroot "$ROOT" /usr/bin/python3 -m venv --system-site-packages "$VENV"
retry "${chroot_env[@]}" chroot "$ROOT" "$VENV/bin/pip" install -q -r /tmp/lblab-requirements.txt
"${chroot_env[@]}" chroot "$ROOT" "$VENV/bin/python" -c \
  'import site, sys; open(site.getsitepackages()[0] + "/lblab-checkout.pth", "w").write("/lblab\n")'
cat > "$ROOT/usr/local/bin/lblab" <<EOF
#!/bin/sh
exec $VENV/bin/python -m experiments "\$@"
EOF
chmod +x "$ROOT/usr/local/bin/lblab"
rm -f "$ROOT/tmp/host-ca.crt" "$ROOT/tmp/lblab-requirements.txt"
umount "$ROOT/proc"
t2=$(date +%s)
echo "vm image: venv took $((t2 - t1))s"

# --- shrink, extract the kernel, make the ext4 image ---------------------------------------
chroot "$ROOT" apt-get clean >/dev/null 2>&1 || true
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/usr/share/doc/* \
       "$ROOT"/usr/share/man/* "$ROOT"/usr/share/locale/*
mkdir -p "$WORK/out"
vmlinuz=$(ls "$ROOT"/boot/vmlinuz-* | sort -V | tail -n 1)
kver=${vmlinuz##*/vmlinuz-}
if [ ! -f "$ROOT/boot/initrd.img-$kver" ]; then
  mount -t proc proc "$ROOT/proc"
  chroot "$ROOT" update-initramfs -c -k "$kver" >/dev/null
  umount "$ROOT/proc"
fi
cp "$vmlinuz" "$WORK/out/vmlinuz"
cp "$ROOT/boot/initrd.img-$kver" "$WORK/out/initrd.img"
used_mb=$(du -sm "$ROOT" | cut -f1)
size_mb=$((used_mb + used_mb / 5 + 1024))  # sparse; the headroom is for the guest's writes
mkfs.ext4 -q -F -L lblab-root -E root_owner=0:0 -d "$ROOT" "$WORK/out/rootfs.img" "${size_mb}M"
t3=$(date +%s)
{
  echo "suite: $SUITE"
  echo "kernel: $kver"
  echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "rootfs_mib: $used_mb"
  echo "seconds: debootstrap $((t1 - t0)), venv $((t2 - t1)), image $((t3 - t2)), total $((t3 - t0))"
  echo "packages: ${PKGS[*]}"
} > "$WORK/out/image.info"
echo "vm image: ext4 image ${size_mb} MiB (${used_mb} MiB used), kernel $kver; built in $((t3 - t0))s"

rm -rf "$OUT"
mv "$WORK/out" "$OUT"
