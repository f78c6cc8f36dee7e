# shellcheck shell=bash
# Sourced by the setup scripts. `run CMD...` prints the command (shell-quoted), then runs it
# unless DRY_RUN=1, so every script can show exactly what it would do before doing it.
DRY_RUN=${DRY_RUN:-0}

run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  if [[ "$DRY_RUN" != 1 ]]; then "$@"; fi
}
