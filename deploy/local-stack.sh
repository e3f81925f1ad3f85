#!/usr/bin/env bash
# The whole render service on one machine: redis-server (AOF on, its own data folder), `stas
# coordinator`, and `mpirun -np N stas worker` (N groups of one rank by default). It submits a prompt
# file, follows it with `stas watch`, prints where the videos are and the status page's address, and
# stops everything on exit unless --keep-running.
#
#   deploy/local-stack.sh                              # tiny model, examples/prompts.txt
#   deploy/local-stack.sh --prompts my.txt -- --steps 4 --frames 9
#   deploy/local-stack.sh --keep-running               # leave the stack up; prints how to stop it
#
# Options:
#   --build-dir DIR   where `stas` was built (default: $STAS_BUILD_DIR or build)
#   --work-dir DIR    data/log folder (default: a new temporary folder)
#   --model M         tiny or a checkpoint folder (default: tiny)
#   --np N            MPI ranks (default: 2)        --sp S   sequence-parallel degree (default: 1)
#   --prompts FILE    .txt/.csv/.jsonl dataset to submit (default: examples/prompts.txt); "none" = submit nothing
#   --redis-port P / --worker-port P / --http-port P  (default: free ports)
#   --keep-running    do not stop the services at the end
#   -- ARGS           extra render flags for `stas submit` (e.g. --steps 4 --frames 9)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD_DIR="${STAS_BUILD_DIR:-build}"
WORK_DIR=""
MODEL="tiny"
NP=2
SP=1
PROMPTS="$ROOT/examples/prompts.txt"
REDIS_PORT=""
WORKER_PORT=""
HTTP_PORT=""
KEEP_RUNNING=0
SUBMIT_ARGS=()

die() { echo "local-stack: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --work-dir) WORK_DIR="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --np) NP="$2"; shift 2 ;;
    --sp) SP="$2"; shift 2 ;;
    --prompts) PROMPTS="$2"; shift 2 ;;
    --redis-port) REDIS_PORT="$2"; shift 2 ;;
    --worker-port) WORKER_PORT="$2"; shift 2 ;;
    --http-port) HTTP_PORT="$2"; shift 2 ;;
    --keep-running) KEEP_RUNNING=1; shift ;;
    --) shift; SUBMIT_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
STAS="$BUILD_DIR/cli/stas"
[ -x "$STAS" ] || die "no stas binary at $STAS: build first (deploy/build.sh) or pass --build-dir"
for tool in redis-server redis-cli mpirun curl; do
  command -v "$tool" >/dev/null || die "$tool is not installed (deploy/install-deps.sh installs it)"
done

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
REDIS_PORT="${REDIS_PORT:-$(free_port)}"
WORKER_PORT="${WORKER_PORT:-$(free_port)}"
HTTP_PORT="${HTTP_PORT:-$(free_port)}"
if [ -z "$WORK_DIR" ]; then WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/stas-stack.XXXXXX")"; fi
mkdir -p "$WORK_DIR/redis" "$WORK_DIR/storage" "$WORK_DIR/logs"
WORK_DIR="$(cd "$WORK_DIR" && pwd)"
SERVER="http://127.0.0.1:$HTTP_PORT"

PIDS=()
cleanup() {
  local rc=$?
  if [ "$KEEP_RUNNING" = 1 ]; then
    printf '%s\n' "${PIDS[@]}" > "$WORK_DIR/pids"
    echo "local-stack: still running (pids in $WORK_DIR/pids); stop with: kill \$(cat $WORK_DIR/pids)"
    exit $rc
  fi
  echo "local-stack: stopping the services" >&2
  # Workers first (they drain), then the coordinator, then Redis (which fsyncs its AOF on SIGTERM).
  for (( i=${#PIDS[@]}-1; i>=0; i-- )); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "${PIDS[$i]}" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "${PIDS[$i]}" 2>/dev/null || true
  done
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_until() {  # wait_until SECONDS WHAT CMD...
  local seconds="$1" what="$2"; shift 2
  for _ in $(seq 1 $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  die "$what did not come up within ${seconds}s (logs in $WORK_DIR/logs)"
}

echo "local-stack: work folder $WORK_DIR"
redis-server "$ROOT/deploy/redis.conf" --port "$REDIS_PORT" --dir "$WORK_DIR/redis" \
  > "$WORK_DIR/logs/redis.log" 2>&1 &
PIDS+=($!)
wait_until 20 "redis-server" redis-cli -p "$REDIS_PORT" ping

"$STAS" coordinator --redis "redis://127.0.0.1:$REDIS_PORT" --listen "127.0.0.1:$WORKER_PORT" \
  --http "127.0.0.1:$HTTP_PORT" --storage "$WORK_DIR/storage" > "$WORK_DIR/logs/coordinator.log" 2>&1 &
PIDS+=($!)
wait_until 30 "stas coordinator" curl -sf "$SERVER/healthz"

MPI_FLAGS=(--oversubscribe --bind-to none -x OMP_NUM_THREADS=1)
if [ "$(id -u)" = 0 ]; then MPI_FLAGS+=(--allow-run-as-root); fi
# Workers authenticate with the secret the coordinator created in its storage folder on first start.
mpirun "${MPI_FLAGS[@]}" -np "$NP" "$STAS" worker --coordinator "127.0.0.1:$WORKER_PORT" --model "$MODEL" \
  --sp "$SP" --secret-file "$WORK_DIR/storage/.stas/worker-secret" > "$WORK_DIR/logs/workers.log" 2>&1 &
PIDS+=($!)
echo "local-stack: redis :$REDIS_PORT, coordinator :$WORKER_PORT (workers) and $SERVER, $NP worker ranks"

if [ "$PROMPTS" != "none" ]; then
  [ -f "$PROMPTS" ] || die "no prompt file $PROMPTS"
  IDS="$("$STAS" submit --server "$SERVER" --dataset "$PROMPTS" --model "$MODEL" "${SUBMIT_ARGS[@]}")"
  echo "local-stack: submitted $(echo "$IDS" | wc -l) jobs from $PROMPTS; watching"
  set +e
  # shellcheck disable=SC2086  # one id per word
  "$STAS" watch --server "$SERVER" $IDS
  WATCH_RC=$?
  set -e
  DATASET="$(basename "${PROMPTS%.*}")"
  echo
  echo "videos:      $WORK_DIR/storage/$DATASET/"
  ls -1 "$WORK_DIR/storage/$DATASET/"*.mp4 2>/dev/null | sed 's/^/  /' || true
  echo "status page: $SERVER/"
  echo "logs:        $WORK_DIR/logs/"
  if [ "$WATCH_RC" != 0 ]; then
    echo "local-stack: some jobs did not finish (stas watch exit code $WATCH_RC); see $WORK_DIR/logs" >&2
    exit "$WATCH_RC"
  fi
else
  echo "status page: $SERVER/"
fi
if [ "$KEEP_RUNNING" = 1 ]; then
  echo "local-stack: submit more with: $STAS submit --server $SERVER --prompt '...'"
fi
