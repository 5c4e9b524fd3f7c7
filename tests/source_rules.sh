#!/usr/bin/env bash
# Source rules that a compiler cannot enforce, checked over the whole tree.
# - No std::filesystem::remove_all: pip's libtorch_cpu.so exports its own copy
#   of std::filesystem and a call bound to its remove_all jumps to address 0.
#   Directories are removed by kalm::io::remove_tree (lib/src/io/remove_tree.cpp).
set -u
src=${KALM_SOURCE_DIR:?KALM_SOURCE_DIR must point at the source tree}
failures=0
checks=0
rule() {  # rule NAME REGEX: no C++ line in lib/ tools/ tests/ bench/ may match
  checks=$((checks + 1))
  local hits
  hits=$(grep -rnE --include='*.cpp' --include='*.h' --include='*.hpp' --include='*.cc' -- "$2" \
           "$src/lib" "$src/tools" "$src/tests" "$src/bench" | grep -vE '^[^:]+:[0-9]+:\s*//' || true)
  if [ -n "$hits" ]; then
    echo "FAIL: $1"; echo "$hits" | sed 's/^/  /'
    failures=$((failures + 1))
  fi
}
rule "raw remove_all (use kalm::io::remove_tree)" '\bremove_all\s*\('
echo "$((checks - failures)) passed, $failures failed"
[ "$failures" -eq 0 ]
