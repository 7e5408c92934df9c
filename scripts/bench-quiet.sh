# Sourced by the benchmark scripts: their log file, and a wait for a quiet machine before a
# timed step.
# shellcheck shell=bash

# Copy everything the script prints from here on into target/bench-results/NAME-<time>.txt
# (sets target_dir, results_dir and log). Run from the repository's root.
bench_log() {
  target_dir=${CARGO_TARGET_DIR:-$(pwd)/target}
  results_dir=$target_dir/bench-results
  mkdir -p "$results_dir"
  log=$results_dir/$1-$(date -u +%Y%m%dT%H%M%SZ).txt
  exec > >(tee "$log") 2>&1
}

# Percentage of CPU time (all cores) not idle over a 2 s window.
cpu_busy() {
  local a b
  a=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat)
  sleep 2
  b=$(awk '/^cpu / {print $2+$3+$4+$5+$6+$7+$8, $5+$6}' /proc/stat)
  echo "$a $b" | awk '{t = $3 - $1; i = $4 - $2; printf "%d", (t > 0 ? 100 * (t - i) / t : 0)}'
}
# Wait (at most BENCH_QUIET_WAIT_S seconds) until other processes use < 15 % of the CPUs; the
# load before each step is printed either way.
wait_quiet() {
  local busy waited=0 limit=${BENCH_QUIET_WAIT_S:-300}
  busy=$(cpu_busy)
  while [ "$busy" -ge 15 ] && [ "$waited" -lt "$limit" ]; do
    echo "other processes keep the CPUs ${busy}% busy; waiting for a quiet machine..."
    sleep 8
    waited=$((waited + 10))
    busy=$(cpu_busy)
  done
  if [ "$busy" -ge 15 ]; then
    echo "WARNING: CPUs ${busy}% busy before this step; its figures are disturbed"
  else
    echo "CPUs ${busy}% busy before this step"
  fi
  echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
}

