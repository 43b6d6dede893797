#!/usr/bin/env bash
# asczoo quick start: install asczoo from this repository, synthesise the embedded scenes dataset,
# train the two-stage `quickstart` recipe (segment baseline, then ATReSN-Net initialised from it),
# evaluate both on held-out clips and classify one clip. A few minutes on 2 CPU cores.
#
#   bash quickstart.sh                    # run directory: runs/quickstart
#   bash quickstart.sh --out /tmp/qs      # any `asczoo quickstart` option (--set KEY=VALUE, --fresh)
#   PYTHON=python3.11 bash quickstart.sh
#
# Safe to run again: installing is a no-op, finished stages are reused, an interrupted run continues.
# Installs into the active virtual or conda environment; with none active and a system Python that
# refuses pip installs (PEP 668), into ./.venv (which sees the system's packages, an installed torch
# included).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
PY="${PYTHON:-python3}"
start=$(date +%s)

managed=$("$PY" - <<'PYCODE'
import os, sys, sysconfig
in_env = sys.prefix != sys.base_prefix or "CONDA_PREFIX" in os.environ
marker = os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")
print(int(not in_env and os.path.exists(marker)))
PYCODE
)
if [ "$managed" = 1 ]; then
    [ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
    PY=.venv/bin/python
    echo "quickstart: installing into ./.venv (the system Python is externally managed)"
fi

# Every package at the version of requirements/lock.txt (the set CI tests), so the quick start holds
# whatever the index has released since. A torch already installed in a supported release is kept:
# then the lock's torch and its CUDA libraries are left out of the constraints.
constraints=requirements/lock.txt
if "$PY" -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(0 if (2, 11) <= v < (3, 0) else 1)' 2>/dev/null; then
    constraints=$(mktemp)
    grep -vE '^(torch|torchaudio|triton|nvidia-|cuda-)' requirements/lock.txt > "$constraints"
    echo "quickstart: keeping the installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
fi
echo "quickstart: pip install -e '.[train]' -c requirements/lock.txt (asczoo from this repository, plus matplotlib)"
"$PY" -m pip install --disable-pip-version-check -q -c "$constraints" -e ".[train]"
installed=$(date +%s)
echo "quickstart: installed in $((installed - start)) s"

"$PY" -m asczoo quickstart "$@"
echo "quickstart: total $(( $(date +%s) - start )) s (install $((installed - start)) s)"
