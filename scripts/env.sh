# Sourced by Fog's scripts: one cargo target directory outside the clone, reused between runs.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fog-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
