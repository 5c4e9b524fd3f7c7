#!/bin/sh
# The default experiment's data, converted from dictionaries Debian ships:
# WordNet 3.0 (wordnet-base), GCIDE (dict-gcide), FreeDict English to French,
# Spanish, German, Italian, Dutch, Portuguese and Swedish
# (dict-freedict-eng-{fra,spa,deu,ita,nld,por,swe}). See README.md.
#
#   examples/wordnet/prepare.sh OUT_DIR
#
# Writes OUT_DIR/train/<task>.jsonl.zst (kalm-train groups), OUT_DIR/instructions.json
# and OUT_DIR/eval/<task>/ + OUT_DIR/eval/suite.txt (kalm-eval task directories).
# The same inputs give the same bytes. Everything is built in a temporary
# directory beside OUT_DIR's contents and moved into place only when complete.
# Environment: WORDNET_DIR (default /usr/share/wordnet), DICTD_DIR
# (default /usr/share/dictd), AWK (default awk).
set -eu
LC_ALL=C
export LC_ALL

prog=prepare.sh
usage() { echo "usage: $prog OUT_DIR" >&2; exit 2; }
[ $# -eq 1 ] || usage
case $1 in -h|--help) usage ;; esac
out=$1
here=$(cd "$(dirname "$0")" && pwd)
wn=${WORDNET_DIR:-/usr/share/wordnet}
dictd=${DICTD_DIR:-/usr/share/dictd}
awk=${AWK:-awk}
start=$(date +%s)
# FreeDict pair sets: language code, then keep every k-th entry (eng-deu has
# 447,000 entries, 50 times the others: a tenth of it still gives German the
# largest share of the bitext pairs without crowding out the rest).
freedict="fra:1 spa:1 deu:10 ita:1 nld:1 por:1 swe:1"
# The X-English sets that add training groups to fd-eng-X (reversed, nothing
# held out leaks: freedict.awk). Not German: eng-deu alone already gives it 6
# times the pairs of any other language, and deu-eng is a 17 MB download.
reverse="fra spa ita nld por swe"
# Training groups per entry: its first FREEDICT_ALTS translations, each a group
# (more pairs to learn the languages' pieces from; the evaluation pairs keep
# the first translation only).
alts=${FREEDICT_ALTS:-3}
case $alts in '' | 0 | *[!0-9]*) echo "$prog: error: FREEDICT_ALTS must be a positive integer, got '$alts'" >&2; exit 2 ;; esac
packages="wordnet-base dict-gcide"
for entry in $freedict; do packages="$packages dict-freedict-eng-${entry%%:*}"; done
for l in $reverse; do packages="$packages dict-freedict-$l-eng"; done

inputs="$wn/data.noun $wn/data.verb $wn/data.adj $wn/data.adv $dictd/gcide.dict.dz"
for entry in $freedict; do inputs="$inputs $dictd/freedict-eng-${entry%%:*}.dict.dz"; done
for l in $reverse; do inputs="$inputs $dictd/freedict-$l-eng.dict.dz"; done
for f in $inputs; do
  [ -r "$f" ] || { echo "$prog: error: cannot read $f (install $packages)" >&2; exit 1; }
done
for c in zstd gzip "$awk"; do
  command -v "$c" >/dev/null 2>&1 || { echo "$prog: error: $c not found" >&2; exit 1; }
done

mkdir -p "$out"
tmp=$(mktemp -d "$out/.prepare-tmp.XXXXXX")
gcide_pid=
# A failed step must not leave the GCIDE converter running in the background.
trap '[ -z "$gcide_pid" ] || kill "$gcide_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
mkdir -p "$tmp/train" "$tmp/eval/fd-bitext"
for t in gcide-define wn-define gcide-wn-paraphrase; do mkdir -p "$tmp/eval/$t/qrels"; done
for t in wn-lexname-cls wn-lexname-clu wn-pair wn-rerank wn-sts; do mkdir -p "$tmp/eval/$t"; done

lib="$here/json.awk"
"$awk" -v T="$tmp" -f "$lib" -f "$here/wordnet.awk" \
  "$wn/data.noun" "$wn/data.verb" "$wn/data.adj" "$wn/data.adv"

# GCIDE and FreeDict are independent of each other: run them side by side.
gzip -dc "$dictd/gcide.dict.dz" | "$awk" -v T="$tmp" -v WNDEFS="$tmp/wn-defs.txt" -v MONO="$tmp/wn-held-mono.tsv" -v TRAINMONO="$tmp/wn-train-mono.tsv" -f "$lib" -f "$here/gcide.awk" &
gcide_pid=$!
for entry in $freedict; do
  l=${entry%%:*}
  back=
  case " $reverse " in *" $l "*)
    back="$tmp/freedict-$l-eng.dict"
    gzip -dc "$dictd/freedict-$l-eng.dict.dz" >"$back" ;;
  esac
  gzip -dc "$dictd/freedict-eng-$l.dict.dz" |
    "$awk" -v T="$tmp" -v LANG_=$l -v EVERY=${entry#*:} -v ALTS="$alts" -v HELDFILE="$tmp/wn-held.txt" -f "$lib" -f "$here/freedict.awk" - $back
  [ -z "$back" ] || rm -f "$back"
done
wait $gcide_pid
gcide_pid=

cat >"$tmp/eval/fd-bitext/task.json" <<'EOF'
{
  "type": "bitext",
  "name": "fd-bitext",
  "instruction": "Retrieve the translation of a word",
  "splits": ["eng-fra", "eng-spa", "eng-deu", "eng-ita", "eng-nld", "eng-por", "eng-swe"],
  "languages": ["eng-Latn", "fra-Latn", "spa-Latn", "deu-Latn", "ita-Latn", "nld-Latn", "por-Latn", "swe-Latn"]
}
EOF
cat >"$tmp/eval/suite.txt" <<'EOF'
# Held-out evaluation tasks of the default experiment (examples/wordnet/prepare.sh);
# paths are relative to this file.
gcide-define
gcide-wn-paraphrase
wn-define
wn-lexname-cls
wn-lexname-clu
wn-pair
wn-rerank
wn-sts
fd-bitext
EOF
cat >"$tmp/instructions.json" <<'EOF'
{
  "wn-lemma-def": "Given a word or a list of synonyms, retrieve its dictionary definition",
  "wn-example-def": "Given an example sentence, retrieve the definition of the word sense it illustrates",
  "wn-related-def": "Given a dictionary definition, retrieve the definition of a more general concept",
  "wn-synonym": "Given a word, retrieve a synonym",
  "gcide-wn-def": "Given a dictionary definition, retrieve the definition of the same word sense from another dictionary",
  "wn-lexname": "Classify the semantic category of a dictionary definition",
  "fd-eng-fra": "Given an English word, retrieve its French translation",
  "fd-eng-spa": "Given an English word, retrieve its Spanish translation",
  "fd-eng-deu": "Given an English word, retrieve its German translation",
  "fd-eng-ita": "Given an English word, retrieve its Italian translation",
  "fd-eng-nld": "Given an English word, retrieve its Dutch translation",
  "fd-eng-por": "Given an English word, retrieve its Portuguese translation",
  "fd-eng-swe": "Given an English word, retrieve its Swedish translation"
}
EOF

# -T1: one thread, so the compressed bytes never depend on the machine.
for f in "$tmp"/train/*.jsonl; do
  zstd -q -T1 -9 --rm "$f" -o "$f.zst"
done

for t in wn-lemma-def wn-example-def wn-related-def wn-synonym wn-lexname gcide-wn-def $(for e in $freedict; do printf 'fd-eng-%s ' "${e%%:*}"; done); do
  [ -s "$tmp/train/$t.jsonl.zst" ] || { echo "$prog: error: no records for $t" >&2; exit 1; }
done
counts=$(cat "$tmp/counts.wn" "$tmp/counts.gcide" $(for e in $freedict; do printf '%s ' "$tmp/counts.${e%%:*}"; done))
rm -f "$tmp"/counts.* "$tmp/wn-defs.txt" "$tmp/wn-held.txt" "$tmp/wn-held-mono.tsv" "$tmp/wn-train-mono.tsv"

# Replace the previous outputs only now that the new ones are complete.
for item in train eval instructions.json; do
  rm -rf "$out/$item"
  mv "$tmp/$item" "$out/$item"
done

{
  echo "$prog: records per task (train: groups; eval: queries, pairs or texts):"
  echo "$counts" | while IFS='	' read -r name n; do printf '  %-24s %8d\n' "$name" "$n"; done
  echo "$prog: wrote $out/train, $out/eval, $out/instructions.json in $(( $(date +%s) - start )) s"
} >&2
