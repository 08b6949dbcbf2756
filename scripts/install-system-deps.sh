#!/usr/bin/env bash
# System packages the test suite needs beyond the venv: Debian's chromium, which the review app's
# browser tests drive through Playwright (`executable_path=/usr/bin/chromium`; the pinned
# Playwright in pyproject's test extras must match its release, which tests/review checks).
# Runs as part of `make install` (as root in CI); a no-op when everything is present.
set -euo pipefail

if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-system-deps: /usr/bin/chromium is missing; run as root (or: sudo apt-get install -y chromium)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends chromium
fi
