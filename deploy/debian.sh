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
# swaks needs libnet-ssleay-perl for -tls (only a Recommends of swaks).
# podman (with runc) builds and runs deploy/Dockerfile's image in the container
# test; mmdebstrap makes its Debian base image where no registry is reachable.
test_packages="libgtest-dev libgmock-dev openssl swaks libnet-ssleay-perl python3 procps git
  clang-14 libclang-rt-14-dev unbound nginx-light python3-aiosmtpd postfix python3-yaml
  podman runc mmdebstrap"

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
    # Without an answer, Postfix's package would set up and start a system
    # instance on port 25; the tests run private instances only.
    for package in $missing; do
      if [ "$package" = postfix ]; then
        echo "postfix postfix/main_mailer_type select No configuration" | as_root debconf-set-selections
      fi
    done
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
  if [ -d .git ]; then
    sources=$(git ls-files '*.cpp' '*.hpp')
  else
    sources=$(find smtp queue dns sts tls relay tests bench -name '*.cpp' -o -name '*.hpp' 2>/dev/null)
  fi
  if [ -z "$sources" ]; then
    echo "clang-format: found no sources to check" >&2
    exit 1
  fi
  # shellcheck disable=SC2086  # one word per file
  if ! clang-format --dry-run -Werror $sources; then
    echo "clang-format: the files above differ from .clang-format (clang-format -i FILE)" >&2
    exit 1
  fi
}

# The libFuzzer targets, as tests/<folder>/<target>: built with clang in a
# build of their own (every library instrumented for coverage, ASan and UBSan)
# and each run for a short while, from its seeds in
# tests/<folder>/fuzz_seeds/<target> when there are any.
fuzzers="tests/smtp/smtp_session_fuzzer tests/sts/sts_txt_fuzzer
  tests/sts/sts_policy_fuzzer tests/sts/sts_mx_pattern_fuzzer tests/sts/sts_http_response_fuzzer"

fuzz() {
  dir=build-fuzz
  seconds=${FUZZ_SECONDS:-20}
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCMAKE_CXX_FLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all"
  targets=""
  for fuzzer in $fuzzers; do
    targets="$targets $(basename "$fuzzer")"
  done
  # shellcheck disable=SC2086  # one word per target
  cmake --build "$dir" -j "$jobs" --target $targets
  for fuzzer in $fuzzers; do
    name=$(basename "$fuzzer")
    corpus="$dir/corpus/$name"  # new inputs go here, never into the seeds
    seeds="$(dirname "$fuzzer")/fuzz_seeds/$name"
    [ -d "$seeds" ] || seeds=""
    mkdir -p "$corpus"
    # shellcheck disable=SC2086  # no seeds: no argument
    if ! "$dir/$fuzzer" -max_total_time="$seconds" -artifact_prefix="$dir/$name-" \
         "$corpus" $seeds >"$dir/$name.log" 2>&1; then
      cat "$dir/$name.log" >&2
      echo "fuzz: $name failed; the input is $dir/$name-crash-* (or leak-*, timeout-*)" >&2
      exit 1
    fi
    echo "fuzz: $name: $(tail -n 1 "$dir/$name.log")"
  done
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
    fuzz
    ;;
  *)
    echo "usage: $0 run|test" >&2
    exit 2
    ;;
esac
