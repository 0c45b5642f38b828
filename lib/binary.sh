#!/usr/bin/env bash
# Obtains the launcher binary at build time, in this order (docs/architecture.md, "Getting the binary"):
#   (a) a prebuilt binary in the buildpack tree (bin/prebuilt/launcher-linux-ARCH + .sha256),
#   (b) a download of the release binary named in buildpack.toml, verified against its SHA-256,
#   (c) a build from the buildpack's own source with cargo, cached in CACHE_DIR by source hash
#       (installing a Rust toolchain into CACHE_DIR first when there is none).
#
# Usage: source "$BUILDPACK_DIR/lib/output.sh"; source "$BUILDPACK_DIR/lib/binary.sh"
#   binary::obtain DEST CACHE_DIR ENV_DIR    # writes an executable, verified binary to DEST
#   binary::version DEST                     # checks that it runs: BINARY_VERSION
#   binary::cargo_build CARGO TARGET_DIR     # the release build (also used by bin/package);
#                                            # prints the path of the built binary
#   binary::toml_field TABLE KEY             # a value of buildpack.toml (also bin/package's)
# bin/compile passes its CACHE_DIR and ENV_DIR; bin/build a cache layer and <platform>/env.
# Needs BUILDPACK_DIR. Build-time settings are read from ENV_DIR files (never sourced), then from the
# environment: LAUNCHER_BINARY_URL, LAUNCHER_BINARY_SHA256, LAUNCHER_RUSTUP_INIT_URL.

BINARY_CURL_OPTIONS=(--fail --silent --show-error --location --retry 3 --retry-connrefused
  --connect-timeout 10 --max-time 120)

binary::obtain() {
  local dest="$1" cache_dir="$2" env_dir="$3"
  local arch
  arch="$(binary::arch)"
  mkdir -p "$(dirname "${dest}")"
  if [[ -f "${BUILDPACK_DIR}/bin/prebuilt/launcher-linux-${arch}" ]]; then
    binary::from_prebuilt "${dest}" "${arch}"
  else
    binary::from_release "${dest}" "${arch}" "${env_dir}"
    if [[ "${BINARY_DOWNLOADED}" != 1 ]]; then
      binary::from_source "${dest}" "${arch}" "${cache_dir}" "${env_dir}"
    fi
  fi
  chmod 0755 "${dest}"
}

# The machine's architecture as Rust and our file names spell it.
binary::arch() {
  local machine
  machine="$(uname -m)"
  case "${machine}" in
    x86_64 | amd64) echo "x86_64" ;;
    aarch64 | arm64) echo "aarch64" ;;
    *) output::error "Unsupported architecture: ${machine}" \
      "The launcher buildpack runs on x86_64 and aarch64 (arm64) only." ;;
  esac
}

# Usage: binary::setting NAME ENV_DIR -> the value of a build-time setting, or nothing.
# A config var (a file in ENV_DIR) wins over the environment. The file is read, never sourced.
binary::setting() {
  local name="$1" env_dir="$2"
  if [[ -n "${env_dir}" && -f "${env_dir}/${name}" ]]; then
    printf '%s' "$(<"${env_dir}/${name}")"
  else
    printf '%s' "${!name:-}"
  fi
}

# Usage: binary::toml_field TABLE KEY -> KEY's value in buildpack.toml's [TABLE], e.g.
#   binary::toml_field buildpack version; binary::toml_field metadata.release.x86_64 url
# Understands the form buildpack.toml uses, one `key = "value"` per line, no escapes in the value.
# Every other table header ends the table, [[targets]] and [[targets.distros]] (whose `version`
# is Ubuntu's) included.
binary::toml_field() {
  local table="$1" key="$2"
  awk -v section="[${table}]" -v key="${key}" '
    /^[[:space:]]*\[/ { gsub(/[[:space:]]/, ""); inside = ($0 == section); next }
    inside && $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*"/, ""); sub(/".*$/, ""); print; exit
    }' "${BUILDPACK_DIR}/buildpack.toml"
}

# Usage: binary::sha256 FILE -> the file's SHA-256, lower-case hex.
binary::sha256() {
  sha256sum "$1" | cut -d ' ' -f 1
}

# Usage: binary::checksum VALUE -> VALUE as binary::verify compares it: its first field (so the
# whole line of a .sha256 file, "HASH  launcher-linux-x86_64", will do), in lower case. Returns 1,
# printing nothing, when that is not a SHA-256 (64 hex digits).
binary::checksum() {
  local first
  read -r first _ <<<"$1" || true
  first="${first,,}"
  [[ "${first}" =~ ^[0-9a-f]{64}$ ]] || return 1
  printf '%s' "${first}"
}

# Usage: binary::verify FILE EXPECTED HEADLINE [ADVICE...] || <clean up>; exit 1
# Returns 0 when FILE's SHA-256 is EXPECTED; otherwise prints HEADLINE, both checksums and ADVICE as
# a warning block and returns 1, so the caller can clean up before ending the build.
binary::verify() {
  local file="$1" expected="$2" headline="$3" actual
  shift 3
  actual="$(binary::sha256 "${file}")"
  [[ "${actual}" == "${expected}" ]] && return 0
  output::warning "${headline}" "Expected: ${expected}" "Actual:   ${actual}" "$@"
  return 1
}

# (a) The binary a release package ships in bin/prebuilt; a checksum mismatch ends the build.
binary::from_prebuilt() {
  local dest="$1" arch="$2"
  local prebuilt="${BUILDPACK_DIR}/bin/prebuilt/launcher-linux-${arch}"
  local start expected
  start="$(output::now)"
  [[ -f "${prebuilt}.sha256" ]] ||
    output::error "The buildpack's prebuilt binary has no checksum file: ${prebuilt}.sha256" \
      "The buildpack package is incomplete; use a release made by bin/package."
  expected="$(cut -d ' ' -f 1 <"${prebuilt}.sha256")"
  binary::verify "${prebuilt}" "${expected}" \
    "The buildpack's prebuilt binary does not match its SHA-256 (${prebuilt})." \
    "The buildpack package is damaged or was tampered with; use a release made by bin/package." ||
    exit 1
  cp "${prebuilt}" "${dest}"
  output::detail "Using the prebuilt binary in the buildpack (launcher-linux-${arch}, SHA-256 verified, $(output::elapsed "${start}"))"
}

# (b) The release binary named in buildpack.toml (or LAUNCHER_BINARY_URL). Sets BINARY_DOWNLOADED=1
# when it got one; 0 when none is listed or the download failed. A checksum mismatch ends the build.
binary::from_release() {
  local dest="$1" arch="$2" env_dir="$3"
  local url given origin expected start download
  BINARY_DOWNLOADED=0
  url="$(binary::setting LAUNCHER_BINARY_URL "${env_dir}")"
  url="${url:-$(binary::toml_field "metadata.release.${arch}" url)}"
  if [[ -z "${url}" ]]; then
    output::detail "No release binary listed in buildpack.toml for ${arch}; building from source"
    return 0
  fi
  given="$(binary::setting LAUNCHER_BINARY_SHA256 "${env_dir}")"
  origin="LAUNCHER_BINARY_SHA256"
  if [[ -z "${given}" ]]; then
    given="$(binary::toml_field "metadata.release.${arch}" sha256)"
    origin="buildpack.toml's [metadata.release.${arch}] sha256"
  fi
  [[ -n "${given}" ]] ||
    output::error "No SHA-256 to check the launcher binary from ${url} against." \
      "Set LAUNCHER_BINARY_SHA256 to the binary's SHA-256 (sha256sum prints it)."
  expected="$(binary::checksum "${given}")" ||
    output::error "${origin} is not a SHA-256: \"${given%%$'\n'*}\"" \
      "Set it to the binary's SHA-256, 64 hex digits: the first field of what sha256sum prints," \
      "or the whole line of the .sha256 file a release has beside each binary."
  start="$(output::now)"
  download="${dest}.download"
  if ! curl "${BINARY_CURL_OPTIONS[@]}" --output "${download}" "${url}"; then
    rm -f "${download}"
    output::warning "Could not download the launcher binary from ${url}; building from source instead."
    return 0
  fi
  binary::verify "${download}" "${expected}" \
    "The launcher binary downloaded from ${url} does not match its SHA-256." \
    "It may have been tampered with, so the build stops here. If you use a mirror," \
    "set LAUNCHER_BINARY_SHA256 to the SHA-256 of the release binary it serves." ||
    {
      rm -f "${download}"
      exit 1
    }
  mv "${download}" "${dest}"
  BINARY_DOWNLOADED=1
  output::detail "Downloaded the release binary from ${url} (SHA-256 verified, $(output::elapsed "${start}"))"
}

# (c) Builds from the buildpack's own source; the result is cached by source hash, so a warm cache
# runs no cargo at all.
binary::from_source() {
  local dest="$1" arch="$2" cache_dir="$3" env_dir="$4"
  local start hash cached built
  start="$(output::now)"
  hash="$(binary::source_hash)"
  cached="${cache_dir}/launcher/launcher-${hash}"
  if [[ -x "${cached}" ]]; then
    cp "${cached}" "${dest}"
    output::detail "Using the binary built from source, cached (source ${hash:0:12}, $(output::elapsed "${start}"))"
    return 0
  fi
  binary::find_cargo "${arch}" "${cache_dir}" "${env_dir}"
  output::detail "Building from source with ${BINARY_CARGO} (the first build takes minutes; pin a release for fast builds)"
  built="$(binary::cargo_build "${BINARY_CARGO}" "${cache_dir}/launcher/target" "${arch}")"
  find "${cache_dir}/launcher" -maxdepth 1 -name 'launcher-*' -type f -delete
  cp "${built}" "${cached}"
  cp "${built}" "${dest}"
  output::detail "Built from source with cargo (source ${hash:0:12}, $(output::elapsed "${start}"))"
}

# SHA-256 over Cargo.toml, Cargo.lock and launcher/ (file names and contents, sorted), so the cache
# key changes exactly when the source does.
binary::source_hash() {
  (
    cd "${BUILDPACK_DIR}" &&
      find Cargo.toml Cargo.lock launcher -type f -print0 | LC_ALL=C sort -z |
      xargs -0 sha256sum | sha256sum | cut -d ' ' -f 1
  )
}

# Sets BINARY_CARGO to the cargo to use: the one on PATH, else one installed in CACHE_DIR by an earlier
# build, else it installs a minimal toolchain into CACHE_DIR with rustup-init. For a toolchain in
# CACHE_DIR it exports RUSTUP_HOME and CARGO_HOME, which rustup's cargo needs.
binary::find_cargo() {
  local arch="$1" cache_dir="$2" env_dir="$3"
  local cargo_home="${cache_dir}/launcher/cargo-home"
  if BINARY_CARGO="$(command -v cargo)"; then
    return 0
  fi
  export RUSTUP_HOME="${cache_dir}/launcher/rustup-home" CARGO_HOME="${cargo_home}"
  if [[ ! -x "${cargo_home}/bin/cargo" ]]; then
    binary::install_toolchain "${arch}" "${cache_dir}" "${env_dir}"
  fi
  BINARY_CARGO="${cargo_home}/bin/cargo"
}

binary::install_toolchain() {
  local arch="$1" cache_dir="$2" env_dir="$3"
  local url start work expected
  url="$(binary::setting LAUNCHER_RUSTUP_INIT_URL "${env_dir}")"
  url="${url:-https://static.rust-lang.org/rustup/dist/${arch}-unknown-linux-gnu/rustup-init}"
  start="$(output::now)"
  output::detail "No cargo found; installing a Rust toolchain into the build cache from ${url}"
  work="$(mktemp -d)"
  if ! curl "${BINARY_CURL_OPTIONS[@]}" --output "${work}/rustup-init" "${url}" ||
    ! curl "${BINARY_CURL_OPTIONS[@]}" --output "${work}/rustup-init.sha256" "${url}.sha256"; then
    rm -rf "${work}"
    output::error "Could not download rustup-init from ${url}." \
      "Building the launcher from source needs a Rust toolchain. Use a release of this buildpack," \
      "which ships a prebuilt binary, or set LAUNCHER_BINARY_URL."
  fi
  expected="$(cut -d ' ' -f 1 <"${work}/rustup-init.sha256")"
  binary::verify "${work}/rustup-init" "${expected}" \
    "rustup-init from ${url} does not match its SHA-256 (${url}.sha256)." ||
    {
      rm -rf "${work}"
      exit 1
    }
  chmod 0755 "${work}/rustup-init"
  if ! "${work}/rustup-init" -y --profile minimal --no-modify-path 2>&1 | output::indent; then
    rm -rf "${work}"
    output::error "rustup-init from ${url} could not install a Rust toolchain (its output is above)." \
      "Use a release of this buildpack, which ships a prebuilt binary, or set LAUNCHER_BINARY_URL."
  fi
  rm -rf "${work}"
  [[ -x "${CARGO_HOME}/bin/cargo" ]] ||
    output::error "rustup-init finished but installed no cargo in ${CARGO_HOME}/bin."
  output::detail "Installed the Rust toolchain ($(output::elapsed "${start}"))"
}

# Usage: binary::version FILE -> sets BINARY_VERSION to what the installed binary FILE reports
# (`launcher X.Y.Z`). A binary that does not run here (built for another architecture or C
# library, or damaged at its source) ends the build, and is removed first.
binary::version() {
  local file="$1" status=0
  # shellcheck disable=SC2034 # bin/compile and bin/build print it.
  BINARY_VERSION="$("${file}" --version)" || status=$?
  [[ ${status} -eq 0 ]] && return 0
  rm -f "${file}"
  output::error "The launcher binary does not run here: \`launcher --version\` exited with status ${status}." \
    "It may be built for another architecture or C library, or be damaged. Use a release of this" \
    "buildpack, or set LAUNCHER_BINARY_URL to a static launcher for $(binary::arch)."
}

# Usage: binary::cargo_build CARGO TARGET_DIR [ARCH] -> path of the static release binary.
# Cargo's own output goes to stderr, indented for the build log.
binary::cargo_build() {
  local cargo="$1" target_dir="$2" arch="${3:-$(binary::arch)}"
  local triple="${arch}-unknown-linux-gnu"
  (
    cd "${BUILDPACK_DIR}" &&
      RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="${target_dir}" \
        "${cargo}" build --release --locked --target "${triple}" --package launcher --bin launcher \
        2>&1 | output::indent >&2
  ) || output::error "cargo could not build the launcher (output above)."
  printf '%s\n' "${target_dir}/${triple}/release/launcher"
}
