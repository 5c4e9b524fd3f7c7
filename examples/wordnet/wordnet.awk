# WordNet 3.0 data.{noun,verb,adj,adv} (wndb(5WN)) -> kalm training groups and
# held-out evaluation tasks. Run by prepare.sh:
#   awk -v T=DIR -f json.awk -f wordnet.awk data.noun data.verb data.adj data.adv
# Writes DIR/train/wn-*.jsonl, DIR/eval/wn-*/..., DIR/wn-defs.txt (every
# definition, lower case, for the GCIDE converter to avoid), DIR/wn-held.txt
# (held-out texts, for the FreeDict converter to avoid) and DIR/counts.wn.
#
# Split: a synset is held out when its offset (decimal) % 10 == 3. No text of a
# held-out synset (definition, examples) is written to a training file, even
# when a training synset happens to carry the same string.
#
# Determinism: nothing is ever printed from a `for (k in a)` loop (its order
# differs between awk implementations); every list is an indexed array or a
# space-separated string built in input order.

BEGIN {
  json_init()
  split("adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute " \
        "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group " \
        "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant " \
        "noun.possession noun.process noun.quantity noun.relation noun.shape noun.state " \
        "noun.substance noun.time verb.body verb.change verb.cognition verb.communication " \
        "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion " \
        "verb.perception verb.possession verb.social verb.stative verb.weather adj.ppl", LEXN, " ")
  for (i = 0; i <= 44; i++) {
    name = LEXN[i + 1]
    LEXNAME[i] = name
    label = name
    sub(/\./, " ", label)
    if (name == "adj.all") label = "adjective"
    else if (name == "adj.pert") label = "relational adjective"
    else if (name == "adj.ppl") label = "participial adjective"
    else if (name == "noun.Tops") label = "noun top concept"
    LABEL[i] = label
  }
  HEX = "0123456789abcdef"
  N = 0
}

function hex2dec(h,    i, v) {
  h = tolower(h); v = 0
  for (i = 1; i <= length(h); i++) v = v * 16 + index(HEX, substr(h, i, 1)) - 1
  return v
}

# Lemma as text: underscores are spaces; adjective position markers go.
function clean_lemma(w) {
  gsub(/_/, " ", w)
  sub(/\((a|p|ip)\)$/, "", w)
  return w
}

FNR == 1 {
  P = FILENAME; sub(/.*data\./, "", P)
  P = (P == "noun") ? "n" : (P == "verb") ? "v" : (P == "adj") ? "a" : (P == "adv") ? "r" : ""
  if (P == "") { print "wordnet.awk: unexpected file " FILENAME > "/dev/stderr"; FAILED = 1; exit 1 }
}

/^  / { next }  # licence header

{
  bar = index($0, " | ")
  if (bar == 0 || $1 !~ /^[0-9]+$/) {
    print "wordnet.awk: " FILENAME ":" FNR ": not a synset line" > "/dev/stderr"; FAILED = 1; exit 1
  }
  k = P $1
  N++; KEY[N] = k
  POS[k] = P; OFF[k] = $1 + 0; LEX[k] = $2 + 0
  HELD[k] = (OFF[k] % 10 == 3)
  nw = hex2dec($4); i = 5
  nl = 0; lem = ""
  for (j = 1; j <= nw; j++) {
    w = clean_lemma($i); i += 2
    dup = 0
    for (m = 1; m <= nl; m++) if (L[k, m] == w) dup = 1
    if (dup) continue
    nl++; L[k, nl] = w
    lem = lem (nl > 1 ? ", " : "") w
  }
  NL[k] = nl; LEM[k] = lem
  np = $i + 0; i++
  nr = 0
  for (j = 1; j <= np; j++) {
    sym = $i; tpos = $(i + 2); if (tpos == "s") tpos = "a"
    if (((sym == "@" || sym == "@i") && tpos == P) || (P == "a" && sym == "&" && tpos == "a")) {
      nr++; R[k, nr] = tpos $(i + 1)
    }
    i += 4
  }
  NR_[k] = nr

  gloss = substr($0, bar + 3)
  p = index(gloss, "; \"")
  if (p) { def = substr(gloss, 1, p - 1); rest = substr(gloss, p + 2) }
  else { def = gloss; rest = "" }
  def = norm(def); sub(/[; ]+$/, "", def)
  DEF[k] = def
  ne = 0
  while (match(rest, /"[^"]*"/)) {
    ex = norm(substr(rest, RSTART + 1, RLENGTH - 2))
    rest = substr(rest, RSTART + RLENGTH)
    if (ex != "") { ne++; EX[k, ne] = ex }
  }
  NE[k] = ne
  if (HELD[k]) { NH[P]++; H[P, NH[P]] = k }
}

# ---------------------------------------------------------------- training

function emit(task, type, q, npos, nneg,    line) {
  line = "{\"query\": " js(q) ", \"pos\": " jarr(POSL, npos)
  if (nneg > 0) line = line ", \"neg\": " jarr(NEGL, nneg)
  line = line ", \"task\": \"" task "\", \"type\": \"" type "\"}"
  if ((task, line) in SEEN) return
  SEEN[task, line] = 1
  print line > (T "/train/" task ".jsonl")
  COUNT[task]++
}

function label_family(lx) {
  if (lx >= 3 && lx <= 28) return "n"
  if (lx >= 29 && lx <= 43) return "v"
  if (lx == 0 || lx == 1 || lx == 44) return "a"
  return ""  # adv.all: a single class, nothing to classify
}

function write_training(    i, j, m, k, d, t, n, fam, lx) {
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (!HELD[k]) continue
    HT[DEF[k]] = 1
    for (j = 1; j <= NE[k]; j++) HT[EX[k, j]] = 1
  }
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (HELD[k]) continue
    d = DEF[k]
    dok = !(d in HT) && d != ""
    if (dok && !(LEM[k] in HT)) { POSL[1] = d; emit("wn-lemma-def", "retrieval", LEM[k], 1, 0) }
    if (dok) for (j = 1; j <= NE[k]; j++) {
      if (EX[k, j] in HT) continue
      POSL[1] = d; emit("wn-example-def", "retrieval", EX[k, j], 1, 0)
    }
    if (dok) {
      n = 0
      for (j = 1; j <= NR_[k]; j++) {
        t = R[k, j]
        if (!(t in DEF) || HELD[t] || (DEF[t] in HT) || DEF[t] == d) continue
        dup = 0
        for (m = 1; m <= n; m++) if (POSL[m] == DEF[t]) dup = 1
        if (!dup) { n++; POSL[n] = DEF[t] }
      }
      if (n > 0) emit("wn-related-def", "retrieval", d, n, 0)
    }
    if (NL[k] >= 2) for (j = 1; j <= NL[k]; j++) {
      m = j % NL[k] + 1
      if (tolower(L[k, j]) == tolower(L[k, m]) || (L[k, j] in HT) || (L[k, m] in HT)) continue
      POSL[1] = L[k, m]; emit("wn-synonym", "retrieval", L[k, j], 1, 0)
    }
    fam = label_family(LEX[k])
    if (dok && fam != "") {
      POSL[1] = LABEL[LEX[k]]; n = 0
      for (lx = 0; lx <= 44; lx++)
        if (lx != LEX[k] && label_family(lx) == fam) { n++; NEGL[n] = LABEL[lx] }
      emit("wn-lexname", "classification", d, 1, n)
    }
  }
}

# ---------------------------------------------------------------- evaluation

function task_json(dir, type, name, instr, extra,    f) {
  f = dir "/task.json"
  printf "{\n  \"type\": \"%s\",\n  \"name\": \"%s\",\n  \"instruction\": %s,\n", type, name, js(instr) > f
  printf "  \"languages\": [\"eng-Latn\"]%s\n}\n", extra > f
  close(f)
}

# Wu-Palmer similarity over the noun hypernym graph (@, @i), every synset of
# the graph counted (structure only, no text): 2 d(lcs) / (d(a) + d(b)) where
# d(a) = dist(a, lcs) + d(lcs), maximised over common ancestors; d(root) = 1.
function depth(x,    q, head, tail, y, j, dist) {
  if (x in DEPTH) return DEPTH[x]
  split("", dist); q[1] = x; dist[x] = 0; head = 1; tail = 1
  while (head <= tail) {
    y = q[head++]
    if (NR_[y] == 0) { DEPTH[x] = dist[y] + 1; return DEPTH[x] }
    for (j = 1; j <= NR_[y]; j++) if (!(R[y, j] in dist)) { dist[R[y, j]] = dist[y] + 1; q[++tail] = R[y, j] }
  }
  DEPTH[x] = 1; return 1
}
function ancestors(x, dist, q,    head, tail, y, j) {
  split("", dist); q[1] = x; dist[x] = 0; head = 1; tail = 1
  while (head <= tail) {
    y = q[head++]
    for (j = 1; j <= NR_[y]; j++) if (!(R[y, j] in dist)) { dist[R[y, j]] = dist[y] + 1; q[++tail] = R[y, j] }
  }
  return tail
}
function wup(a, b,    n, i, x, best, s, dl) {
  ancestors(a, DA, QA)
  n = ancestors(b, DB, QB)
  best = 0
  for (i = 1; i <= n; i++) {
    x = QB[i]
    if (!(x in DA)) continue
    dl = depth(x)
    s = 2 * dl / (DA[x] + DB[x] + 2 * dl)
    if (s > best) best = s
  }
  return best
}

function write_eval(    i, j, k, d, n, s, e, dir, f, q, sel, lab, c, m, t, h, w, cand, nc, nn, line, ntest, p, shift, a, b, bin, sc) {
  # wn-define: held-out nouns; lemma lists naming one held-out synset only.
  dir = T "/eval/wn-define"; f = dir "/corpus.jsonl"
  n = NH["n"]
  for (i = 1; i <= n; i++) {
    k = H["n", i]; d = DEF[k]
    if (!(d in DOCID)) { DOCID[d] = "n" OFF[k]; print "{\"id\": \"" DOCID[d] "\", \"text\": " js(d) "}" > f; COUNT["wn-define corpus"]++ }
    LC[LEM[k]]++
  }
  e = 0
  for (i = 1; i <= n; i++) if (LC[LEM[H["n", i]]] == 1) e++
  s = int((e + 2999) / 3000); c = 0
  print "query-id\tcorpus-id\tscore" > (dir "/qrels/test.tsv")
  for (i = 1; i <= n; i++) {
    k = H["n", i]
    if (LC[LEM[k]] != 1) continue
    if (c++ % s) continue
    print "{\"id\": \"q" OFF[k] "\", \"text\": " js(LEM[k]) "}" > (dir "/queries.jsonl")
    print "q" OFF[k] "\t" DOCID[DEF[k]] "\t1" > (dir "/qrels/test.tsv")
    COUNT["wn-define"]++
  }
  task_json(dir, "retrieval", "wn-define", "Given a word or a list of synonyms, retrieve its dictionary definition", "")

  # wn-lexname-cls: held-out nouns and verbs; per label, alternate rows go to
  # the probe's training split (at most 32), the rest to test (thinned to ~3000).
  for (p = 1; p <= 2; p++) { P = (p == 1) ? "n" : "v"; for (i = 1; i <= NH[P]; i++) LT[LEX[H[P, i]]]++ }
  ntest = 0
  for (p = 1; p <= 2; p++) {
    P = (p == 1) ? "n" : "v"
    for (i = 1; i <= NH[P]; i++) {
      k = H[P, i]; lab = LEX[k]
      if (LT[lab] < 20) continue
      LSEEN[lab]++
      if (LSEEN[lab] % 2 == 1 && TRN[lab] < 32) { TRN[lab]++; CLS_TRAIN[++ntrain] = k }
      else CLS_TEST[++ntest] = k
    }
  }
  dir = T "/eval/wn-lexname-cls"
  for (i = 1; i <= ntrain; i++) {
    k = CLS_TRAIN[i]
    print "{\"text\": " js(DEF[k]) ", \"label\": \"" LEXNAME[LEX[k]] "\"}" > (dir "/train.jsonl")
  }
  COUNT["wn-lexname-cls train"] = ntrain
  s = int((ntest + 2999) / 3000)
  for (i = 1; i <= ntest; i += s) {
    k = CLS_TEST[i]
    print "{\"text\": " js(DEF[k]) ", \"label\": \"" LEXNAME[LEX[k]] "\"}" > (dir "/test.jsonl")
    COUNT["wn-lexname-cls"]++
  }
  task_json(dir, "classification", "wn-lexname-cls", "Classify the semantic category of a dictionary definition",
            ",\n  \"samples_per_label\": 16")

  # wn-lexname-clu: held-out noun definitions, thinned to ~3000.
  dir = T "/eval/wn-lexname-clu"
  n = NH["n"]; s = int((n + 2999) / 3000)
  for (i = 1; i <= n; i += s) {
    k = H["n", i]
    print "{\"text\": " js(DEF[k]) ", \"label\": \"" LEXNAME[LEX[k]] "\"}" > (dir "/test.jsonl")
    COUNT["wn-lexname-clu"]++
  }
  task_json(dir, "clustering", "wn-lexname-clu", "Identify the semantic category of a dictionary definition", "")

  # wn-pair: (lemmas, definition); every other pair takes the definition of a
  # held-out synset of the same part of speech a third of the list away.
  dir = T "/eval/wn-pair"
  tot = NH["n"] + NH["v"] + NH["a"] + NH["r"]; s = int((tot + 1999) / 2000); c = 0; sel = 0
  for (p = 1; p <= 4; p++) {
    P = substr("nvar", p, 1); n = NH[P]; shift = int(n / 3) + 1
    for (i = 1; i <= n; i++) {
      if (c++ % s) continue
      k = H[P, i]
      if (sel++ % 2 == 0) { d = DEF[k]; lab = 1 }
      else {
        j = (i - 1 + shift) % n + 1
        for (m = 0; m < n && DEF[H[P, j]] == DEF[k]; m++) j = j % n + 1
        d = DEF[H[P, j]]; lab = 0
        if (d == DEF[k]) continue
      }
      print "{\"sentence1\": " js(LEM[k]) ", \"sentence2\": " js(d) ", \"label\": " lab "}" > (dir "/test.jsonl")
      COUNT["wn-pair"]++
    }
  }
  task_json(dir, "pair_classification", "wn-pair", "Given a word or a list of synonyms, retrieve its dictionary definition",
            ",\n  \"instruction_both_sides\": false")

  # wn-rerank: negatives are held-out synsets sharing a lemma (other senses) or
  # a hypernym / similar-to head (co-hyponyms).
  for (p = 1; p <= 4; p++) {
    P = substr("nvar", p, 1)
    for (i = 1; i <= NH[P]; i++) {
      k = H[P, i]
      for (j = 1; j <= NL[k]; j++) { w = tolower(L[k, j]); PL[w] = PL[w] " " k }
      for (j = 1; j <= NR_[k]; j++) CH[R[k, j]] = CH[R[k, j]] " " k
    }
  }
  nn = 0
  for (p = 1; p <= 4; p++) {
    P = substr("nvar", p, 1)
    for (i = 1; i <= NH[P]; i++) {
      k = H[P, i]; cand = ""
      for (j = 1; j <= NL[k]; j++) cand = cand PL[tolower(L[k, j])]
      for (j = 1; j <= NR_[k]; j++) cand = cand CH[R[k, j]]
      nc = split(cand, CA, " "); split("", USED); USED[DEF[k]] = 1; m = 0
      for (j = 1; j <= nc && m < 19; j++) {
        t = CA[j]
        if (DEF[t] in USED) continue
        USED[DEF[t]] = 1; m++; NEGL[m] = DEF[t]
      }
      if (m < 2) continue
      RR[++nn] = "{\"query\": " js(LEM[k]) ", \"positive\": [" js(DEF[k]) "], \"negative\": " jarr(NEGL, m) "}"
    }
  }
  dir = T "/eval/wn-rerank"; s = int((nn + 1499) / 1500)
  for (i = 1; i <= nn; i += s) { print RR[i] > (dir "/test.jsonl"); COUNT["wn-rerank"]++ }
  task_json(dir, "reranking", "wn-rerank", "Given a word or a list of synonyms, retrieve its dictionary definition", "")

  # wn-sts: pairs of held-out noun definitions scored 5 x Wu-Palmer. Each anchor
  # is paired with a co-hyponym (close), its neighbour in the same lexicographer
  # file (middle) and a synset far away in the file (far); the pairs are then
  # balanced over five score bins so the whole range is covered.
  n = NH["n"]; nc = 0
  for (i = 1; i <= n; i += 3) {
    a = H["n", i]
    split("", CA); m = 0
    if (NR_[a] > 0) { split(CH[R[a, 1]], SIB, " "); for (j = 1; (j in SIB); j++) if (SIB[j] != a) { CA[++m] = SIB[j]; break } }
    if (i < n && LEX[H["n", i + 1]] == LEX[a]) CA[++m] = H["n", i + 1]
    CA[++m] = H["n", (i - 1 + int(n / 2)) % n + 1]
    for (j = 1; j <= m; j++) {
      b = CA[j]
      if (b == a || DEF[b] == DEF[a] || ((a, b) in PAIRED) || ((b, a) in PAIRED)) continue
      PAIRED[a, b] = 1
      sc = 5 * wup(a, b); bin = int(sc); if (bin > 4) bin = 4
      BINN[bin]++
      BINP[bin, BINN[bin]] = "{\"sentence1\": " js(DEF[a]) ", \"sentence2\": " js(DEF[b]) ", \"score\": " sprintf("%.3f", sc) "}"
    }
  }
  dir = T "/eval/wn-sts"
  for (bin = 0; bin <= 4; bin++) {
    s = int((BINN[bin] + 299) / 300); if (s < 1) s = 1
    for (i = 1; i <= BINN[bin]; i += s) { print BINP[bin, i] > (dir "/test.jsonl"); COUNT["wn-sts"]++ }
  }
  task_json(dir, "sts", "wn-sts", "Retrieve semantically similar text", "")
}

END {
  if (FAILED) exit 1
  if (N == 0) { print "wordnet.awk: no synsets read" > "/dev/stderr"; exit 1 }
  write_training()
  write_eval()
  for (i = 1; i <= N; i++) print tolower(DEF[KEY[i]]) > (T "/wn-defs.txt")
  # Held-out texts, for the FreeDict converter: a headword such as "adapt" can
  # be the whole definition of a held-out synset.
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (!HELD[k]) continue
    print DEF[k] > (T "/wn-held.txt")
    for (j = 1; j <= NE[k]; j++) print EX[k, j] > (T "/wn-held.txt")
  }
  # gcide-wn-paraphrase (gcide.awk writes its queries): every WordNet
  # definition is a document, and a lemma naming one synset only, a held-out
  # one, leads a GCIDE definition of that word to it (wn-held-mono.tsv).
  # A definition several synsets share is one document (the first synset's id).
  dir = T "/eval/gcide-wn-paraphrase"
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (!(DEF[k] in PARADOC)) {
      PARADOC[DEF[k]] = k
      print "{\"id\": \"" k "\", \"text\": " js(DEF[k]) "}" > (dir "/corpus.jsonl")
      COUNT["gcide-wn-paraphrase corpus"]++
    }
    for (m = 1; m <= NL[k]; m++) SENSES[tolower(L[k, m])]++
  }
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (!HELD[k]) continue
    for (m = 1; m <= NL[k]; m++)
      if (SENSES[tolower(L[k, m])] == 1) print tolower(L[k, m]) "\t" PARADOC[DEF[k]] > (T "/wn-held-mono.tsv")
  }
  # The same for training synsets (lemma -> definition): gcide.awk pairs a
  # GCIDE definition of such a word with it, the gcide-wn-def training task.
  for (i = 1; i <= N; i++) {
    k = KEY[i]
    if (HELD[k] || (DEF[k] in HT)) continue
    for (m = 1; m <= NL[k]; m++)
      if (SENSES[tolower(L[k, m])] == 1) print tolower(L[k, m]) "\t" DEF[k] > (T "/wn-train-mono.tsv")
  }
  split("wn-lemma-def wn-example-def wn-related-def wn-synonym wn-lexname wn-define wn-define_corpus " \
        "wn-lexname-cls wn-lexname-cls_train wn-lexname-clu wn-pair wn-rerank wn-sts gcide-wn-paraphrase_corpus", ORDER, " ")
  for (i = 1; (i in ORDER); i++) {
    t = ORDER[i]; sub(/_/, " ", t)
    print t "\t" (COUNT[t] + 0) > (T "/counts.wn")
  }
}
