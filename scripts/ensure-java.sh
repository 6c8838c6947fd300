#!/usr/bin/env bash
# Spark (the `--engine spark` tests) needs Java 17+. Install it with apt when missing and we are root.
set -euo pipefail
if command -v java >/dev/null 2>&1; then
  major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  if [ "${major:-0}" -ge 17 ]; then exit 0; fi
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Java 17 for Spark (openjdk-17-jre-headless)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null
else
  echo "Java 17+ not found: the Spark tests will be skipped (install openjdk-17-jre-headless)" >&2
fi
