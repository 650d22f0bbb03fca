#!/usr/bin/env bash
# Opens `flopnet report` pages in headless Chromium: they must load without console messages
# (the page has no scripts, so any message is a fault) and reference nothing outside themselves.
# Takes the screenshot docs/pictures.md shows (docs/report.png).
#
# Installs Debian's `chromium` if it is missing (needs apt and root). Usage, from anywhere:
#   tests/chromium/check_report.sh            # check, and refresh docs/report.png
#   SCREENSHOT=/tmp/r.png tests/chromium/check_report.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)

if ! command -v chromium >/dev/null; then
  echo "== installing chromium (Debian package)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 ||
    (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)
fi
chromium --version

echo "== building the release binary"
cargo build --release --quiet
flopnet=target/release/flopnet

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

browse() { # browse FILE.html EXTRA-ARGS...: prints what Chromium logged
  local page=$1
  shift
  timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --host-resolver-rules='MAP * ~NOTFOUND' --user-data-dir="$(mktemp -d -p "$work")" \
    --enable-logging=stderr --v=0 "$@" "file://$page" 2>&1 >"$work/dom.html" || true
}

# The detector must see a console message when there is one, or its silence proves nothing.
printf '<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><script>console.error("canary"); nope();</script></body></html>' >"$work/canary.html"
if ! browse "$work/canary.html" --dump-dom | grep -q 'CONSOLE.*Uncaught ReferenceError'; then
  echo "FAIL: Chromium did not report the canary page's console error; the check cannot work here" >&2
  exit 1
fi

echo "== training a small network for its metrics"
"$flopnet" train 784-30-10 --epochs 4 --batch 32 --metrics "$work/metrics.jsonl" >/dev/null

status=0
check() { # check NAME FLOPNET-REPORT-ARGS...
  local name=$1
  shift
  local page="$work/$name.html"
  "$flopnet" report "$@" -o "$page" >/dev/null
  if grep -nE '<script|<link rel="stylesheet"| src=|url\(|href="https?:|@import' "$page"; then
    echo "FAIL $name: the page references something outside itself" >&2
    status=1
  fi
  local log
  log=$(browse "$page" --dump-dom)
  if grep -E 'CONSOLE|Uncaught' <<<"$log"; then
    echo "FAIL $name: console messages" >&2
    status=1
  fi
  local svgs
  svgs=$(grep -o '<svg' "$work/dom.html" | wc -l)
  if [ "$svgs" -lt 3 ]; then
    echo "FAIL $name: the rendered page holds $svgs SVG pictures, expected at least 3" >&2
    status=1
  fi
  echo "ok $name: loads without console messages, $svgs inline SVG pictures"
}

check seed 30-30-30 --act sigmoid
check mnist 784-800-10 --batch 64 --optimizer adam --epochs 10
# The embedded subset trains on 5,400 examples per epoch.
check trained 784-30-10 --batch 32 --optimizer adam --epochs 4 --examples 5400 --metrics "$work/metrics.jsonl"

shot=${SCREENSHOT:-docs/report.png}
case "$shot" in /*) ;; *) shot="$PWD/$shot" ;; esac
browse "$work/trained.html" --screenshot="$shot" --window-size=1280,2000 --hide-scrollbars >/dev/null
if ! [ -s "$shot" ]; then
  echo "FAIL: no screenshot at $shot" >&2
  status=1
else
  echo "screenshot: $shot"
fi
echo "chromium check took $(($(date +%s) - start)) s"
exit $status
