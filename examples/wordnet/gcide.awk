# GCIDE (dictd text, decompressed) -> the gcide-define retrieval task. Run by
# prepare.sh:
#   awk -v T=DIR -v WNDEFS=DIR/wn-defs.txt -v MONO=DIR/wn-held-mono.tsv -f json.awk -f gcide.awk gcide.dict
# Writes DIR/eval/gcide-define/{corpus,queries}.jsonl, qrels/test.tsv, the
# queries, qrels and task.json of DIR/eval/gcide-wn-paraphrase and
# DIR/counts.gcide.
#
# An entry starts at column 0 with `Headword \Pro*nun"ci*a`tion\, pos. [etym]`;
# the header may run on over indented lines (open brackets or parentheses, or
# a line ending in a comma, semicolon or backslash). The first sense is the
# text up to its source tag (`[1913 Webster]`) or the next numbered sense.
# Only senses tagged as Webster's are used: GCIDE also carries WordNet 1.5
# senses, which would overlap the WordNet training data. Entries whose first
# sense cannot be cleaned to plain text are skipped (there are far more entries
# than the task needs).

BEGIN {
  json_init()
  # Definitions that WordNet (the training data) also has are not evaluated.
  if (WNDEFS != "") while ((getline line < WNDEFS) > 0) WN[line] = 1
  # Held-out WordNet lemmas that name one synset only: lemma -> synset id.
  if (MONO != "") while ((getline line < MONO) > 0) { split(line, mf, "\t"); MONOSYN[mf[1]] = mf[2] }
  # Training WordNet lemmas that name one synset only: lemma -> its definition.
  if (TRAINMONO != "") while ((getline line < TRAINMONO) > 0) { split(line, mf, "\t"); TRAINDEF[mf[1]] = mf[2] }
  NQ_WANT = 2000; NDOC_WANT = 10000
  NE = 0
}

# Diacritic entities ([=a], [a^], ['e], ["o], [~n], [.a], [,c], [-o], [ae],
# [imac] ...) -> plain letters; the few symbols with a readable form get it.
function entities(s,    out, e, body) {
  out = ""
  while (match(s, /\[[^][ ]+\]/)) {
    e = substr(s, RSTART, RLENGTH); body = substr(e, 2, RLENGTH - 2)
    out = out substr(s, 1, RSTART - 1)
    s = substr(s, RSTART + RLENGTH)
    if (body ~ /^[=^`'"~.,*-][A-Za-z][A-Za-z]?$/ || body ~ /^[A-Za-z][A-Za-z]?\^$/) { gsub(/[^A-Za-z]/, "", body); out = out body }
    else if (body == "ae" || body == "oe" || body == "AE" || body == "OE") out = out body
    else if (body == "imac") out = out "i"
    else if (body == "aum") out = out "a"
    else if (body == "deg") out = out " degrees"
    else out = out e
  }
  return out s
}

function depth_delta(s,    t, o, c) {
  t = s; o = gsub(/[[(]/, "", t); t = s; c = gsub(/[])]/, "", t)
  return o - c
}

# The first sense as plain text, or "" when it cannot be cleaned.
function clean_def(d, hw,    prev, w, t) {
  d = norm(d)
  # Source tag, citations (`--Bailey.`), usage examples (`; as, ...`), and
  # asides after a spaced dash go; then bracketed labels like [Obs.] [R.].
  sub(/ *\[[^]]*\] *$/, "", d)
  sub(/ *--[A-Z].*$/, "", d)
  sub(/[;,] as, .*$/, "", d)
  sub(/[;,]? *-- .*$/, "", d)
  gsub(/ *\[[^][]*\]/, "", d)
  # A quotation after the definition proper: `... up. "Dark oblivion ..."`
  sub(/\. "[A-Z].*$/, ".", d)
  # Sense number, sub-sense letter, leading domain labels: (Anat.), (Zool.) ...
  sub(/^[0-9]+\. */, "", d)
  sub(/^\([a-z]\) */, "", d)
  sub(/ \([b-z]\)( .*)?$/, "", d)
  sub(/ AS$/, "", d)  # an editor's mark in a few entries
  do { prev = d; sub(/^\([^()]*\) */, "", d) } while (d != prev)
  gsub(/[{}]/, "", d)
  gsub(/``|''/, "\"", d)
  d = norm(d)
  sub(/[;:,] *$/, "", d)
  if (d ~ /[][\\<>|{}*]/ || d !~ /^[A-Z]/) return ""
  if (d ~ /^(See|Same as|Alt\.|Pl\.|Imp\.|P\. ?p\.|Obs\.|Abbreviation|An abbreviation|Contraction|Variant|Syn\.)/) return ""
  if (split(d, w, " ") < 3) return ""
  if (d ~ /[^ -~]/) return ""  # a stray byte outside printable ASCII
  # Drop definitions that give the headword away (whole word, any case).
  t = " " tolower(d) " "; gsub(/[^a-z0-9']+/, " ", t)
  hw = " " tolower(hw) " "; gsub(/[^a-z0-9']+/, " ", hw)
  if (index(t, hw)) return ""
  return d
}

function finish_entry(    hw, d, key, parts, t) {
  if (!IN_ENTRY) return
  IN_ENTRY = 0
  if (!OK || BODY == "" || TAG !~ /Webster/ || TAG ~ /WordNet/) return
  hw = HW
  if (hw !~ /^[A-Za-z][A-Za-z' -]*[A-Za-z]$/ || split(hw, parts, " ") > 3) return
  d = clean_def(BODY, hw)
  if (d == "") return
  key = tolower(hw)
  if (key in HWSEEN) return
  HWSEEN[key] = 1
  if (d in DSEEN) return
  t = tolower(d); if (t in WN) return
  sub(/\.$/, "", t); if (t in WN) return
  DSEEN[d] = 1
  NE++; EHW[NE] = key; EDEF[NE] = d
}

# An entry header: a word at column 0 followed by its pronunciation.
/^[A-Za-z][^ \\]*( [^ \\]+)* \\[^\\]*\\/ {
  finish_entry()
  IN_ENTRY = 1; OK = 1; BODY = ""; TAG = ""; STATE = "header"
  HW = substr($0, 1, index($0, " \\") - 1)
  line = entities($0)
  DEPTH_ = depth_delta(line)
  LASTHDR = line
  next
}

/^[^ ]/ { finish_entry(); next }  # anything else at column 0 (file banners)

!IN_ENTRY { next }

{
  line = entities($0)
  if (STATE == "header") {
    if (DEPTH_ > 0 || LASTHDR ~ /[,;\\&]$/ || LASTHDR ~ / pl\.$/) {
      DEPTH_ += depth_delta(line); LASTHDR = norm(line); next
    }
    STATE = "def"
  }
  if (STATE != "def") next
  if (line ~ /^ *$/) { if (BODY != "") STATE = "done"; next }
  if (line ~ /^ *\[[^]]*\] *$/) { TAG = line; STATE = "done"; next }
  if (line ~ /\[[^]]*Webster[^]]*\] *$/) { TAG = line; BODY = BODY " " line; STATE = "done"; next }
  if (BODY == "" && line !~ /^ *([A-Z]|1\. |\()/) { OK = 0; STATE = "done"; next }
  if (BODY != "" && line ~ /^ *([0-9]+\.|\{|Syn:|Note:)/) { STATE = "done"; next }
  BODY = BODY " " line
}

END {
  finish_entry()
  dir = T "/eval/gcide-define"
  # Every k-th usable entry is a query; a second, coarser stride picks the
  # distractor definitions among the others.
  s = int(NE / NQ_WANT); if (s < 1) s = 1
  nq = 0; nd = 0
  for (i = 1; i <= NE && nq < NQ_WANT; i += s) {
    ISQ[i] = 1; nq++
  }
  s2 = int((NE - nq) / (NDOC_WANT - nq)); if (s2 < 1) s2 = 1
  c = 0
  print "query-id\tcorpus-id\tscore" > (dir "/qrels/test.tsv")
  for (i = 1; i <= NE; i++) {
    isdoc = 0
    if (i in ISQ) {
      print "{\"id\": \"q" i "\", \"text\": " js(EHW[i]) "}" > (dir "/queries.jsonl")
      print "q" i "\tg" i "\t1" > (dir "/qrels/test.tsv")
      isdoc = 1
    } else if (c++ % s2 == 0 && nd < NDOC_WANT - nq) { isdoc = 1; nd++ }
    if (isdoc) { GDOC[i] = 1; print "{\"id\": \"g" i "\", \"text\": " js(EDEF[i]) "}" > (dir "/corpus.jsonl") }
  }
  f = dir "/task.json"
  printf "{\n  \"type\": \"retrieval\",\n  \"name\": \"gcide-define\",\n" > f
  printf "  \"instruction\": \"Given a word or phrase, retrieve its dictionary definition\",\n" > f
  printf "  \"languages\": [\"eng-Latn\"]\n}\n" > f
  # gcide-wn-paraphrase: the Webster definition of a word whose only WordNet
  # sense is held out retrieves that sense's WordNet definition among all of
  # WordNet's (wordnet.awk wrote the corpus). Definition paraphrase across
  # dictionaries: neither text was trained on, the distractors were.
  dir = T "/eval/gcide-wn-paraphrase"
  np_ = 0
  for (i = 1; i <= NE; i++) if (EHW[i] in MONOSYN) PARA[++np_] = i
  s = int(np_ / NQ_WANT); if (s < 1) s = 1
  npq = 0
  print "query-id\tcorpus-id\tscore" > (dir "/qrels/test.tsv")
  for (j = 1; j <= np_ && npq < NQ_WANT; j += s) {
    i = PARA[j]; npq++
    print "{\"id\": \"p" i "\", \"text\": " js(EDEF[i]) "}" > (dir "/queries.jsonl")
    print "p" i "\t" MONOSYN[EHW[i]] "\t1" > (dir "/qrels/test.tsv")
  }
  # gcide-wn-def, the training twin of gcide-wn-paraphrase: the Webster
  # definition of a word whose only WordNet sense is a training synset, paired
  # with that synset's definition. Entries gcide-define evaluates (queries and
  # distractors) are left out, so none of its texts is trained on.
  ntr = 0
  for (i = 1; i <= NE; i++) {
    if ((i in GDOC) || !(EHW[i] in TRAINDEF)) continue
    print "{\"query\": " js(EDEF[i]) ", \"pos\": [" js(TRAINDEF[EHW[i]]) "], \"task\": \"gcide-wn-def\", \"type\": \"retrieval\"}" > (T "/train/gcide-wn-def.jsonl")
    ntr++
  }
  f = dir "/task.json"
  printf "{\n  \"type\": \"retrieval\",\n  \"name\": \"gcide-wn-paraphrase\",\n" > f
  printf "  \"instruction\": \"Given a dictionary definition, retrieve the definition of the same word sense from another dictionary\",\n" > f
  printf "  \"languages\": [\"eng-Latn\"]\n}\n" > f
  print "gcide-define\t" nq > (T "/counts.gcide")
  print "gcide-wn-paraphrase\t" npq > (T "/counts.gcide")
  print "gcide-define corpus\t" (nq + nd) > (T "/counts.gcide")
  print "gcide-wn-def\t" ntr > (T "/counts.gcide")
  print "gcide usable entries\t" NE > (T "/counts.gcide")
}
