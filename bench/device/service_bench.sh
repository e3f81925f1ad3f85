#!/usr/bin/env bash
# The render service on one GPU, end to end: redis-server, `stas coordinator`, `mpirun -np 1 stas worker
# --model DIR`, JOBS jobs of 832x480x81, STEPS steps, CFG 5 submitted at once and followed to the end;
# every MP4 checked (ffprobe when the image has it, else the MP4 header boxes and the manifest's frame
# count); then a standalone `stas render` of the same job. Prints videos per GPU-hour through the
# service, the standalone render's time and the service's overhead per video.
#
# Usage: bench/device/service_bench.sh PREFIX DIR [JOBS=5] [STEPS=50] [extra worker/render flags...]
#   PREFIX: from bench/device/fetch_service_deps.sh; DIR: a checkpoint folder (make_random_wan_checkpoint.py);
#   the binaries in $BUILD_DIR (default build-gpu-service, bench/device/gpu_service_build.sh).
#   HEIGHT/WIDTH/FRAMES override the size (a quick run of the script itself: DIR=tiny, 64x96x9).
set -u
cd "$(dirname "$0")/../.."
PREFIX="$(cd "$1" && pwd)"; DIR="$2"; JOBS="${3:-5}"; STEPS="${4:-50}"; shift 4 2>/dev/null || shift $#
EXTRA=("$@")
. bench/device/service_env.sh "$PREFIX"
STAS="$(cd "${BUILD_DIR:-build-gpu-service}" && pwd)/cli/stas"
W="$(mktemp -d /tmp/stas-service.XXXXXX)"
mkdir -p "$W/redis" "$W/storage" "$W/logs"
# Free ports, so that a process left over from an earlier run (or anyone else) cannot answer for ours.
read -r RP WP HP < <(python3 -c "
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in socks])")
SERVER="http://127.0.0.1:$HP"
PIDS=()
cleanup() { [ -n "${OUT:-}" ] && mkdir -p "$OUT/service-logs" && cp -r "$W/logs/." "$OUT/service-logs/" 2>/dev/null; for (( i=${#PIDS[@]}-1; i>=0; i-- )); do kill -TERM "${PIDS[$i]}" 2>/dev/null; sleep 1; kill -KILL "${PIDS[$i]}" 2>/dev/null; done; }
trap cleanup EXIT
trap 'exit 143' TERM INT  # a time limit still stops the servers and keeps the logs
now() { date +%s.%N; }
sub() { python3 -c "print(round($1 - $2, 3))"; }
healthy() { python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$SERVER/healthz" 2>/dev/null; }
SIZE=(--height "${HEIGHT:-480}" --width "${WIDTH:-832}" --frames "${FRAMES:-81}" --steps "$STEPS" --guidance 5)

redis-server deploy/redis.conf --port "$RP" --dir "$W/redis" > "$W/logs/redis.log" 2>&1 & PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$RP" ping >/dev/null 2>&1 && break; sleep 0.1; done
"$STAS" coordinator --redis "redis://127.0.0.1:$RP" --listen "127.0.0.1:$WP" --http "127.0.0.1:$HP" \
  --storage "$W/storage" > "$W/logs/coordinator.log" 2>&1 & PIDS+=($!)
for _ in $(seq 300); do healthy && break; sleep 0.1; done
kill -0 "${PIDS[-1]}" 2>/dev/null || { echo "service: the coordinator exited:"; tail -5 "$W/logs/coordinator.log"; exit 1; }
# The worker: under mpirun (a group of one), or plain (WORKER_LAUNCH=plain: the same process without
# MPI). Under mpirun it must say "serving model" within WORKER_START_S seconds; when it does not, the
# script prints what the launcher and the worker are waiting on and, unless FALLBACK_PLAIN=0, measures
# with a plain worker instead (and says so).
launch_worker() {
  local launcher=()
  [ "$1" = mpirun ] && launcher=(mpirun --allow-run-as-root --bind-to none -np 1)
  "${launcher[@]}" "$STAS" worker --coordinator "127.0.0.1:$WP" --model "$DIR" --storage "$W/storage" \
    "${EXTRA[@]}" > "$W/logs/worker-$1.log" 2>&1 & PIDS+=($!)
}
wait_serving() {  # LAUNCH SECONDS -> 0 serving, 1 not within the time, 2 exited
  for _ in $(seq $(( $2 * 10 ))); do
    grep -q "serving model" "$W/logs/worker-$1.log" && return 0
    kill -0 "${PIDS[-1]}" 2>/dev/null || return 2
    sleep 0.1
  done
  return 1
}
LAUNCH="${WORKER_LAUNCH:-mpirun}"
t_start=$(now)
launch_worker "$LAUNCH"
wait_serving "$LAUNCH" "${WORKER_START_S:-180}"; rc=$?
if [ $rc -ne 0 ] && [ "$LAUNCH" = mpirun ] && [ "${FALLBACK_PLAIN:-1}" = 1 ]; then
  echo "service: the worker under mpirun $([ $rc = 1 ] && echo "did not start within ${WORKER_START_S:-180} s" || echo exited); its log:"
  tail -5 "$W/logs/worker-mpirun.log"
  ps -eo pid,ppid,stat,wchan:28,etime,args | grep -E "mpirun|orted|prted|stas worker" | grep -v grep | cut -c1-200
  for pid in $(pgrep -f "stas worker"); do echo "  $pid syscall: $(cat /proc/$pid/syscall 2>/dev/null)"; done
  kill -TERM "${PIDS[-1]}" 2>/dev/null; sleep 2; pkill -KILL -f "stas worker"; kill -KILL "${PIDS[-1]}" 2>/dev/null
  unset 'PIDS[-1]'
  LAUNCH=plain
  t_start=$(now)
  launch_worker plain
  wait_serving plain 300; rc=$?
fi
[ $rc -eq 0 ] || { echo "service: the worker ($LAUNCH) did not start:"; tail -5 "$W/logs/worker-$LAUNCH.log"; exit 1; }
t_ready=$(now)
echo "service: redis $(redis-server --version | cut -d' ' -f3), worker ($LAUNCH launch) loaded in $(sub $t_ready $t_start) s"
for i in $(seq "$JOBS"); do echo "a red fox running through fresh snow at dawn, cinematic lighting, take $i"; done > "$W/prompts.txt"
t0=$(now)
IDS="$("$STAS" submit --server "$SERVER" --dataset "$W/prompts.txt" --model "$DIR" "${SIZE[@]}")"
# shellcheck disable=SC2086
"$STAS" watch --server "$SERVER" $IDS > "$W/logs/watch.log" 2>&1; WATCH_RC=$?
t1=$(now)
echo "service: $JOBS jobs submitted and done in $(sub $t1 $t0) s (stas watch exit $WATCH_RC)"
tail -3 "$W/logs/worker-$LAUNCH.log"
ok=0
for mp4 in "$W"/storage/prompts/*.mp4; do
  [ -f "$mp4" ] || continue
  if command -v ffprobe >/dev/null; then
    info=$(ffprobe -v error -select_streams v:0 -count_frames -show_entries stream=codec_name,width,height,nb_read_frames -of csv=p=0 "$mp4")
  else
    info=$(python3 - "$mp4" <<'PY'
import json, os, struct, sys
p = sys.argv[1]; b = open(p, "rb").read()
boxes, i = [], 0
while i + 8 <= len(b):
    size, kind = struct.unpack(">I4s", b[i:i + 8]); boxes.append(kind.decode("latin1"))
    if size < 8: break
    i += size
m = json.load(open(os.path.splitext(p)[0] + ".json"))
good = boxes[:1] == ["ftyp"] and "moov" in boxes and "mdat" in boxes and i == len(b)
print(f"boxes {'/'.join(boxes)} {'complete' if good else 'BROKEN'}, codec {m.get('codec')}, {m['width']}x{m['height']}x{m['frames']}")
PY
)
  fi
  echo "  $(basename "$mp4"): $(stat -c %s "$mp4") bytes, $info"
  ok=$((ok + 1))
done
python3 - "$W/storage/prompts" <<'PY'
import glob, json, sys
ms = [json.load(open(f)) for f in sorted(glob.glob(sys.argv[1] + "/*.json"))]
for k in ("text_encode", "denoise", "decode", "encode", "total"):
    v = [m["timings_s"].get(k, 0) for m in ms]
    print(f"  manifest {k}: " + ", ".join(f"{x:.2f}" for x in v))
PY
cleanup; PIDS=()
echo "service: $ok MP4s of $JOBS"

# The same job rendered standalone (model load excluded from the per-video time: the manifest's total).
t2=$(now)
"$STAS" render --model "$DIR" --prompt "a red fox running through fresh snow at dawn, cinematic lighting, take 1" \
  "${SIZE[@]}" "${EXTRA[@]}" --out "$W/standalone.mp4" > "$W/logs/render.log" 2>&1; RC=$?
t3=$(now)
python3 - "$W/standalone.json" "$(sub $t1 $t0)" "$JOBS" "$(sub $t3 $t2)" "$RC" "$W/storage/prompts" <<'PY'
import glob, json, sys
m = json.load(open(sys.argv[1])); wall, jobs, rwall = float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t = m["timings_s"]; alone = t["total"]
per = wall / jobs
# The worker's own render time per job (its manifests): what the service adds on top of it is the
# queue, the coordinator, the dispatch, the commit and the result's round trip.
rendered = [json.load(open(f))["timings_s"]["total"] for f in glob.glob(sys.argv[6] + "/*.json")]
inside = sum(rendered) / max(len(rendered), 1)
print(f"standalone render: total {alone:.2f} s (text {t.get('text_encode',0):.2f}, denoise {t['denoise']:.2f}, decode "
      f"{t.get('decode',0):.2f}, encode {t.get('encode',0):.2f}); process wall {rwall:.1f} s with the model load (exit {sys.argv[5]})")
print(f"service: {per:.2f} s per video = {3600 / per:.1f} videos per GPU-hour; standalone {3600 / alone:.1f}; "
      f"per video against the standalone render {100 * (per / alone - 1):+.2f}%")
print(f"service overhead: {per - inside:.3f} s per video beyond the worker's render ({inside:.2f} s) = "
      f"{100 * (per / inside - 1):.2f}%")
PY
