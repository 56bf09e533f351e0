#!/usr/bin/env bash
# clang-format --dry-run --Werror over every C++ file of the repository
# (.clang-format at the root; Debian clang-format 14). A file that is not
# formatted fails the check with the diff's first lines; run
#   clang-format -i FILE...
# to fix it. First proves that the tool does detect a misformatted file,
# so an empty file list or a broken tool cannot pass silently.
# usage: check_format.sh SOURCE_DIR
set -euo pipefail
root=${1:?usage: check_format.sh SOURCE_DIR}
cd "$root"
tool=$(command -v clang-format-14 || command -v clang-format)
[ -f .clang-format ] || { echo "check_format: no .clang-format in $root"; exit 1; }

if printf 'int  main( ){return 0;}\n' |
    "$tool" --dry-run --Werror --assume-filename=probe.cpp >/dev/null 2>&1; then
  echo "check_format: $tool accepted a misformatted probe: the check would prove nothing"
  exit 1
fi

mapfile -t files < <(find common lb node-proxy tests -type f \
  \( -name '*.h' -o -name '*.cpp' -o -name '*.inl' \) -not -path 'tests/fuzz/corpus/*' | sort)
[ ${#files[@]} -gt 50 ] || { echo "check_format: only ${#files[@]} files found"; exit 1; }
status=0
out=$("$tool" --dry-run --Werror "${files[@]}" 2>&1) || status=$?
if [ $status -ne 0 ]; then
  printf '%s\n' "$out" | head -80
  echo "check_format: the files above are not clang-format clean (clang-format -i them)"
  exit 1
fi
echo "check_format: ${#files[@]} files clean"
