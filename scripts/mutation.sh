#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (`make mutation`; too slow for `make test`).
#
# Each module is mutated in its own throw-away copy of the committed tree (mutmut 3 writes
# mutants/ next to the code, so the checkout is never touched) and tested only against the
# test files that guard it, one module at a time. mutmut runs in a venv of its own
# (requirements/mutation.txt) that sees the project's .venv behind it.
#
# Output: benchmarks/measured/mutation.json (mutants, killed, survived per module; merged, so
# a run of some modules keeps the others' rows) and, per module, the surviving mutants with
# their diffs in build/mutation/<module>/survivors.txt. docs/testing.md says which survivors
# are harmless and why.
#
# Usage: scripts/mutation.sh [module ...]        (default: every module below)
#        MUTATION_CHILDREN=2 scripts/mutation.sh pgd prox
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MUTATION_VENV:-$ROOT/build/mutation-venv}"
WORK="${MUTATION_WORK:-$ROOT/build/mutation}"
CHILDREN="${MUTATION_CHILDREN:-1}"
OUT_JSON="$ROOT/benchmarks/measured/mutation.json"
PY="${PYTHON:-python3.11}"
REF="${MUTATION_REF:-HEAD}"
COMMIT="$(cd "$ROOT" && git rev-parse --short "$REF")"

K="tests/test_exact_attacks.py tests/test_exact_compress.py tests/test_exact_export.py tests/test_exact_bundle.py tests/test_exact_runner.py tests/test_exact_recipe.py"
G=tests/test_guards.py
# module | file to mutate | the tests that guard it (mutmut runs, per mutant, only those of
# them that call the mutated function)
MODULES=(
  "attacks/pgd|src/robustedge/attacks/pgd.py|$K $G"
  "attacks/fgsm|src/robustedge/attacks/fgsm.py|$K $G"
  "attacks/base|src/robustedge/attacks/base.py|$K $G"
  "compress/prox|src/robustedge/compress/prox.py|$K tests/test_compress_prox.py"
  "compress/schedule|src/robustedge/compress/schedule.py|$K tests/test_compress_prox.py tests/test_gmp.py"
  "compress/targets|src/robustedge/compress/targets.py|$K tests/test_compress_prox.py"
  "export/parity|src/robustedge/export/parity.py|$K $G"
  "export/ledger|src/robustedge/export/ledger.py|$K"
  "device/bundle_format|src/robustedge/device/board/bundle_format.py|$K $G"
  "device/runner|src/robustedge/device/board/runner.py|$K $G"
  "recipe/runner|src/robustedge/recipe/runner.py|$K $G"
)

if [ ! -x "$VENV/bin/mutmut" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements/mutation.txt"
fi
site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# the project's environment (torch, numpy, onnx, ...) behind mutmut's own packages
echo "import site; site.addsitedir('$ROOT/.venv/lib/python3.11/site-packages')" \
  >"$site/zz_robustedge_venv.pth"

wanted=("$@")

# the modules in the order asked for (default: the table's order)
order=()
if [ ${#wanted[@]} -eq 0 ]; then
  order=("${MODULES[@]}")
else
  for w in "${wanted[@]}"; do
    for entry in "${MODULES[@]}"; do
      k="${entry%%|*}"
      if [ "$w" = "$k" ] || [ "$w" = "${k#*/}" ]; then order+=("$entry"); fi
    done
  done
fi

mkdir -p "$WORK" "$(dirname "$OUT_JSON")"
for entry in "${order[@]}"; do
  IFS='|' read -r key file tests <<<"$entry"
  dir="$WORK/${key//\//_}"
  rm -rf "$dir"
  mkdir -p "$dir"
  # a copy of the committed tree (MUTATION_REF, default HEAD): reproducible, and independent
  # of uncommitted work in the checkout
  (cd "$ROOT" && git archive "$REF") | tar -x -C "$dir"
  {
    echo
    echo "[tool.mutmut]"
    echo 'source_paths = ["src"]'
    echo "only_mutate = [\"$file\"]"
    printf 'pytest_add_cli_args_test_selection = [%s]\n' \
      "$(printf '"%s", ' $tests | sed 's/, $//')"
    echo 'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider"]'
    echo "timeout_multiplier = 5.0"
    echo "timeout_constant = 20.0"
    echo 'process_isolation = "fork"'
    echo "use_git_change_detection = false"
  } >>"$dir/pyproject.toml"
  echo "== $key ($file) against: $tests"
  start=$(date +%s)
  if ! (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
    "$VENV/bin/mutmut" run --max-children "$CHILDREN" >"$dir/run.log" 2>&1); then
    echo "mutmut failed for $key (see $dir/run.log)"
    tail -20 "$dir/run.log"
    continue
  fi
  seconds=$(($(date +%s) - start))
  (cd "$dir" && "$VENV/bin/mutmut" results --all true >"$dir/results.txt" 2>&1)
  : >"$dir/survivors.txt"
  for m in $(awk -F: '$2 ~ /survived|no tests/ {gsub(/ /, "", $1); print $1}' "$dir/results.txt"); do
    (cd "$dir" && "$VENV/bin/mutmut" show "$m" >>"$dir/survivors.txt" 2>&1) || true
    echo >>"$dir/survivors.txt"
  done
  "$PY" - "$OUT_JSON" "$key" "$file" "$dir/results.txt" "$seconds" "$CHILDREN" "$COMMIT" $tests <<'PY'
import json, os, platform, subprocess, sys, time
from pathlib import Path

out, key, file, results, seconds, children, commit, *tests = sys.argv[1:]
rows = [line.strip().rsplit(": ", 1) for line in Path(results).read_text().splitlines()]
status = {name: st for name, st in (r for r in rows if len(r) == 2)}
count = lambda *names: sum(1 for s in status.values() if s in names)  # noqa: E731
killed = count("killed", "timeout", "segfault", "caught by type check")
total = len(status)
try:
    data = json.loads(Path(out).read_text())
except (OSError, ValueError):
    data = {}
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
version = subprocess.run(
    [sys.executable, "-c", "import importlib.metadata as m; print(m.version('mutmut'))"],
    capture_output=True, text=True).stdout.strip()
data.update({
    "tool": "mutmut (mutmut 3, fork isolation; scripts/mutation.sh)",
    "hardware": f"{os.cpu_count()}-core {cpu} {platform.machine()} VM, OMP_NUM_THREADS=1, "
                f"{children} mutmut worker(s)",
    "target_killed_fraction": 0.85,
})
mods = data.setdefault("modules", {})
mods[key] = {
    "file": file,
    "tests": tests,
    "mutants": total,
    "killed": killed,
    "survived": count("survived"),
    "no_tests": count("no tests"),
    "timeout": count("timeout"),
    "killed_fraction": round(killed / total, 4) if total else None,
    "survivors": sorted(n for n, s in status.items() if s in ("survived", "no tests")),
    "seconds": int(seconds),
    "commit": commit,
    "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
}
t = sum(m["mutants"] for m in mods.values())
k = sum(m["killed"] for m in mods.values())
data["total"] = {"mutants": t, "killed": k, "killed_fraction": round(k / t, 4) if t else None}
data["modules"] = dict(sorted(mods.items()))
Path(out).write_text(json.dumps(data, indent=2) + "\n")
m = mods[key]
print(f"   {key}: {m['mutants']} mutants, {m['killed']} killed, {m['survived']} survived, "
      f"{m['no_tests']} without tests ({100 * (m['killed_fraction'] or 0):.1f} %), {seconds} s")
PY
done
