#!/usr/bin/env sh
# Print the path of a Python >= 3.12 found on this machine, or explain what to install.
# Looks at $PYTHON, then python3.13/python3.12/python3 on PATH, then pyenv and uv installs.
set -u

ok() {
    "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1
}

for candidate in ${PYTHON:-} python3.14 python3.13 python3.12 python3; do
    [ -n "$candidate" ] || continue
    path=$(command -v "$candidate" 2>/dev/null) || continue
    if ok "$path"; then
        echo "$path"
        exit 0
    fi
done

# pyenv shims refuse versions that are installed but not selected: look at them directly.
for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.1[2-9]* "$HOME"/.local/share/uv/python/cpython-3.1[2-9]*; do
    for exe in "$dir/bin/python3" "$dir/bin/python"; do
        if [ -x "$exe" ] && ok "$exe"; then
            echo "$exe"
            exit 0
        fi
    done
done

echo "error: Python 3.12 or newer is required and none was found." >&2
echo "Install it (e.g. 'apt-get install python3.12 python3.12-venv', 'pyenv install 3.12'," >&2
echo "or 'uv python install 3.12'), or point PYTHON at it: make run PYTHON=/path/to/python3.12" >&2
exit 1
