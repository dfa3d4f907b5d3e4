#!/usr/bin/env bash
# Mutation testing of the core modules with mutmut 3 (`make mutation`; too slow for `make test`).
#
# Each module is mutated in its own throw-away copy of the working tree (mutmut 3 writes
# mutants/ next to the code; the checkout is never touched) and tested only against the test
# files that guard it, one module at a time. Results: benchmarks/measured/mutation.json
# (mutants, killed, survived per module) and, per module, the surviving mutants' diffs under
# build/mutation/<module>/survivors.txt (docs/testing.md says which survivors are harmless).
#
# Usage: scripts/mutation.sh [module-key ...]   (default: every module below)
#        MUTATION_CHILDREN=2 scripts/mutation.sh pgd
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${MUTATION_VENV:-$ROOT/build/mutation-venv}"
WORK="${MUTATION_WORK:-$ROOT/build/mutation}"
CHILDREN="${MUTATION_CHILDREN:-1}"
OUT_JSON="$ROOT/benchmarks/measured/mutation.json"

# module key | file to mutate | test selection (pytest node ids / files)
MODULES=(
  "pgd|src/robustedge/attacks/pgd.py|tests/test_mutation_kills.py tests/test_guards.py::test_pgd_projects_every_step tests/test_guards.py::test_pgd_default_step_size"
  "fgsm|src/robustedge/attacks/fgsm.py|tests/test_mutation_kills.py"
  "attack_base|src/robustedge/attacks/base.py|tests/test_mutation_kills.py"
  "prox|src/robustedge/compress/prox.py|tests/test_compress_prox.py tests/test_mutation_kills.py"
  "schedule|src/robustedge/compress/schedule.py|tests/test_compress_prox.py::test_lam_controller_follows_ramp tests/test_gmp.py tests/test_mutation_kills.py"
  "targets|src/robustedge/compress/targets.py|tests/test_compress_prox.py tests/test_mutation_kills.py"
  "parity|src/robustedge/export/parity.py|tests/test_mutation_kills.py tests/test_guards.py"
  "ledger|src/robustedge/export/ledger.py|tests/test_mutation_kills.py"
  "bundle_format|src/robustedge/device/bundle_format.py|tests/test_guards.py tests/test_mutation_kills.py"
  "runner|src/robustedge/device/runner.py|tests/test_guards.py tests/test_mutation_kills.py"
  "recipe_runner|src/robustedge/recipe/runner.py|tests/test_guards.py tests/test_mutation_kills.py"
)

if [ ! -x "$VENV/bin/mutmut" ]; then
  python3.11 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements/mutation.txt"
  # the project's own environment (torch, numpy, ...) behind mutmut's
  site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "import site; site.addsitedir('$ROOT/.venv/lib/python3.11/site-packages')" \
    > "$site/zz_robustedge_venv.pth"
fi

wanted=("$@")
selected() {
  [ ${#wanted[@]} -eq 0 ] && return 0
  local k
  for k in "${wanted[@]}"; do [ "$k" = "$1" ] && return 0; done
  return 1
}

mkdir -p "$WORK"
for entry in "${MODULES[@]}"; do
  IFS='|' read -r key file tests <<<"$entry"
  selected "$key" || continue
  dir="$WORK/$key"
  rm -rf "$dir"
  mkdir -p "$dir"
  # a copy of the working tree (tracked + untracked, not ignored files)
  (cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$dir" 2>/dev/null || true)
  python3.11 - "$dir/pyproject.toml" "$file" "$tests" <<'PY'
import sys
path, file, tests = sys.argv[1], sys.argv[2], sys.argv[3].split()
sel = ", ".join(f'"{t}"' for t in tests)
with open(path, "a") as f:
    f.write(
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f'only_mutate = ["src/{file[len("src/"):]}"]\n'
        f"pytest_add_cli_args_test_selection = [{sel}]\n"
        'pytest_add_cli_args = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"]\n'
        "timeout_multiplier = 5.0\n"
        "timeout_constant = 10.0\n"
        'process_isolation = "forkserver"\n'
        "use_git_change_detection = false\n"
    )
PY
  echo "== $key: $file"
  (cd "$dir" && OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 "$VENV/bin/mutmut" run --max-children "$CHILDREN" >"$dir/run.log" 2>&1) || {
    echo "mutmut failed for $key (see $dir/run.log)"; tail -20 "$dir/run.log"; continue; }
  (cd "$dir" && "$VENV/bin/mutmut" export-cicd-stats >/dev/null 2>&1 || true)
  (cd "$dir" && "$VENV/bin/mutmut" results --all true >"$dir/results.txt" 2>&1 || true)
  tail -3 "$dir/run.log"
done
