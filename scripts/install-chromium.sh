#!/usr/bin/env bash
# Installs the headless browser the status page test runs in (Debian's
# chromium package), when /usr/bin/chromium is missing. Run by `make test`;
# installing needs root (CI runs as root), otherwise it says what to run.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-chromium: /usr/bin/chromium is missing; as root run: apt-get install -y chromium" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null; then
	echo "install-chromium: no apt-get here; install Chromium and set CHROMIUM to its path" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium >/dev/null
echo "install-chromium: installed $(/usr/bin/chromium --version 2>/dev/null || echo chromium)"
