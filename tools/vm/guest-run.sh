#!/bin/bash
# Runs INSIDE the test-vm guest (started by the image's lblab-vm-test.service, output on ttyS1,
# the checkout mounted read-only at /lblab). Read from the checkout at boot, so changing it
# needs no image rebuild. The last line is the marker the host reads:
#   LBLAB-VM-RESULT: PASS | LBLAB-VM-RESULT: FAIL (<what>)
set -u
export PATH=/opt/lblab-venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TMPDIR=/tmp
export PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/lblab  # the checkout is read-only
export LBLAB_VM=1                                   # kernel tests fail, never skip, here
LBLAB_VM_ACCEL=$(sed -n 's/.*lblab\.accel=\([a-z]*\).*/\1/p' /proc/cmdline)
export LBLAB_VM_ACCEL=${LBLAB_VM_ACCEL:-unknown}
cd /tmp

failures=()
step() { echo; echo "=== $* ($(date +%T), uptime $(cut -d' ' -f1 /proc/uptime)s)"; }

step "kernel modules: openvswitch sch_netem ip_gre"
modprobe -a openvswitch sch_netem ip_gre || failures+=("modprobe")

step "Open vSwitch (kernel datapath)"
/usr/share/openvswitch/scripts/ovs-ctl start --system-id=random || failures+=("ovs-ctl start")

step "lblab doctor"
lblab doctor 2>&1 | tee /tmp/doctor.txt
[ "${PIPESTATUS[0]}" = 0 ] || failures+=("lblab doctor")
want=("ovs_datapath: kernel" "link_delay: netem" "gre_decap: kernel")
got=$(sed -E 's/:[[:space:]]+/: /' /tmp/doctor.txt)
for w in "${want[@]}"; do
  grep -q "^$w\b" <<<"$got" || { echo "doctor check: expected '$w'"; failures+=("doctor: $w"); }
done
[ ${#failures[@]} -eq 0 ] && echo "doctor check: ok (kernel / netem / kernel)"

step "pytest -m kernel tests/kernel (accelerator: $LBLAB_VM_ACCEL)"
python -m pytest -c /lblab/pyproject.toml --rootdir /lblab -p no:cacheprovider \
  -m kernel /lblab/tests/kernel -v -rs --durations=5 --color=no \
  -W ignore::DeprecationWarning || failures+=("pytest")

# Optional (LBLAB_VM_EXPERIMENTS on the host): experiments at --quick size on the kernel
# mechanisms, their summary.csv printed here (results stay in the guest: -snapshot).
EXPERIMENTS=$(sed -n 's/.*lblab\.experiments=\([a-z0-9,-]*\).*/\1/p' /proc/cmdline)
for exp in ${EXPERIMENTS//,/ }; do
  step "lblab run $exp --quick (kernel mechanisms, accelerator: $LBLAB_VM_ACCEL)"
  if lblab run "$exp" --quick --out /tmp/lblab-results; then
    for f in /tmp/lblab-results/"$exp"/*/summary.csv; do echo "--- $f"; cat "$f"; done
  else
    failures+=("lblab run $exp")
    [ -f /tmp/lblab-last-error.log ] && tail -n 30 /tmp/lblab-last-error.log
    # a failed run's directory is removed; its controller log is what explains a REST error
    for f in /tmp/lblab-failed-*/controller.log; do
      [ -f "$f" ] && { echo "--- $f (last 40 lines)"; tail -n 40 "$f"; }
    done
  fi
done

echo
if [ ${#failures[@]} -eq 0 ]; then
  echo "LBLAB-VM-RESULT: PASS"
else
  echo "LBLAB-VM-RESULT: FAIL (${failures[*]})"
fi
sync
exit 0  # the marker carries the verdict; the unit powers off either way
