#!/usr/bin/env bash
# The console's end-to-end test drives Debian's Chromium (a CJK font so Chinese renders in screenshots).
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
fc-list 2>/dev/null | grep -qi "wqy\|noto.*cjk" || missing+=(fonts-wqy-microhei)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing Debian packages: ${missing[*]} (run: sudo apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "installing ${missing[*]} ..."
  mkdir -p var/logs
  { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; } \
    > var/logs/apt-install.log 2>&1 || { tail -n 20 var/logs/apt-install.log >&2; exit 1; }
fi
