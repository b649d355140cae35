# Sourced by the scripts that need root: as root, nothing happens; otherwise the calling script
# runs again through sudo (the README's commands work the same for root and for a sudo user).
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "$0 needs root: run it as root (sudo is not installed)" >&2; exit 1; }
    exec sudo "$0" "$@"
fi
