#!/usr/bin/env bash
# What the tests need beyond Python: Java 17+ (the Spark engine) and Chromium (the report test renders
# report.html headless). Installed with apt when missing and we are root; otherwise those tests skip.
set -euo pipefail
need=()
major=0
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
fi
[ "${major:-0}" -ge 17 ] || need+=(openjdk-17-jre-headless)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} for the Spark and report tests"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "missing ${need[*]}: the Spark / report tests will be skipped (install them with your package manager)" >&2
fi
