#!/usr/bin/env bash
# `sudo make test-vm`: lblab's kernel-path tests inside a stock Debian 12 guest.
#
#  1. Host tools from apt (debootstrap, qemu-system-x86, e2fsprogs), only those missing.
#  2. The guest image, built once by tools/vm/build-image.sh and cached in
#     .cache/vm/<key>/ (key: hash of its package list, build script and requirements.txt).
#  3. qemu: KVM with -cpu host where a short probe boot shows it works, else TCG; always
#     -snapshot (the cached image never changes); the checkout read-only over 9p; the guest's
#     console to a log file, its test output on a second serial port, streamed here.
#  4. Pass/fail from the marker line the guest writes last ("LBLAB-VM-RESULT: PASS"); the
#     whole run sits under LBLAB_VM_TIMEOUT seconds. Nothing is left behind: qemu is killed by
#     PID and its run folder (overlay included) removed, on Ctrl-C too.
#
# Knobs: LBLAB_VM_ACCEL=kvm|tcg (skip the probe), LBLAB_VM_TIMEOUT (s, default 1500),
# LBLAB_VM_MEM (MiB, default 2560), LBLAB_VM_MIRROR (Debian mirror, default: apt's),
# LBLAB_VM_EXPERIMENTS=gre-mtu,vip-modes (after the tests, run these experiments at --quick
# size on the kernel mechanisms and print their summaries; none by default).
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "make test-vm needs root (debootstrap, qemu): run it with sudo" >&2
  exit 1
fi

EXPERIMENTS=${LBLAB_VM_EXPERIMENTS:-}
if ! [[ "$EXPERIMENTS" =~ ^[a-z0-9,-]*$ ]]; then
  echo "LBLAB_VM_EXPERIMENTS: expected experiment names separated by commas, got '$EXPERIMENTS'" >&2
  exit 2
fi

T_START=$(date +%s)
TIMEOUT=${LBLAB_VM_TIMEOUT:-1500}
MEM=${LBLAB_VM_MEM:-2560}
RUN_DIR=""
QEMU_PID=""
TAIL_PID=""
PROBE_PID=""

stop_pid() {  # TERM, then KILL, one process we started
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop_pid "$PROBE_PID"; stop_pid "$QEMU_PID"; stop_pid "$TAIL_PID"
  [ -n "$RUN_DIR" ] && rm -rf --one-file-system "$RUN_DIR"
  return 0
}
trap cleanup EXIT
trap 'echo "test-vm: interrupted" >&2; exit 130' INT TERM

retry() {
  local n=1
  until "$@"; do
    if [ $n -ge 4 ]; then echo "failed after $n attempts: $*" >&2; return 1; fi
    echo "retrying in $((n * 5))s: $*" >&2; sleep $((n * 5)); n=$((n + 1))
  done
}

# --- 1. host tools --------------------------------------------------------------------------
HOST_PACKAGES=(debootstrap qemu-system-x86 e2fsprogs debian-archive-keyring ca-certificates)
missing=()
for pkg in "${HOST_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "test-vm: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  retry apt-get update -q
  retry apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# --- 2. the image ---------------------------------------------------------------------------
KEY=$(bash tools/vm/build-image.sh --key)
IMG=.cache/vm/$KEY
if [ -f "$IMG/rootfs.img" ] && [ -f "$IMG/image.info" ]; then
  echo "test-vm: cached guest image $IMG ($(grep '^built:' "$IMG/image.info"))"
else
  echo "test-vm: building the guest image into $IMG (once per package list)"
  mkdir -p .cache/vm
  bash tools/vm/build-image.sh "$IMG"
  # older images (other keys) are dead weight
  for old in .cache/vm/*/; do
    old=${old%/}
    [ "$old" = "$IMG" ] || case "$old" in *.build.*) ;; *) rm -rf --one-file-system "$old" ;; esac
  done
fi
T_IMAGE=$(date +%s)

RUN_DIR=$(mktemp -d /tmp/lblab-vm.XXXXXX)
export TMPDIR=$RUN_DIR  # qemu's -snapshot overlay goes here, and goes with the folder

# --- 3. accelerator -------------------------------------------------------------------------
WHY=""
kvm_probe() {  # can KVM boot this stock kernel? A kernel without root panics at once.
  if ! { [ -c /dev/kvm ] && [ -r /dev/kvm ] && [ -w /dev/kvm ]; }; then
    WHY="no usable /dev/kvm"; return 1
  fi
  if [ -d /sys/module/kvm_pvm ]; then
    WHY="kvm_pvm host (cannot boot a stock kernel: MSR 0x10a, or a hang after EDD probing)"
    return 1
  fi
  # (no core file when qemu aborts, as it does on kvm_pvm: "failed to set MSR 0x10a")
  (ulimit -c 0; cd "$RUN_DIR"; exec timeout -k 2 20 qemu-system-x86_64 -accel kvm -cpu host \
    -m 256 -smp 1 -kernel "$REPO/$IMG/vmlinuz" -append "console=ttyS0 panic=-1" \
    -serial "file:$RUN_DIR/kvm-probe.log" -display none -vga none -monitor none -nic none \
    -no-reboot >"$RUN_DIR/kvm-probe.err" 2>&1) &
  PROBE_PID=$!
  wait "$PROBE_PID" 2>/dev/null || true
  PROBE_PID=""
  if grep -q -E "Kernel panic|VFS: Unable to mount root" "$RUN_DIR/kvm-probe.log" 2>/dev/null; then
    WHY="probe boot under KVM reached the kernel's root mount"; return 0
  fi
  WHY="probe boot under KVM did not reach the kernel's root mount within 20s"
  WHY+=" ($(head -c 200 "$RUN_DIR/kvm-probe.err" | tr '\n' ' '))"
  return 1
}
case "${LBLAB_VM_ACCEL:-auto}" in
  kvm) ACCEL=kvm; WHY="forced by LBLAB_VM_ACCEL" ;;
  tcg) ACCEL=tcg; WHY="forced by LBLAB_VM_ACCEL" ;;
  *) if kvm_probe; then ACCEL=kvm; else ACCEL=tcg; fi ;;
esac
if [ "$ACCEL" = kvm ]; then
  ACCEL_ARGS=(-accel kvm -cpu host)
else
  ACCEL_ARGS=(-accel tcg,thread=multi -cpu max)
fi
echo "test-vm: accelerator: $ACCEL (${ACCEL_ARGS[*]}) -- $WHY"

# --- 4. boot and collect --------------------------------------------------------------------
CONSOLE=$RUN_DIR/console.log
RESULTS=$RUN_DIR/results.log
: > "$RESULTS"
echo "test-vm: booting the guest (-snapshot, checkout read-only over 9p, timeout ${TIMEOUT}s)"
qemu-system-x86_64 -name lblab-vm "${ACCEL_ARGS[@]}" -machine q35 -smp 2 -m "$MEM" \
  -kernel "$IMG/vmlinuz" -initrd "$IMG/initrd.img" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 quiet lblab.accel=$ACCEL${EXPERIMENTS:+ lblab.experiments=$EXPERIMENTS}" \
  -drive "file=$IMG/rootfs.img,format=raw,if=virtio,cache=unsafe" -snapshot \
  -virtfs "local,path=$REPO,mount_tag=lblab,security_model=none,readonly=on" \
  -serial "file:$CONSOLE" -serial "file:$RESULTS" \
  -display none -vga none -monitor none -nic none -no-reboot \
  >"$RUN_DIR/qemu.err" 2>&1 &
QEMU_PID=$!
tail -n +1 -F "$RESULTS" 2>/dev/null &  # the guest's test output, live
TAIL_PID=$!

deadline=$(( $(date +%s) + TIMEOUT ))
timed_out=0
while kill -0 "$QEMU_PID" 2>/dev/null; do
  if [ "$(date +%s)" -ge "$deadline" ]; then timed_out=1; break; fi
  sleep 1
done
QEMU_RC=0
if [ $timed_out = 1 ]; then
  echo "test-vm: TIMEOUT after ${TIMEOUT}s; stopping the guest" >&2
  stop_pid "$QEMU_PID"
else
  wait "$QEMU_PID" || QEMU_RC=$?
fi
QEMU_PID=""
sleep 0.5
stop_pid "$TAIL_PID"; TAIL_PID=""
T_END=$(date +%s)

marker=$(tr -d '\r' < "$RESULTS" | grep -a '^LBLAB-VM-RESULT:' | tail -n 1 || true)
echo "test-vm: image $((T_IMAGE - T_START))s, guest run $((T_END - T_IMAGE))s, total $((T_END - T_START))s"
if [ "$QEMU_RC" != 0 ] || [ -s "$RUN_DIR/qemu.err" ]; then
  echo "test-vm: qemu exit code $QEMU_RC: $(head -c 2000 "$RUN_DIR/qemu.err")" >&2
fi
case "$marker" in
  "LBLAB-VM-RESULT: PASS"*) echo "test-vm: PASS"; exit 0 ;;
esac
echo "test-vm: FAIL (${marker:-no result marker from the guest}); last lines of the guest console:" >&2
tr -d '\r' < "$CONSOLE" | tail -n 40 | sed 's/^/  console| /' >&2
exit 1
