#!/usr/bin/env bash
# Check the Prometheus configuration, the alert rules and their unit tests with promtool.
# When promtool is missing, install Debian's prometheus package, which ships it (as root).
# NOTE: on a host that runs systemd, installing that package also starts a Prometheus server
# on port 9090; machines without an init system, like CI containers, leave it stopped.
# Usage: bash deploy/check-config.sh
set -euo pipefail

cd "$(dirname "$0")/prometheus"

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found; installing Debian's prometheus package"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

promtool check config prometheus.yml
promtool check rules alerts.yml
promtool test rules alerts.test.yml alerts-flag-rate.test.yml
