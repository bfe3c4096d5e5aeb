#!/usr/bin/env bash
# Everything CI checks, in the order that fails fastest: lint, format, import contracts,
# types, tests (the tests include the stale-stub check). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

echo "== ruff check"; "$PY" -m ruff check .
echo "== ruff format --check"; "$PY" -m ruff format --check .
echo "== lint-imports"; "$PY" -c "from importlinter.cli import lint_imports_command; lint_imports_command()"
echo "== mypy --strict"; "$PY" -m mypy
echo "== pytest"; "$PY" -m pytest "$@"
