#!/usr/bin/env bash
# report.sh OUT MODELS_TSV ABLATIONS_TSV REPORT_DIR: the default experiment's
# report (Makefile.pipeline's `report` and `ablation` targets).
#
# MODELS_TSV has one "stage<TAB>model-directory" line per scored model;
# ABLATIONS_TSV one "variant<TAB>model-directory" line per fine-tune variant
# (variants without results yet are left out). Scores come from
# OUT/eval/<model-name>/results.txt (kalm-eval's table), training curves from
# <model-directory>.metrics.jsonl, wall times from <model-directory>.seconds.
# Writes REPORT_DIR/report.md and REPORT_DIR/*.png (gnuplot), atomically.
set -euo pipefail
export LC_ALL=C
if [ $# -ne 4 ]; then echo "usage: report.sh OUT MODELS_TSV ABLATIONS_TSV REPORT_DIR" >&2; exit 2; fi
out=$1 models=$2 ablations=$3 dir=$4
for f in "$models" "$ablations"; do [ -f "$f" ] || { echo "report.sh: $f: no such file" >&2; exit 1; }; done
command -v gnuplot >/dev/null || { echo "report.sh: gnuplot is not installed (scripts/setup.sh installs gnuplot-nox)" >&2; exit 1; }
mkdir -p "$dir"
work=$(mktemp -d "$dir/.report.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Parameters of a Qwen2 model from its config.json (embeddings included).
params_of() {
  [ -f "$1" ] || { echo "-"; return; }
  awk 'match($0, /"(num_hidden_layers|hidden_size|num_attention_heads|num_key_value_heads|intermediate_size|vocab_size)": *[0-9]+/) {
         kv = substr($0, RSTART, RLENGTH); k = kv; sub(/^"/, "", k); sub(/".*/, "", k); v = kv; sub(/.*: */, "", v); c[k] = v }
       END { H = c["hidden_size"]; nh = c["num_attention_heads"]; kv = c["num_key_value_heads"]; d = H / nh
             layer = H * nh * d + nh * d + 2 * (H * kv * d + kv * d) + nh * d * H + 3 * H * c["intermediate_size"] + 2 * H
             printf "%.2f M\n", (c["vocab_size"] * H + c["num_hidden_layers"] * layer + H) / 1e6 }' "$1"
}
results_of() { echo "$out/eval/$(basename "$1")/results.txt"; }
seconds_of() { if [ -f "$1.seconds" ]; then cat "$1.seconds"; else echo "-"; fi; }

# scores.tsv: label, task, split, metric, dim, value (kalm-eval's table,
# columns dim=N, bm25 and tfidf; "-" where a column does not apply). A
# task has one of the two lexical baselines, so both become dim "baseline".
scores_of() {  # LABEL RESULTS
  awk -v label="$1" 'NR == 1 { for (i = 5; i <= NF; i++) { col[i] = $i; if ($i == "bm25" || $i == "tfidf") col[i] = "baseline" }; next }
    NF >= 5 { for (i = 5; i <= NF; i++) if ($i != "-") { c = col[i]; sub(/^dim=/, "", c); print label "\t" $1 "\t" $3 "\t" $4 "\t" c "\t" $i } }' "$2"
}
: > "$work/scores.tsv"
: > "$work/stages.tsv"
while IFS=$'\t' read -r stage model; do
  [ -n "$stage" ] || continue
  r=$(results_of "$model")
  [ -f "$r" ] || { echo "report.sh: $r: missing (run the pipeline first)" >&2; exit 1; }
  label=$stage
  [ "$stage" = ladder ] && label="ladder-$(basename "$model" | sed 's/^pretrain-\(L[0-9]*\).*/\1/')"
  printf '%s\t%s\n' "$label" "$model" >> "$work/stages.tsv"
  scores_of "$label" "$r" >> "$work/scores.tsv"
done < "$models"
: > "$work/ablations.tsv"
while IFS=$'\t' read -r variant model; do
  [ -n "$variant" ] || continue
  r=$(results_of "$model")
  [ -f "$r" ] || continue
  printf '%s\t%s\n' "$variant" "$model" >> "$work/ablations.tsv"
  scores_of "ablate-$variant" "$r" >> "$work/scores.tsv"
done < "$ablations"

label_dir() { awk -F'\t' -v l="$1" '$1 == l { print $2 }' "$work/stages.tsv"; }
# Full width: the final model's. A wider model (the teacher) is scored at its
# own full width, which the full-width tables show in its column.
full_dim=$(awk -F'\t' '$1 == "soup" && $5 != "baseline" { if ($5 + 0 > m) m = $5 + 0 } END { print m }' "$work/scores.tsv")
wider=$(awk -F'\t' -v full="$full_dim" '$5 != "baseline" && $5 + 0 > full { w[$1] = $5 } END { for (l in w) print l " (" w[l] ")" }' "$work/scores.tsv" | sort | tr '\n' ' ')
awk -F'\t' -v OFS='\t' -v full="$full_dim" '$5 != "baseline" && $5 + 0 > full { $5 = full } { print }' "$work/scores.tsv" > "$work/scores.tmp"
mv "$work/scores.tmp" "$work/scores.tsv"

# table LABEL... : rows task (split) metric, a column per label at full width;
# "baseline" is a label too.
table() {
  awk -F'\t' -v labels="$*" -v full="${TABLE_DIM:-$full_dim}" '
    BEGIN { n = split(labels, L, " ") }
    { key = $2 "\t" $3 "\t" $4
      if (!(key in seen)) { seen[key] = 1; order[++rows] = key }
      if ($5 == "baseline") v["baseline", key] = $6
      else if ($5 == full) v[$1, key] = $6 }
    END {
      printf "| task | split | metric |"; for (i = 1; i <= n; i++) printf " %s |", L[i]; print ""
      printf "|---|---|---|"; for (i = 1; i <= n; i++) printf "---:|"; print ""
      for (r = 1; r <= rows; r++) {
        split(order[r], k, "\t"); printf "| %s | %s | %s |", k[1], k[2], k[3]
        for (i = 1; i <= n; i++) { x = ((L[i], order[r]) in v) ? v[L[i], order[r]] : "-"; printf " %s |", x }
        print ""
      }
    }' "$work/scores.tsv"
}

# gain WITH WITHOUT WHAT: one line of what a technique adds: the mean of
# WITH - WITHOUT over the task splits both scored at full width, and on how
# many WITH is higher; a technique that does not help says so.
gain() {
  awk -F'\t' -v a="$1" -v b="$2" -v what="$3" -v full="$full_dim" '
    $5 == full && $1 == a { va[$2 "\t" $3] = $6 } $5 == full && $1 == b { vb[$2 "\t" $3] = $6 }
    END {
      for (k in va) if (k in vb) { n++; d = va[k] - vb[k]; s += d; if (d > 0) up++ }
      if (!n) exit
      m = s / n
      printf "- %s (`%s` against `%s`): %+.2f on average over %d task splits, higher on %d", what, a, b, m, n, up + 0
      print (m > 0.05 ? "" : ": **does not help at this scale**") }' "$work/scores.tsv"
}

stage_labels=$(cut -f1 "$work/stages.tsv" | tr '\n' ' ')
final=soup
final_dir=$(label_dir soup)

{
  echo "# kalm default experiment: report"
  echo
  echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') on $(nproc) cores ($(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown CPU)) by examples/pipeline/report.sh from \`$out\`."
  echo "Every score is kalm-eval's main metric x 100 on a held-out task (never trained on; see examples/wordnet/README.md)."
  if [ "${INSTRUCT:-no}" = yes ]; then
    if [ "${INCLUDE_PROMPT:-true}" = false ]; then
      echo "Models were trained with task instructions on their queries, which the pooling leaves out (sentence-transformers' include_prompt=false): an instruction reaches the query's tokens through attention only, so a 0-layer model embeds a query the same with or without one (up to the tokens the instruction takes from the length limit)."
    else
      echo "Models were trained with task instructions on their queries, which the mean pooling averages into the query's embedding (include_prompt=true)."
    fi
    echo "Every stage is scored with the tasks' instructions on its queries, as KaLM models are evaluated; the \`-noinstr\` columns score the same models on queries without instructions."
  else
    echo "Models are trained and scored without task instructions (INSTRUCT=no)."
  fi
  echo
  echo "## Every stage"
  echo
  echo "Full width ($full_dim dims${wider:+; wider models at their own: ${wider% }}). \`baseline\` needs no model: Lucene's BM25 on the same queries and documents for retrieval and reranking, TF-IDF vectors put through the task's own protocol for the other types (words; character trigrams for bitext), as kalm-eval(1) defines them."
  echo "\`untrained\` is the default model's initialisation with its trained tokenizer; \`$final\` is the final model."
  echo
  table baseline $stage_labels
  echo
  echo "### The final model against the lexical baselines"
  echo
  for fin_label in "$final" "$final-noinstr"; do
    awk -F'\t' -v full="$full_dim" -v fin="$fin_label" '
      $5 == "baseline" { b[$2 "\t" $3] = $6; how[$2 "\t" $3] = ($4 == "ndcg_at_10" || $4 == "map") ? "BM25" : "TF-IDF" }
      $1 == fin && $5 == full { s[$2 "\t" $3] = $6; m[$2 "\t" $3] = $4 }
      END { for (k in b) if (k in s) { split(k, t, "\t")
              printf "- %s%s (%s): %s %.2f against %s %.2f: %s\n", t[1], (t[2] == "test" ? "" : " " t[2]), m[k], fin, s[k], how[k], b[k],
                     (s[k] > b[k]) ? "ahead" : "**behind**" } }' \
      "$work/scores.tsv" | sort
  done
  echo
  for d in $(awk -F'\t' -v full="$full_dim" '$5 != "baseline" && $5 != full { print $5 }' "$work/scores.tsv" | sort -nru); do
    echo "### Every stage at $d dims (Matryoshka prefix)"
    echo
    TABLE_DIM=$d table baseline $stage_labels
    echo
  done
  echo "## Matryoshka: the final model at each width"
  echo
  awk -F'\t' -v fin="$final" '
    $1 == fin && $5 != "baseline" { key = $2 "\t" $3 "\t" $4; if (!(key in seen)) { seen[key] = 1; order[++rows] = key }
      if (!($5 in dseen)) { dseen[$5] = 1; dims[++nd] = $5 } v[$5, key] = $6 }
    END {
      printf "| task | split | metric |"; for (i = 1; i <= nd; i++) printf " %s |", dims[i]; print ""
      printf "|---|---|---|"; for (i = 1; i <= nd; i++) printf "---:|"; print ""
      for (r = 1; r <= rows; r++) { split(order[r], k, "\t"); printf "| %s | %s | %s |", k[1], k[2], k[3]
        for (i = 1; i <= nd; i++) printf " %s |", v[dims[i], order[r]]; print "" } }' "$work/scores.tsv"
  echo
  echo "## Size ladder (pre-training only)"
  echo
  echo "The deeper models start from the base model's token embeddings (kalm-train --init-embeddings) and train fewer steps: a step costs several times more with each layer."
  echo
  ladder=$(grep -E '^(pretrain|ladder-)' "$work/stages.tsv" | cut -f1 | tr '\n' ' ')
  table $ladder
  echo
  echo "| model | parameters | steps | pre-training wall time (s) |"
  echo "|---|---:|---:|---:|"
  while IFS=$'\t' read -r label model; do
    case $label in pretrain | ladder-*) ;; *) continue ;; esac
    params=$(params_of "$model/config.json")
    steps=$(if [ -f "$model.metrics.jsonl" ]; then grep -c . "$model.metrics.jsonl"; else echo "-"; fi)
    printf '| %s | %s | %s | %s |\n' "$label" "$params" "$steps" "$(seconds_of "$model")"
  done < "$work/stages.tsv"
  echo
  echo "## Stage wall times"
  echo
  echo "Training and embedding stages (the model directories under \`$out/models\` carry every parameter in their names)."
  echo
  echo "| stage | seconds |"
  echo "|---|---:|"
  while IFS=$'\t' read -r label model; do
    [ -f "$model.seconds" ] && printf '| %s | %s |\n' "$label" "$(cat "$model.seconds")"
  done < "$work/stages.tsv"
  # The tokenizer's own run (before the two pre-trainings, which run side by side).
  for f in "$out"/models/tokenizer-*.seconds; do
    [ -f "$f" ] && printf '| tokenizer | %s |\n' "$(cat "$f")"
  done
  for f in "$out"/embeddings/*/*.seconds; do
    [ -f "$f" ] && printf '| embed (%s) | %s |\n' "$(basename "${f%.safetensors.seconds}")" "$(cat "$f")"
  done
  if [ -s "$work/ablations.tsv" ]; then
    echo
    echo "## Ablations (fine-tune stage, one technique off)"
    echo
    echo "\`finetune\` has every technique on; \`no-distillation\` is \`finetune\` against \`distill\`, \`no-soup\` is \`distill\` against \`soup\`."
    echo
    if grep -q '^no-hard-negatives' "$work/ablations.tsv"; then
      echo "\`no-hard-negatives\` trains on in-batch negatives only and so also leaves out the classification groups (scored against their own labels, which needs negatives)."
      echo
    fi
    abl=$(cut -f1 "$work/ablations.tsv" | sed 's/^/ablate-/' | tr '\n' ' ')
    table finetune $abl distill soup
    if grep -q '^causal' "$work/ablations.tsv" && [ -f "$final_dir/config.json" ] &&
       grep -q '"num_hidden_layers": *0' "$final_dir/config.json"; then
      echo
      echo "The default model has no transformer layers, so causal and bidirectional attention compute the same thing: the \`causal\` column repeats \`finetune\` (set LAYERS to see the difference)."
    fi
  fi
  echo
  echo "## What each stage and technique adds"
  echo
  echo "The difference of the main scores at full width, averaged over the task splits (the techniques of the fine-tune stage from \`make -f Makefile.pipeline ablation\`, each fine-tune against the same with that one switched off)."
  echo
  gain finetune pretrain "fine-tuning (mined hard negatives, focal, mixing, Matryoshka, classification groups)"
  if [ -s "$work/ablations.tsv" ]; then
    while read -r variant; do
      case $variant in
        no-pretrain) what="pre-training" ;; no-focal) what="focal reweighting" ;; no-mixing) what="hard-negative mixing" ;;
        no-matryoshka) what="Matryoshka training (scored at full width)" ;; no-hard-negatives) what="hard negatives (and the classification groups)" ;;
        causal) what="bidirectional attention" ;; keep-duplicates) what="masking duplicate in-batch negatives" ;;
        include-prompt) what="leaving the instruction out of the pooling" ;; *) what=$variant ;;
      esac
      gain finetune "ablate-$variant" "$what"
    done < <(cut -f1 "$work/ablations.tsv")
  fi
  gain distill finetune "distillation"
  gain soup distill "the soup"
  if grep -q '^ladder-' "$work/stages.tsv"; then
    for l in $(grep -o '^ladder-L[0-9]*' "$work/stages.tsv"); do gain "$l" pretrain "depth ($l, pre-trained fewer steps from the base model's token embeddings)"; done
  fi
  echo
  echo "## Plots"
  echo
  echo "![training loss](loss.png)"
  echo
  echo "![score per stage](stages.png)"
  echo
  echo "![score per Matryoshka width](matryoshka.png)"
} > "$work/report.md"

# ---- plots ---------------------------------------------------------------------
# Training loss per stage (metrics JSONL: one object per step).
plot_loss=""
while IFS=$'\t' read -r label model; do
  m="$model.metrics.jsonl"
  [ -f "$m" ] || continue
  # Mean over the last 25 steps: one batch's loss is noisy.
  awk -v w=25 '{ s = $0; if (match(s, /"step": *[0-9]+/)) { st = substr(s, RSTART, RLENGTH); sub(/.*: */, "", st) } else next
         if (!match(s, /"loss": *[-0-9.eE+]+/)) next
         l = substr(s, RSTART, RLENGTH); sub(/.*: */, "", l); n++; k = n % w
         if (n > w) sum -= ring[k]
         ring[k] = l; sum += l
         print st, sum / (n < w ? n : w) }' \
    "$m" > "$work/loss-$label.dat"
  [ -s "$work/loss-$label.dat" ] || continue
  plot_loss="${plot_loss:+$plot_loss, }'$work/loss-$label.dat' using 1:2 with lines title '$label'"
done < "$work/stages.tsv"
if [ -n "$plot_loss" ]; then
  gnuplot -e "set terminal pngcairo size 900,500; set output '$work/loss.png'; set xlabel 'step'; set ylabel 'training loss (mean of 25 steps)'; set logscale x; set key top right; set grid; plot $plot_loss"
fi

# Score per stage: one line per task, stages on the x axis.
awk -F'\t' -v full="$full_dim" -v labels="$stage_labels" '
  BEGIN { n = split(labels, L, " ") }
  $5 == full { v[$1, $2 "/" $3] = $6; if (!(($2 "/" $3) in seen)) { seen[$2 "/" $3] = 1; t[++nt] = $2 "/" $3 } }
  END { printf "stage"; for (j = 1; j <= nt; j++) printf "\t%s", t[j]; print ""
        for (i = 1; i <= n; i++) { printf "%s", L[i]; for (j = 1; j <= nt; j++) { x = ((L[i], t[j]) in v) ? v[L[i], t[j]] : "NaN"; printf "\t%s", x }; print "" } }' \
  "$work/scores.tsv" > "$work/stages.dat"
ntasks=$(head -1 "$work/stages.dat" | awk -F'\t' '{ print NF - 1 }')
gnuplot -e "set terminal pngcairo size 1000,550; set output '$work/stages.png'; set datafile separator '\t'; set datafile missing 'NaN'; set ylabel 'score (main metric x 100)'; set key outside right; set grid; set xtics rotate by -30; plot for [i=2:$((ntasks + 1))] '$work/stages.dat' using 0:i:xtic(1) with linespoints title columnheader(i)"

# Score per Matryoshka width for the final model.
awk -F'\t' -v fin="$final" '$1 == fin && $5 != "baseline" { print $2 "/" $3 "\t" $5 "\t" $6 }' "$work/scores.tsv" |
  sort -t$'\t' -k1,1 -k2,2n > "$work/mrl.dat"
gnuplot -e "set terminal pngcairo size 900,500; set output '$work/matryoshka.png'; set datafile separator '\t'; set xlabel 'embedding dimensions'; set ylabel 'score (main metric x 100)'; set logscale x 2; set key outside right; set grid; tasks = system(\"cut -f1 '$work/mrl.dat' | uniq | tr '\\\\n' ' '\"); plot for [t in tasks] '$work/mrl.dat' using (strcol(1) eq t ? \$2 : NaN):3 with linespoints title t"

for f in report.md loss.png stages.png matryoshka.png; do
  [ -f "$work/$f" ] && mv "$work/$f" "$dir/$f"
done
echo "report.sh: wrote $dir/report.md" >&2
