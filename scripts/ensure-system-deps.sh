#!/usr/bin/env bash
# What the project needs beyond Python, installed with apt when missing and we are root.
#   setup: before `pip install` - protobuf-compiler + libprotobuf-dev (gcld3, laion2b's language detector, builds
#          from source against them), a C++ compiler, and wordnet-base (WordNet 3.0 for text_based, offline).
#   test:  Java 17+ (the Spark engine, local[N] and a standalone master + worker) and Chromium (the page tests open
#          the filter report and the leaderboard headless); without them those tests skip.
set -euo pipefail
what=${1:-test}
need=()
if [ "$what" = setup ]; then
  command -v protoc >/dev/null 2>&1 || need+=(protobuf-compiler)
  [ -f /usr/include/google/protobuf/message_lite.h ] || need+=(libprotobuf-dev)
  command -v g++ >/dev/null 2>&1 || need+=(g++)
  [ -f /usr/share/wordnet/data.noun ] || need+=(wordnet-base)
  why="gcld3's build and text_based's WordNet"
else
  major=0
  if command -v java >/dev/null 2>&1; then
    major=$(java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -1)
  fi
  [ "${major:-0}" -ge 17 ] || need+=(openjdk-17-jre-headless)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  why="the Spark and page tests"
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing ${need[*]} for $why"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
elif [ "$what" = setup ]; then
  echo "missing ${need[*]} for $why: install them with your package manager (Debian/Ubuntu:" \
       "apt-get install ${need[*]}), then run make again" >&2
  exit 1
else
  echo "missing ${need[*]}: $why will be skipped (install them with your package manager)" >&2
fi
