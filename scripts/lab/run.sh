#!/usr/bin/env bash
# Run one command inside the kernel lab: a QEMU (TCG) guest with emulated AMD SVM and
# nested paging, running a Debian kernel whose KVM has a real TDP MMU. The guest
# chroots into this machine's root (shared read-only, writes go to a tmpfs overlay),
# so the same checkout, node and node_modules are used. See docs/lab.md.
#
#   bash scripts/lab/run.sh <command> [args...]      (npm run lab -- <command> [args...])
#
# The arguments are one command and its arguments, quoted as given (like exec "$@");
# use  sh -c '...'  for pipes, && and the like. The command runs in the caller's
# directory (LAB_CWD overrides). Its stdout and stderr arrive on ours; the kernel's
# messages go to a log under .lab-cache/logs/. We exit with the command's exit code,
# 124 on a timeout and 125 when the guest failed before reporting one.
#
#   LAB_KERNEL=6.18            kernel series (default 6.18; run setup for it first)
#   LAB_TIMEOUT=900            seconds before the guest is killed
#   LAB_MEM=4G  LAB_SMP=2      guest memory and vcpus
#   LAB_ENV_NAME=value         sets NAME=value in the guest
#   LAB_PASS_ENV="A B"         passes these variables through unchanged
#                              (PATH, HOME, CI, TERM, LANG, LC_ALL and TZ always are)
#   LAB_OUT_DIR=dir            host folder the guest sees as $LAB_OUT (default .lab-cache/out)
#   LAB_CWD=dir                directory to run the command in
#   LAB_APPEND="..."           extra kernel command line
#   LAB_QEMU_ARGS="..."        extra QEMU options (split on spaces)
#   LAB_VERBOSE=1              print boot and run times to stderr
set -euo pipefail

EXIT_TIMEOUT=124
EXIT_LAB_FAILED=125
LAB_DIE_STATUS=$EXIT_LAB_FAILED
# shellcheck source=lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

LAB_TIMEOUT=${LAB_TIMEOUT:-900}
LAB_MEM=${LAB_MEM:-4G}
LAB_SMP=${LAB_SMP:-2}
ALWAYS_PASSED=(PATH HOME CI TERM LANG LC_ALL TZ)

fail() {
  lab_die "$@"
}

(($# > 0)) || fail "usage: run.sh <command> [args...]   (e.g. run.sh node -e 'console.log(1)')"
[[ $LAB_TIMEOUT =~ ^[1-9][0-9]*$ ]] || fail "LAB_TIMEOUT must be a number of seconds (got '$LAB_TIMEOUT')"
[[ $LAB_SMP =~ ^[1-9][0-9]*$ ]] || fail "LAB_SMP must be a number (got '$LAB_SMP')"
command -v qemu-system-x86_64 >/dev/null ||
  fail "qemu-system-x86_64 not found; run: npm run lab:setup"
[[ -s $LAB_KDIR/vmlinuz && -e $LAB_KDIR/modules/order ]] ||
  fail "no lab kernel for LAB_KERNEL=$LAB_KERNEL in $LAB_KDIR; run: LAB_KERNEL=$LAB_KERNEL npm run lab:setup"
# setup.sh names the initramfs after a hash of what went into it; none for this
# checkout's init.sh means it changed since setup ran.
initramfs=$LAB_KDIR/initramfs-$(lab_initramfs_stamp).img
[[ -s $initramfs ]] ||
  fail "the lab initramfs is out of date (or missing) for this checkout; run: LAB_KERNEL=$LAB_KERNEL npm run lab:setup"

cwd=${LAB_CWD:-$PWD}
[[ $cwd == /* && -d $cwd ]] || fail "LAB_CWD must be an existing absolute directory (got '$cwd')"
out_dir=${LAB_OUT_DIR:-$LAB_CACHE/out}
mkdir -p -- "$out_dir"
out_dir=$(cd -- "$out_dir" && pwd)

id=$(date +%Y%m%d-%H%M%S)-$$
run=$LAB_CACHE/runs/$id
log=$LAB_CACHE/logs/$id.log
mkdir -p -- "$run/ctl" "$LAB_CACHE/logs"
: >"$log"

qpid='' out_pid='' err_pid=''
# shellcheck disable=SC2317  # run from the EXIT trap
cleanup() {
  local p
  for p in $qpid $out_pid $err_pid; do
    kill "$p" 2>/dev/null || true
  done
  rm -rf -- "$run"
}
trap cleanup EXIT
# Ctrl-C or a kill: stop the guest too (it runs in its own process group under timeout).
trap 'printf "lab: interrupted\n" >&2; exit 130' INT TERM HUP

# ------------------------------------------------------- the guest's command

# Single-quote one word for sh.
shq() {
  local s=${1//\'/\'\\\'\'}
  printf "'%s'" "$s"
}

valid_name() {
  [[ $1 =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]
}

{
  echo "# Written by scripts/lab/run.sh for one run; the guest runs it with /bin/sh."
  declare -A seen=()
  pass=${LAB_PASS_ENV:-}
  for name in "${ALWAYS_PASSED[@]}" ${pass//,/ }; do
    valid_name "$name" || fail "LAB_PASS_ENV: '$name' is not a variable name"
    [[ -n ${seen[$name]:-} || -z ${!name+set} ]] && continue
    seen[$name]=1
    printf 'export %s=%s\n' "$name" "$(shq "${!name}")"
  done
  for var in $(compgen -e); do
    [[ $var == LAB_ENV_?* ]] || continue
    name=${var#LAB_ENV_}
    valid_name "$name" || fail "$var: '$name' is not a variable name"
    printf 'export %s=%s\n' "$name" "$(shq "${!var}")"
  done
  echo "export LAB_OUT=/run/lab-out"
  printf 'cd %s || exit 127\n' "$(shq "$cwd")"
  printf 'exec'
  for word in "$@"; do
    printf ' %s' "$(shq "$word")"
  done
  printf '\n'
} >"$run/ctl/cmd.sh"

# ----------------------------------------------------------------- the guest

# The command's output reaches us through FIFOs: QEMU writes <name>.out (and opens an
# idle <name>.in), and a cat copies each to our stdout or stderr, whatever they are.
for s in stdout stderr; do
  mkfifo -- "$run/$s.in" "$run/$s.out"
done
cat -- "$run/stdout.out" &
out_pid=$!
cat -- "$run/stderr.out" >&2 &
err_pid=$!

# QEMU reads commas in option values as separators unless doubled.
qe() { printf '%s' "${1//,/,,}"; }

# no_timer_check: the lab kernel's timed IO-APIC timer check fails under TCG on a busy
# machine ("IO-APIC + timer doesn't work!", a panic before the command starts).
append="console=ttyS0 quiet panic=-1 rdinit=/init no_timer_check ${LAB_APPEND:-}"
# shellcheck disable=SC2054  # the commas belong to QEMU's option syntax
qemu=(
  qemu-system-x86_64
  -nodefaults -no-user-config -display none -no-reboot
  -machine pc -accel "tcg,thread=${LAB_TCG_THREAD:-single}"
  -cpu EPYC,+svm,+npt -smp "$LAB_SMP" -m "$LAB_MEM"
  -kernel "$LAB_KDIR/vmlinuz" -initrd "$initramfs" -append "$append"
  # Console (kernel messages, /init's own messages) to the log.
  -chardev "file,id=con,path=$(qe "$log"),append=on" -serial chardev:con
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
  -virtfs "local,path=$(qe "$run/ctl"),mount_tag=labctl,security_model=none,multidevs=remap"
  -virtfs "local,path=$(qe "$out_dir"),mount_tag=labout,security_model=none,multidevs=remap"
  -device virtio-serial-pci,id=vser
  -chardev "pipe,id=out,path=$(qe "$run/stdout")"
  -device virtserialport,bus=vser.0,chardev=out,name=lab.stdout
  -chardev "pipe,id=err,path=$(qe "$run/stderr")"
  -device virtserialport,bus=vser.0,chardev=err,name=lab.stderr
)
# Extra QEMU options, split on spaces (for experiments).
# shellcheck disable=SC2206
qemu+=(${LAB_QEMU_ARGS:-})

t0=$(date +%s.%N)
# timeout puts QEMU in its own process group; running it in the background keeps
# this shell able to take Ctrl-C and the EXIT trap to stop it.
timeout --kill-after=10 "$LAB_TIMEOUT" "${qemu[@]}" </dev/null >>"$log" 2>&1 &
qpid=$!

# Wait for QEMU. Should a reader end first, our stdout or stderr was closed (as in
# `run.sh yes | head -1`): the guest would block on a full pipe until the timeout,
# so stop it now, as a pipe's writer would be stopped by SIGPIPE.
qrc=0 reader_closed=0
waiting=("$qpid" "$out_pid" "$err_pid")
while :; do
  done_pid='' st=0
  wait -n -p done_pid "${waiting[@]}" || st=$?
  if [[ -z $done_pid || $done_pid == "$qpid" ]]; then
    qrc=$st
    break
  fi
  if ((st != 0)); then
    reader_closed=1
    kill -TERM "$qpid" 2>/dev/null || true
  fi
  remaining=()
  for p in "${waiting[@]}"; do
    [[ $p == "$done_pid" ]] || remaining+=("$p")
  done
  waiting=("${remaining[@]}")
done
qpid=
t1=$(date +%s.%N)

# QEMU was the only writer of the FIFOs, so the cats see their end now; if QEMU died
# before opening a FIFO, its cat still waits in open() and is stopped by cleanup.
for _ in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
  kill -0 "$out_pid" 2>/dev/null || kill -0 "$err_pid" 2>/dev/null || break
  sleep 0.1
done

# Keep the 20 newest logs.
# shellcheck disable=SC2012  # our own names: date-pid.log
ls -1t -- "$LAB_CACHE"/logs/*.log 2>/dev/null | tail -n +21 | xargs -r rm -f --

if [[ ${LAB_VERBOSE:-0} == 1 && -s $run/ctl/started ]]; then
  started=$(stat -c %.3Y -- "$run/ctl/started")
  awk -v t0="$t0" -v t1="$t1" -v s="$started" -v up="$(<"$run/ctl/started")" 'BEGIN {
    printf "lab: qemu start to command start %.2f s (guest uptime %.2f s), command and power-off %.2f s, total %.2f s\n",
      s - t0, up, t1 - s, t1 - t0 }' >&2
fi

if [[ ${LAB_VERBOSE:-0} == 1 && -s $run/ctl/speed ]]; then
  awk '{ printf "lab: speed loop %.2f s: timeout scale %s\n", $2 - $1, $3 }' "$run/ctl/speed" >&2
fi
if [[ ${LAB_VERBOSE:-0} == 1 ]]; then
  printf 'lab: guest log: %s\n' "$log" >&2
fi
if ((reader_closed)); then
  exit 141
fi
elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%d", b - a }')
if ((qrc == 124 || (qrc == 137 && elapsed >= LAB_TIMEOUT))); then
  printf 'lab: error: timed out after %s s (LAB_TIMEOUT); guest log: %s\n' "$LAB_TIMEOUT" "$log" >&2
  exit "$EXIT_TIMEOUT"
fi
if [[ -s $run/ctl/status ]]; then
  rc=$(<"$run/ctl/status")
  [[ $rc =~ ^[0-9]+$ ]] || fail "the guest reported a bad exit code '$rc'; guest log: $log"
  exit "$rc"
fi

{
  if [[ -s $run/ctl/error ]]; then
    printf 'lab: error: the guest failed: %s\n' "$(<"$run/ctl/error")"
  else
    printf 'lab: error: the guest stopped without reporting an exit code (qemu exit %s)\n' "$qrc"
  fi
  printf 'lab: last lines of the guest log %s:\n' "$log"
  tail -n 25 -- "$log" | sed 's/^/  | /'
} >&2
exit "$EXIT_LAB_FAILED"
