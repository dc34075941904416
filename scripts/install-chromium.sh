#!/usr/bin/env bash
# Debian's chromium and chromium-driver for the viewer's browser tests (tests/test_view_browser.py). Without apt
# or the rights to use it those tests skip with a message; nothing else needs a browser.
set -u
command -v chromium >/dev/null && command -v chromedriver >/dev/null && exit 0
if ! command -v apt-get >/dev/null; then
  echo "no apt-get: install chromium and its driver by hand, or the browser tests skip" >&2
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  sudo=""
elif sudo -n true 2>/dev/null; then
  sudo="sudo -n"
else
  echo "not root and no sudo: install chromium and chromium-driver by hand, or the browser tests skip" >&2
  exit 0
fi
if ! { $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver; } >/dev/null; then
  echo "apt-get could not install chromium and chromium-driver: the browser tests skip" >&2
fi
exit 0
