# Shared by the scripts/bench-* comparisons of gateway configurations: start release-build
# gateways with settings from the environment, wait for them, run sysbench rounds interleaved,
# report medians. Source it after `cd` to the repository; call bench_setup first. GATEWAY_BIN names
# a gateway binary to use instead of building the release one (e.g. scripts/image's static one).

bench_setup() {
  scripts/deps
  scripts/fleet up >/dev/null
  if [ -z "${GATEWAY_BIN:-}" ]; then
    cargo build --release --bin sluice -q
    GATEWAY_BIN="${CARGO_TARGET_DIR:-target}/release/sluice"
  fi
  scripts/build-policies
  work=$(mktemp -d)
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "$work"/*.pid; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  rm -rf "$work"
}

bench_start() { # name port env...: a gateway with the default config and these settings
  local name=$1 port=$2; shift 2
  env SLUICE_ADMIN__LISTEN=127.0.0.1:0 SLUICE_FRONTEND__LISTEN="127.0.0.1:$port" SLUICE_LOG__LEVEL=warn "$@" \
    "$GATEWAY_BIN" serve --config config/sluice.toml >"$work/$name.log" 2>&1 &
  echo $! >"$work/$name.pid"
}

bench_wait() { # port...: each gateway answers (bounded)
  local port up
  for port in "$@"; do
    up=""
    for _ in $(seq 1 300); do
      mariadb --no-defaults -h127.0.0.1 -P"$port" -uapp -papp-secret -e 'SELECT 1' >/dev/null 2>&1 && { up=1; break; }
      sleep 0.1
    done
    [ -n "$up" ] || { echo "bench: the gateway on :$port does not answer" >&2; cat "$work"/*.log >&2; exit 1; }
  done
}

bench_median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# bench_rounds ROUNDS TITLE sb-function name:port:args...  Each round runs every target once (every
# other round in reverse order)
# (`sb-function PORT ARGS... run`); prints per-round lines and medians of tps, p99 and errors.
bench_rounds() {
  local rounds=$1 title=$2 sbf=$3; shift 3
  declare -A tps p99 errs
  local round t name port args out x y e
  local order
  for round in $(seq 1 "$rounds"); do
    # Every other round in reverse order, so no target always runs first (warm caches, drift).
    order=("$@")
    if (( round % 2 == 0 )); then
      for (( i = ${#order[@]} - 1; i >= 0; i-- )); do order+=("${order[i]}"); done
      order=("${order[@]:$#}")
    fi
    for t in "${order[@]}"; do
      IFS=: read -r name port args <<<"$t"
      # shellcheck disable=SC2086
      out=$($sbf "$port" $args --percentile=99 run)
      x=$(echo "$out" | awk '/transactions:/ {gsub(/\(/,"",$3); print $3}')
      y=$(echo "$out" | awk '/99th percentile:/ {print $3}')
      e=$(echo "$out" | awk '/ignored errors:/ {print $3}')
      echo "round $round $name: $x tps, p99 $y ms, ${e:-0} ignored errors"
      tps[$name]+="$x "; p99[$name]+="$y "; errs[$name]+="${e:-0} "
    done
  done
  echo
  echo "$title, medians of $rounds interleaved rounds:"
  for t in "$@"; do
    name=${t%%:*}
    # shellcheck disable=SC2086
    printf '  %-22s %10s tps   p99 %8s ms   errors %s\n' "$name" "$(bench_median ${tps[$name]})" \
      "$(bench_median ${p99[$name]})" "$(bench_median ${errs[$name]})"
  done
}
