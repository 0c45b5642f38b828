#!/usr/bin/env bash
# Build log helpers, shared by bin/compile, bin/build and lib/binary.sh: Heroku's classic build
# log style by default, the style of Heroku's Cloud Native Buildpacks after output::use_cnb_style.
#
# Usage: source "$BUILDPACK_DIR/lib/output.sh"
#   output::use_cnb_style                   # bin/build: the CNB style from here on
#   output::header "Launcher Buildpack"     # CNB only:  ## Launcher Buildpack
#   output::step "Installing launcher"      # -----> Installing launcher     CNB: - Installing launcher
#   output::detail "Using cached binary"    #        Using cached binary     CNB:   - Using cached binary
#   output::warning "Pinned worker count"   #  !     Pinned worker count     CNB: ! Pinned worker count  (stderr)
#   output::error "Download failed" "Fix"   #  !     ... (stderr), then exit 1
#   output::done START                      # CNB only:  - Done (finished in 3s)
# Every helper takes one line per argument.

OUTPUT_STEP='-----> '
OUTPUT_DETAIL='       '
OUTPUT_WARNING=' !     '
OUTPUT_INDENT='       '

output::use_cnb_style() {
  OUTPUT_STEP='- '
  OUTPUT_DETAIL='  - '
  OUTPUT_WARNING='! '
  OUTPUT_INDENT='      '
}

output::header() {
  printf '\n## %s\n\n' "$1"
}

output::step() {
  local line
  for line in "$@"; do
    printf '%s%s\n' "${OUTPUT_STEP}" "${line}"
  done
}

output::detail() {
  local line
  for line in "$@"; do
    printf '%s%s\n' "${OUTPUT_DETAIL}" "${line}"
  done
}

output::warning() {
  local line
  for line in "$@"; do
    printf '%s%s\n' "${OUTPUT_WARNING}" "${line}" >&2
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

# Usage: output::done START  -> the last line of a CNB build log.
output::done() {
  printf -- '- Done (finished in %s)\n' "$(output::elapsed "$1")"
}

# Usage: COMMAND | output::indent  -> COMMAND's output as detail lines, line by line as it comes.
output::indent() {
  sed -u "s/^/${OUTPUT_INDENT}/"
}
