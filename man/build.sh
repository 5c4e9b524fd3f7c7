#!/usr/bin/env bash
# Converts the markdown man pages (man/*.md) into roff with pandoc. The roff files
# are committed, so building and installing kalm needs no pandoc; rerun this after
# editing a page.
set -euo pipefail
cd "$(dirname "$0")"
for md in *.[157].md; do
  pandoc --standalone --from markdown-smart --to man "$md" -o "${md%.md}"
done
