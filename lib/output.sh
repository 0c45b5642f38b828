#!/usr/bin/env bash
# Build log helpers in Heroku's style, shared by bin/compile and lib/binary.sh.
#
# Usage: source "$BUILDPACK_DIR/lib/output.sh"
#   output::step "Installing launcher"      # -----> Installing launcher
#   output::detail "Using cached binary"    #        Using cached binary
#   output::warning "Pinned worker count"   #  !     Pinned worker count   (stderr)
#   output::error "Download failed" "Fix"   #  !     ... (stderr), then exit 1
# Every helper takes one line per argument.

output::step() {
  local line
  for line in "$@"; do
    printf -- '-----> %s\n' "${line}"
  done
}

output::detail() {
  local line
  for line in "$@"; do
    printf '       %s\n' "${line}"
  done
}

output::warning() {
  local line
  for line in "$@"; do
    printf ' !     %s\n' "${line}" >&2
  done
}

# Prints the lines as a warning block, then ends the build.
output::error() {
  output::warning "$@"
  exit 1
}

# Seconds since the epoch; with output::elapsed, times one step of the build log.
output::now() {
  date +%s
}

# Usage: output::elapsed START  -> prints "Ns" since START (from output::now).
output::elapsed() {
  printf '%ss' "$(($(date +%s) - $1))"
}

# Usage: COMMAND | output::indent  -> COMMAND's output as detail lines, line by line as it comes.
output::indent() {
  sed -u 's/^/       /'
}
