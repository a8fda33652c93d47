#!/bin/bash
# Installs progtc-kernel into the Python that the sandbox's Jupyter kernels run and
# enables the extension in every IPython kernel. Runs as root during the E2B template
# build (see template.py); it can also be run by hand inside a sandbox.
#
# Usage: setup_kernel.sh <pip requirement | path to wheel or sdist> [more pip arguments]
#   e.g. setup_kernel.sh progtc-kernel==0.1.0
#        setup_kernel.sh "progtc-kernel @ git+https://github.com/OWNER/REPO@REF"
#        setup_kernel.sh /tmp/progtc-kernel-wheels/progtc_kernel-0.1.0-py3-none-any.whl
#
# Environment (all optional):
#   PROGTC_KERNEL_PYTHON       interpreter to install into (default: argv[0] of the
#                              "python3" kernelspec, else /usr/local/bin/python3, else
#                              python3 on PATH)
#   PROGTC_IPYTHON_PROFILE_DIR profile the kernels read
#                              (default: /root/.ipython/profile_default; Jupyter runs as root)
#   PROGTC_KEEP_JUPYTER_PINS   1 (default): do not let pip change the installed Jupyter
#                              stack (ipykernel, ipython, jupyter_client, ...); 0: allow it
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 <pip requirement | wheel path> [pip arguments...]" >&2
    exit 2
fi

# 1. The interpreter of the Python kernels.
PY="${PROGTC_KERNEL_PYTHON:-}"
if [ -z "$PY" ] && command -v jupyter >/dev/null 2>&1; then
    PY=$(jupyter kernelspec list --json 2>/dev/null | python3 -c '
import json, sys
specs = json.load(sys.stdin)["kernelspecs"]
print(specs["python3"]["spec"]["argv"][0])
' 2>/dev/null) || PY=""
fi
if [ -z "$PY" ] && [ -x /usr/local/bin/python3 ]; then
    PY=/usr/local/bin/python3  # the python:3.13 image's Python, which runs Jupyter
fi
PY=$(command -v "${PY:-python3}") || { echo "progtc-kernel: no Python interpreter found" >&2; exit 1; }
echo "progtc-kernel: kernel interpreter $PY ($("$PY" --version 2>&1))"

# 2. Install, keeping the template's Jupyter stack as it is.
CONSTRAINTS=$(mktemp)
trap 'rm -f "$CONSTRAINTS"' EXIT
if [ "${PROGTC_KEEP_JUPYTER_PINS:-1}" = "1" ]; then
    "$PY" -m pip list --format=freeze 2>/dev/null \
        | grep -iE '^(ipykernel|ipython|jupyter[-_]client|jupyter[-_]core|jupyter[-_]server|pyzmq|tornado|traitlets|comm)==' \
        > "$CONSTRAINTS" || true
fi
"$PY" -m pip install --no-cache-dir --disable-pip-version-check -c "$CONSTRAINTS" "$@"

# 3. Enable the extension for every IPython kernel through the profile. Appended once,
#    after whatever the file already holds; `.append` keeps extensions set there.
PROFILE_DIR="${PROGTC_IPYTHON_PROFILE_DIR:-/root/.ipython/profile_default}"
CONFIG="$PROFILE_DIR/ipython_kernel_config.py"
MARKER="# >>> progtc-kernel >>>"
mkdir -p "$PROFILE_DIR"
if ! grep -qF "$MARKER" "$CONFIG" 2>/dev/null; then
    cat >>"$CONFIG" <<'EOF'

# >>> progtc-kernel >>>
# Load progtc_kernel in every IPython kernel: it serves the host's tools as the `tools`
# module over Jupyter comms. Added by progtc-kernel's E2B template (e2b/setup_kernel.sh).
c = get_config()  # noqa: F821
c.InteractiveShellApp.extensions.append("progtc_kernel")
# <<< progtc-kernel <<<
EOF
fi

# 4. Check: the package imports in the kernels' Python and the profile lists it.
"$PY" - "$CONFIG" <<'EOF'
import sys

import progtc_kernel
from traitlets.config.loader import PyFileConfigLoader

path = sys.argv[1]
config = PyFileConfigLoader(path.rsplit("/", 1)[1], path.rsplit("/", 1)[0]).load_config()
extensions = config.InteractiveShellApp.extensions
if not isinstance(extensions, list):  # a LazyConfigValue when the file only appends
    extensions = extensions.get_value([])
if "progtc_kernel" not in extensions:
    sys.exit(f"progtc-kernel: progtc_kernel is not in the extensions of {path}: {extensions}")
print(f"progtc-kernel {progtc_kernel.__version__} installed; {path} loads {extensions}")
EOF
