#!/usr/bin/env bash
# Install Debian's Chromium (and the fonts its screenshots need) for tests/e2e/.
# Why Debian's package: Playwright's own browser download is not reachable from CI/classroom
# machines, so the tests launch /usr/bin/chromium via executable_path.
# Why the fonts: without them text renders as empty boxes in the e2e screenshots (DejaVu for
# text, Noto Color Emoji for the checkers' pass/fail marks).
# Idempotent (does nothing when everything is present), quiet and non-interactive.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
PACKAGES=(chromium fonts-dejavu-core fonts-noto-color-emoji)

missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ -x "$CHROMIUM" ] && [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "${#missing[@]}" -eq 0 ]; then
    missing=(chromium)  # no dpkg database entry but no binary either: reinstall
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-browser.sh: missing ${missing[*]} and not root (no sudo)." >&2
        echo "  Fix: run 'apt-get install -y ${missing[*]}' as root, or skip the e2e tests." >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser.sh: missing ${missing[*]} and apt-get is not available." >&2
    echo "  Fix: install Chromium with your package manager so that $CHROMIUM exists." >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-browser.sh: installing ${missing[*]} (for tests/e2e) ..."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && \
       $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-browser.sh: apt-get failed (log above)." >&2
    exit 1
fi

if [ ! -x "$CHROMIUM" ]; then
    echo "install-browser.sh: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "install-browser.sh: $("$CHROMIUM" --version 2>/dev/null || echo chromium) ready."
