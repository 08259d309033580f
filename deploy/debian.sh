#!/bin/sh
# The newcomer's entry point on Debian 12 (as root, or a user with sudo):
#
#   deploy/debian.sh run    install the packages, build, start `stsrelay run`
#                           on 127.0.0.1:2525 with its queue under ./var
#   deploy/debian.sh test   install the packages, build, run the whole test
#                           suite, then again under ASan + UBSan
#
# .ci/run calls `deploy/debian.sh test`.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

build_packages="build-essential cmake pkg-config clang-format
  libasio-dev libssl-dev libc-ares-dev libspdlog-dev libfmt-dev
  libsqlite3-dev sqlite3 libtomlplusplus-dev nlohmann-json3-dev
  libcli11-dev libexpected-dev ca-certificates"
test_packages="libgtest-dev libgmock-dev openssl swaks python3 procps"

jobs=$(nproc 2>/dev/null || echo 2)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
  # shellcheck disable=SC2086  # the lists are meant to split into words
  missing=$(dpkg-query -W -f='${Package} ${Status}\n' $* 2>/dev/null |
            awk '$NF != "installed" {print $1}')
  for package in $*; do
    dpkg-query -W "$package" >/dev/null 2>&1 || missing="$missing $package"
  done
  if [ -n "$(echo "$missing" | tr -d ' ')" ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
  fi
}

build() {
  dir=$1
  shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
  cmake --build "$dir" -j "$jobs"
}

check_format() {
  unformatted=$(git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror 2>&1 | grep -c 'error:' || true)
  if [ "$unformatted" -ne 0 ]; then
    git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run -Werror
    echo "clang-format: $unformatted places differ from .clang-format" >&2
    exit 1
  fi
}

case "${1:-}" in
  run)
    install_packages $build_packages
    build build -DSTSRELAY_TESTS=OFF
    mkdir -p var
    echo "stsrelay: listening on 127.0.0.1:2525, queue in ./var/spool; Ctrl-C stops it" >&2
    exec build/relay/stsrelay run
    ;;
  test)
    install_packages $build_packages $test_packages
    check_format
    build build
    (cd build && ctest --output-on-failure -j "$jobs")
    build build-asan -DSTSRELAY_SANITIZE=ON
    (cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
       ctest --output-on-failure -j "$jobs" -LE 'interop|container')
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
