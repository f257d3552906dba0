# Shared by quickstart.sh and test.sh: create .venv and install the project into it.
# Python 3.11 and pip take torch 2.14.1 and torchvision 0.29.1 from this machine's local
# package files, so the exact pins in pyproject.toml avoid a multi-gigabyte download.

ensure_venv() {
    local extras="$1"
    local python="${PYTHON:-python3}"

    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $($python --version)"
        "$python" -m venv .venv
    fi

    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".${extras}"
}
