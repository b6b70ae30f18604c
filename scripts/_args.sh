# Sourced by every scripts/*.sh right after `cd` to the repository root:
#     source scripts/_args.sh "$@"
# lets a script take its variables as arguments as well as from the environment:
#     bash scripts/train.sh num_epochs=1 lr=0.05     # same as
#     num_epochs=1 lr=0.05 bash scripts/train.sh
# Each `name=value` argument is exported before the script's `name=${name:-default}` lines
# run, so it acts exactly like the environment form (and reaches the scripts it calls).
#
# The known names are read from the script itself (and scripts/_launch.sh when it sources
# it, the parts it uses): every `${name:-...}` / `${name:+...}` it expands. The variables at the top of each
# script stay the one place to add or edit a setting; this file needs no list of its own.
#
# An unknown or misspelled name given as an argument (`epochs=1`) is refused with the list of
# known ones, exit status 2. The same mistake in the environment (`epochs=1 bash
# scripts/train.sh`) cannot be caught: the environment always holds unrelated variables (PATH,
# HOME, a caller's own settings), and nothing tells a misspelled setting from one of them.
# Use the argument form when in doubt; `bash scripts/X.sh --help` lists the names.

_args_script=scripts/$(basename "$0")
_args_known=$(
  {
    cat "$_args_script"
    if grep -q '^source scripts/_launch.sh' "$_args_script"; then
      grep '^PYTHON=' scripts/_launch.sh
      if grep -qE '^ *launch ' "$_args_script"; then sed -n '/^launch()/,/^}/p' scripts/_launch.sh; fi
      if grep -qE '^ *job_flags ' "$_args_script"; then sed -n '/^job_flags()/,/^}/p' scripts/_launch.sh; fi
    fi
  } | grep -oE '\$\{[A-Za-z_][A-Za-z0-9_]*:[-+]' | sed -E 's/^\$\{//; s/:[-+]$//' | sort -u | tr '\n' ' '
)
for _args_arg in "$@"; do
  case "$_args_arg" in
    -h|--help)
      echo "usage: bash $_args_script [name=value ...]   (or: name=value bash $_args_script)"
      echo "names: ${_args_known% }"
      echo "Defaults and meanings: the variables at the top of $_args_script."
      exit 0 ;;
  esac
  _args_name=${_args_arg%%=*}
  if [ "$_args_name" = "$_args_arg" ] || ! [[ "$_args_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]]; then
    echo "$(basename "$0"): error: expected name=value, got '$_args_arg' (names: ${_args_known% })" >&2
    exit 2
  fi
  case " $_args_known " in
    *" $_args_name "*) export "$_args_name=${_args_arg#*=}" ;;
    *) echo "$(basename "$0"): error: unknown variable '$_args_name' (known: ${_args_known% })" >&2
       exit 2 ;;
  esac
done
unset _args_arg _args_name _args_known _args_script
