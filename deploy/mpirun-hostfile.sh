#!/usr/bin/env bash
# Launches `stas worker` ranks across hosts from an Open MPI hostfile ("host slots=N" per line).
#
#   deploy/mpirun-hostfile.sh --hostfile hosts.txt --coordinator 10.0.0.5:7070 --model /models/Wan2.1-T2V-1.3B \
#       --sp 4 [--cfg-parallel] [--np N] [--stas /opt/stas/bin/stas] [-- extra worker flags]
#
# Ranks are placed host by host, slot by slot (--map-by slot), so each rendering group of
# G = sp x cfg consecutive ranks sits on one host when every host's slot count is a multiple of G
# (checked below); a group split across hosts would run its all-to-all over the network. One rank
# per GPU: give each host slots = its GPU count. The stas binary and the model folder must exist at
# the same paths on every host; the storage folder the coordinator names must be shared (NFS, ...).
#
# Fault isolation: Open MPI ends the whole job when one rank dies, so a crashed group takes the others
# of this launch down with it (their jobs' leases lapse and the coordinator re-dispatches them). For
# independent failure domains, launch one mpirun per host (or per group) instead of one for all.
set -euo pipefail

HOSTFILE=""
COORDINATOR=""
MODEL=""
SP=1
CFG=0
NP=""
STAS_BIN="${STAS_BIN:-$(command -v stas || true)}"
EXTRA=()
die() { echo "mpirun-hostfile: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --hostfile) HOSTFILE="$2"; shift 2 ;;
    --coordinator) COORDINATOR="$2"; shift 2 ;;
    --model) MODEL="$2"; shift 2 ;;
    --sp) SP="$2"; shift 2 ;;
    --cfg-parallel) CFG=1; shift ;;
    --np) NP="$2"; shift 2 ;;
    --stas) STAS_BIN="$2"; shift 2 ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
[ -n "$HOSTFILE" ] || die "--hostfile FILE is required"
[ -f "$HOSTFILE" ] || die "no hostfile $HOSTFILE"
[ -n "$COORDINATOR" ] || die "--coordinator HOST:PORT is required"
[ -n "$MODEL" ] || die "--model tiny|DIR is required"
[ -n "$STAS_BIN" ] || die "stas is not on PATH; pass --stas /path/to/stas"
[[ "$SP" =~ ^[1-9][0-9]*$ ]] || die "--sp must be a positive integer"

G=$SP
if [ "$CFG" = 1 ]; then G=$((SP * 2)); fi

# Slots per host from lines like "node1 slots=8" (comments and blank lines ignored).
TOTAL=0
while read -r host rest; do
  case "$host" in ''|'#'*) continue ;; esac
  slots=1
  if [[ "$rest" =~ slots=([0-9]+) ]]; then slots="${BASH_REMATCH[1]}"; fi
  if [ $((slots % G)) -ne 0 ]; then
    die "host $host has $slots slots, not a multiple of the group size $G (sp $SP x cfg $((G / SP))): a group would span hosts"
  fi
  TOTAL=$((TOTAL + slots))
done < "$HOSTFILE"
[ "$TOTAL" -gt 0 ] || die "the hostfile lists no hosts"
NP="${NP:-$TOTAL}"
[ $((NP % G)) -eq 0 ] || die "--np $NP is not a multiple of the group size $G"

WORKER_FLAGS=(--coordinator "$COORDINATOR" --model "$MODEL" --sp "$SP")
if [ "$CFG" = 1 ]; then WORKER_FLAGS+=(--cfg-parallel); fi
MPI_FLAGS=(--hostfile "$HOSTFILE" -np "$NP" --map-by slot --bind-to none)
# Forward the settings that matter on the remote hosts, when set here.
for var in STAS_LOG_LEVEL STAS_TOKEN NCCL_DEBUG NCCL_SOCKET_IFNAME NCCL_IB_HCA LD_LIBRARY_PATH; do
  if [ -n "${!var:-}" ]; then MPI_FLAGS+=(-x "$var"); fi
done
if [ "$(id -u)" = 0 ]; then MPI_FLAGS+=(--allow-run-as-root); fi

echo "mpirun-hostfile: $NP ranks = $((NP / G)) groups of $G on the hosts of $HOSTFILE" >&2
exec mpirun "${MPI_FLAGS[@]}" "$STAS_BIN" worker "${WORKER_FLAGS[@]}" "${EXTRA[@]}"
