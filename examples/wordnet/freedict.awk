# FreeDict English-X, and optionally X-English, (dictd text, decompressed) ->
# bitext training groups and the held-out part of the fd-bitext evaluation
# task. Run by prepare.sh:
#   awk -v T=DIR -v LANG_=fra [-v EVERY=k] -v HELDFILE=DIR/wn-held.txt -f json.awk -f freedict.awk \
#       freedict-eng-fra.dict [freedict-fra-eng.dict]
# Writes DIR/train/fd-eng-LANG_.jsonl, DIR/eval/fd-bitext/eng-LANG_.jsonl and
# DIR/counts.LANG_.
#
# An entry is a headword line `word /ipa/`, possibly followed by grammar labels
# (`Aaron /ɑːærən/ <s>`: most of eng-por, all of fra-eng), then translation
# lines, either one line of comma-separated alternatives or senses numbered `1. x`.
# The first alternative of the first sense is the translation, without the
# grammar and domain labels of the Ding-derived sets (eng-deu: `Aal <masc>`,
# `[coll.] Aalmolche <pl> [zool.]`). A training entry gives one group per
# translation, its first ALTS (default 1) distinct alternatives over all its
# senses; a held-out entry gives one evaluation pair, its first translation.
# EVERY=k keeps every k-th entry (in file order, before the split) of a set too
# large for the experiment's budget.
#
# Split: an entry is held out when (sum over the headword's bytes of byte value
# x 1-based position) % 10 == 3.
#
# The second file, X-English, only adds training groups, reversed (an English
# translation -> the X headword, as the task asks), each of the entry's first
# ALTS translations. None reaches the evaluation: a pair is left out when its
# English side is held out by the rule above (so no held-out English word is
# trained in either direction) or its X side is a held-out pair's translation.

BEGIN {
  json_init(); STARTED = 0; ENTRY = 0
  if (EVERY == "") EVERY = 1
  if (ALTS == "") ALTS = 1
  # Held-out WordNet texts never reach a training file, from any source.
  if (HELDFILE != "") while ((getline line < HELDFILE) > 0) HELDTEXT[line] = 1
}

function held(w,    i, h) {
  h = 0
  for (i = 1; i <= length(w); i++) h += ORD[substr(w, i, 1)] * i
  return h % 10 == 3
}

function train_group(query, pos,    line) {
  line = "{\"query\": " js(query) ", \"pos\": [" js(pos) "], \"task\": \"fd-eng-" LANG_ "\", \"type\": \"bitext\"}"
  if (line in SEEN) return
  SEEN[line] = 1
  print line > (T "/train/fd-eng-" LANG_ ".jsonl")
  NTR++
}

function finish(    w, t, i) {
  if (HW == "" || TR == "") { HW = ""; return }
  w = HW; t = TR; HW = ""
  if (REVERSE) {
    # w is the X headword, ALT[] its English translations.
    if ((w in HELDTEXT) || (tolower(w) in HELDTARGET)) return
    for (i = 1; i <= NALT; i++)
      if (!held(ALT[i]) && !(ALT[i] in HELDTEXT)) train_group(ALT[i], w)
    return
  }
  if (ENTRY++ % EVERY != 0) return
  if (held(w)) {
    # Evaluation pairs: one gold target per source, and no pair a copy could
    # solve (Amsterdam -> Amsterdam).
    if (tolower(w) == tolower(t) || (t in TSEEN)) return
    TSEEN[t] = 1
    HELDTARGET[tolower(t)] = 1
    print "{\"sentence1\": " js(w) ", \"sentence2\": " js(t) "}" > (T "/eval/fd-bitext/eng-" LANG_ ".jsonl")
    NEV++
  } else {
    if (w in HELDTEXT) return
    # Every translation of a training entry (up to ALTS) is a group of its own.
    for (i = 1; i <= NALT; i++)
      if (!(ALT[i] in HELDTEXT)) train_group(w, ALT[i])
  }
}

# The translations of an entry line, labels removed, into ALT[1..NALT]
# (distinct, in order, at most ALTS).
function add_alternatives(line,    parts, n, i, t, j, dup) {
  sub(/^ *[0-9]+\. */, "", line)
  gsub(/<[^>]*>/, "", line); gsub(/\[[^]]*\]/, "", line); gsub(/\{[^}]*\}/, "", line)
  n = split(line, parts, ",")
  for (i = 1; i <= n && NALT < ALTS; i++) {
    t = norm(parts[i])
    if (t == "") continue
    dup = 0
    for (j = 1; j <= NALT; j++) if (ALT[j] == t) dup = 1
    if (!dup) ALT[++NALT] = t
  }
}

# The second file: the X-English dictionary.
FNR == 1 && NR > 1 { finish(); REVERSE = 1; STARTED = 0 }

/ \/[^\/]*\/( <[^>]*>)*$/ && $0 !~ /^00-database/ {
  finish()
  STARTED = 1
  HW = norm(substr($0, 1, index($0, " /") - 1)); TR = ""; NALT = 0
  next
}

!STARTED || HW == "" { next }

{
  add_alternatives($0)
  if (TR != "") next
  t = $0
  sub(/^ *[0-9]+\. */, "", t)
  gsub(/<[^>]*>/, "", t); gsub(/\[[^]]*\]/, "", t); gsub(/\{[^}]*\}/, "", t)
  c = index(t, ","); if (c) t = substr(t, 1, c - 1)
  t = norm(t)
  if (t != "") TR = t
}

END {
  finish()
  print "fd-eng-" LANG_ "\t" (NTR + 0) > (T "/counts." LANG_)
  print "fd-bitext eng-" LANG_ "\t" (NEV + 0) > (T "/counts." LANG_)
}
