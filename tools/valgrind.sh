#!/usr/bin/env bash
# Run fastrnn's compiled core (tools/valgrind_core.py) under valgrind's memcheck: every
# function of the functional layer for every cell (Elman, LSTM, GRU), compared with the
# NumPy twins.
#
#   tools/valgrind.sh            (~13 minutes on one core, 9 of them the one case above 2**28
#                                 multiply-adds; the same cases take ~2.5 s without
#                                 valgrind)
#   tools/valgrind.sh --canary   (~1 minute: checks that a planted out-of-bounds read in a C
#                                 kernel of each compiled module is reported, i.e. that a
#                                 clean run means something)
#
# Uses the fastrnn that `python3` imports, as normally built (-O3): the editable install of
# this repository is fine, valgrind only reads it. A FASTRNN_DEBUG=1 (ASan) build cannot run
# under valgrind and is refused. The compiled modules are fastrnn._head (the output layer,
# shared) and fastrnn.cells._elman, _lstm, _gru, each linking csrc/fr_kernels.c (the gated
# cells csrc/fr_gates.c too). Their C kernels are compiled for several instruction sets
# (target_clones); under valgrind the AVX2 (x86-64-v3) ones run, as valgrind does not
# emulate AVX-512. PYTHONMALLOC=malloc puts every Python allocation on malloc,
# which memcheck tracks (pymalloc's arenas would otherwise need CPython's suppressions);
# CPython's suppression file is passed too where this machine has one, and
# tools/valgrind.supp (documented, for known false positives outside fastrnn) always.
#
# Exit status: 0 only if the core cases pass and memcheck's ERROR SUMMARY is 0 errors
# (--canary: only if every planted read was reported).
# Environment: PYTHON (default python3); VALGRIND_LOG (default: a temporary file, kept and
# printed on failure); extra arguments are passed to valgrind (e.g. --track-origins=no).
# On a shared machine pin it: taskset -c 1 env OPENBLAS_NUM_THREADS=1 tools/valgrind.sh
set -uo pipefail

CANARY=()
if [[ "${1:-}" == --canary ]]; then CANARY=(--canary); shift; fi

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python3}"
# The interpreter itself, not a wrapper script (pyenv's shims are bash scripts, which
# valgrind would check instead, losing the python it execs).
PY="$("$PY" -c 'import sys; print(sys.executable)')" || { echo "valgrind.sh: no python"; exit 2; }
T0=$SECONDS

command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind not installed (apt-get install valgrind)"; exit 2; }

# The extensions that will be checked: importable, from one place, not the sanitizer build.
MODULES=(fastrnn._head fastrnn.cells._elman fastrnn.cells._lstm fastrnn.cells._gru)
SOS=()
for mod in "${MODULES[@]}"; do
    so="$(cd / && "$PY" -c "import $mod as m; print(m.__file__)" 2>&1)" \
        || { echo "valgrind.sh: $mod does not import: $so"; exit 2; }
    if [[ "$(ldd "$so")" == *libasan* ]]; then
        echo "valgrind.sh: $so is an ASan (FASTRNN_DEBUG=1) build; valgrind needs a normal build"
        exit 2
    fi
    SOS+=("$so")
done
SO="${SOS[0]}"                        # fastrnn/_head*.so

# An in-place (editable) build older than its sources would check yesterday's code. Each
# extension against what it is built from: its .pyx, the .pxd files it cimports (all of
# them, to be safe) and the C kernels it links.
pkg="$(dirname "$SO")"
for so in "${SOS[@]}"; do
    base="$(basename "$so")"; base="${base%%.*}"             # _head, _elman, _lstm, _gru
    srcs=("$(dirname "$so")/$base.pyx" "$pkg"/*.pxd "$pkg"/cells/*.pxd
          "$pkg"/../csrc/fr_kernels.[ch] "$pkg"/../csrc/fr_math.h)
    case "$base" in _lstm|_gru) srcs+=("$pkg"/../csrc/fr_gates.[ch]);; esac
    for f in "${srcs[@]}"; do
        if [[ -f "$f" && "$f" -nt "$so" ]]; then
            echo "valgrind.sh: WARNING: $f is newer than $so: rebuild (pip install -e .) first"
        fi
    done
done

SUPPS=()
# CPython's own suppressions (Misc/valgrind-python.supp; Debian ships it as python3.supp).
for f in /usr/lib/valgrind/python3.supp /usr/lib/x86_64-linux-gnu/valgrind/python3.supp \
         "$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("srcdir") or "")')/Misc/valgrind-python.supp"; do
    if [[ -f "$f" ]]; then SUPPS+=("--suppressions=$f"); break; fi
done
[[ -f "$HERE/valgrind.supp" ]] && SUPPS+=("--suppressions=$HERE/valgrind.supp")

LOG="${VALGRIND_LOG:-$(mktemp "${TMPDIR:-/tmp}/fastrnn-valgrind.XXXXXX.log")}"
echo "valgrind $(valgrind --version | sed 's/valgrind-//') memcheck on:"
printf '    %s\n' "${SOS[@]}"
echo "suppressions: ${SUPPS[*]:-none}"
echo "log: $LOG"

# --errors-for-leak-kinds=none / --leak-check=no: CPython keeps memory until exit by
# design; the target is invalid reads/writes and uses of uninitialised values.
# --track-origins=yes: say where an uninitialised value came from.
PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=1 \
    --leak-check=no --errors-for-leak-kinds=none --track-origins=yes --num-callers=40 \
    --gen-suppressions=all "${SUPPS[@]}" --log-file="$LOG" "$@" \
    "$PY" "$HERE/valgrind_core.py" "${CANARY[@]}"
rc=$?

summary="$(grep -E "ERROR SUMMARY" "$LOG" | tail -1 | sed 's/^==[0-9]*== //')"
nerr="$(sed -nE 's/.*ERROR SUMMARY: ([0-9]+) errors.*/\1/p' <<<"$summary")"
# Errors whose stack passes through fastrnn's own code (the Cython module or C kernels).
ours="$(awk '/^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall|Mismatched|Source and dest)/{e=1; hit=0}
             e && /(fastrnn|_head|_elman|_lstm|_gru|fr_[a-z_]+_f(32|64))/{hit=1}
             e && /^==[0-9]+== $/{if (hit) n++; e=0}
             END{print n+0}' "$LOG")"
if [[ "${nerr:-x}" != 0 ]]; then
    echo
    grep -E -A40 "^==[0-9]+== (Invalid|Conditional|Use of uninit|Syscall|Mismatched|Source and dest)" "$LOG" | head -200
fi

echo
echo "run time: $((SECONDS - T0)) s; exit status $rc"
echo "memcheck: ${summary:-no ERROR SUMMARY (valgrind did not finish?)}"
echo "errors with fastrnn code on the stack: $ours"
if ((${#CANARY[@]})); then
    # valgrind_core.py --canary plants one read of 8 bytes past an array's end in each
    # compiled module: fr_colsum_f64 in _head and in _elman (each its own copy of
    # csrc/fr_kernels.c), fr_lstm_fwd_f64 in _lstm and fr_gru_fwd_f64 in _gru
    # (csrc/fr_gates.c). Every one must be reported, as an error of its own.
    reads="$(awk '/^==[0-9]+== Invalid read of size 8$/{e=1; hit=0; next}
                  e && /fr_[a-z_]+_f64/{hit=1}
                  e && /^==[0-9]+== $/{if (hit) n++; e=0}
                  END{print n+0}' "$LOG")"
    echo "planted reads reported: $reads of ${#MODULES[@]}"
    if ((reads >= ${#MODULES[@]})) && grep -q "fr_lstm_fwd_f64" "$LOG" \
            && grep -q "fr_gru_fwd_f64" "$LOG"; then
        echo "valgrind.sh --canary: OK (memcheck reported every planted read; log: $LOG)"
        exit 0
    fi
    echo "valgrind.sh --canary: FAIL: not every planted out-of-bounds read was reported ($LOG)"
    exit 1
fi
if ((rc != 0)) || [[ "${nerr:-x}" != 0 ]]; then
    echo "valgrind.sh: FAIL (log kept: $LOG)"
    exit 1
fi
[[ -n "${VALGRIND_LOG:-}" ]] || rm -f "$LOG"
echo "valgrind.sh: OK"
