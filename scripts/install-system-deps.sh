#!/usr/bin/env bash
# System packages the test suite needs beyond the venv (none yet; the review app's browser tests
# will add Debian's chromium here). Runs as part of `make install`; a no-op when all are present.
set -euo pipefail
exit 0
