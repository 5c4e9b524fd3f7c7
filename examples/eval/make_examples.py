#!/usr/bin/python3
"""Builds the tiny example tasks in examples/eval/ from text Debian ships.

Sources: /usr/share/common-licenses (license paragraphs and sentences) and the
German message catalogue of GNU coreutils (/usr/share/locale/de/LC_MESSAGES/
coreutils.mo, English msgid -> German msgstr) for bitext mining.
Deterministic (seeded); rerun to regenerate:  /usr/bin/python3 make_examples.py
"""
import gettext, json, os, random, re

HERE = os.path.dirname(os.path.abspath(__file__))
LIC = "/usr/share/common-licenses"
LICENSES = {"GPL-3": "GNU GPL 3", "Apache-2.0": "Apache License 2.0", "MPL-2.0": "Mozilla Public License 2.0",
            "Artistic": "Artistic License"}
rng = random.Random(42)


def paragraphs(name):
    text = open(os.path.join(LIC, name), encoding="utf-8").read()
    out = []
    for p in re.split(r"\n\s*\n", text):
        p = " ".join(p.split())
        if 200 <= len(p) <= 900 and p.count(".") >= 2:
            out.append(p)
    return out


def sentences(p):
    return [s.strip() for s in re.split(r"(?<=[.;])\s+", p) if len(s.strip()) >= 40]


def write(task, name, records):
    d = os.path.join(HERE, task)
    os.makedirs(os.path.dirname(os.path.join(d, name)), exist_ok=True)
    with open(os.path.join(d, name), "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def task_json(task, spec):
    os.makedirs(os.path.join(HERE, task), exist_ok=True)
    with open(os.path.join(HERE, task, "task.json"), "w", encoding="utf-8") as f:
        json.dump(spec, f, indent=2, ensure_ascii=False)
        f.write("\n")


paras = {k: paragraphs(k)[:10] for k in LICENSES}
sents = {k: [s for p in v for s in sentences(p)] for k, v in paras.items()}

# retrieval: each query is a sentence's second half; its paragraph is relevant.
corpus, queries, qrels = [], [], []
for lic, ps in paras.items():
    for i, p in enumerate(ps):
        corpus.append({"id": f"{lic}-{i}", "title": LICENSES[lic], "text": p})
for lic, ps in paras.items():
    for i in rng.sample(range(len(ps)), 3):
        s = sentences(ps[i])[0]
        words = s.split()
        queries.append({"id": f"q-{lic}-{i}", "text": " ".join(words[len(words) // 2:])})
        qrels.append((f"q-{lic}-{i}", f"{lic}-{i}", 1))
task_json("retrieval", {"type": "retrieval", "name": "LicenseRetrieval",
                        "instruction": "Given a phrase, retrieve the license paragraph that contains it",
                        "splits": ["test"], "languages": ["eng-Latn"]})
write("retrieval", "corpus.jsonl", corpus)
write("retrieval", "queries.jsonl", queries)
os.makedirs(os.path.join(HERE, "retrieval", "qrels"), exist_ok=True)
with open(os.path.join(HERE, "retrieval", "qrels", "test.tsv"), "w") as f:
    f.write("query-id\tcorpus-id\tscore\n")
    for q, d, s in qrels:
        f.write(f"{q}\t{d}\t{s}\n")

# reranking: the sentence against its paragraph and three others of the license.
rer = []
for lic, ps in paras.items():
    for i in range(0, len(ps), 3):
        others = [p for j, p in enumerate(ps) if j != i]
        rer.append({"query": sentences(ps[i])[0], "positive": [ps[i]], "negative": rng.sample(others, 3)})
task_json("reranking", {"type": "reranking", "name": "LicenseReranking",
                        "instruction": "Given a sentence, retrieve the license paragraph it comes from",
                        "languages": ["eng-Latn"]})
write("reranking", "test.jsonl", rer)

# sts: a sentence against itself cut short (4-5), a neighbour (2), another license (0).
sts = []
for lic, ss in sents.items():
    other = [s for k, v in sents.items() if k != lic for s in v]
    for s in rng.sample(ss, 4):
        w = s.split()
        sts.append({"sentence1": s, "sentence2": " ".join(w[: max(5, 3 * len(w) // 4)]), "score": 4.5})
        j = ss.index(s)
        sts.append({"sentence1": s, "sentence2": ss[(j + 1) % len(ss)], "score": 2.0})
        sts.append({"sentence1": s, "sentence2": rng.choice(other), "score": 0.0})
task_json("sts", {"type": "sts", "name": "LicenseSTS", "instruction": "Retrieve semantically similar text",
                  "languages": ["eng-Latn"]})
write("sts", "test.jsonl", sts)

# pair classification: halves of one sentence (1) or of two licenses (0).
pc = []
for lic, ss in sents.items():
    other = [s for k, v in sents.items() if k != lic for s in v]
    for s in rng.sample(ss, 4):
        w = s.split()
        pc.append({"sentence1": " ".join(w[: len(w) // 2]), "sentence2": " ".join(w[len(w) // 2:]), "label": 1})
        o = rng.choice(other).split()
        pc.append({"sentence1": " ".join(w[: len(w) // 2]), "sentence2": " ".join(o[len(o) // 2:]), "label": 0})
task_json("pair_classification", {"type": "pair_classification", "name": "LicensePairs",
                                  "instruction": "Retrieve semantically similar text", "languages": ["eng-Latn"]})
write("pair_classification", "test.jsonl", pc)

# classification and clustering: which license a sentence comes from.
train, test, clus = [], [], []
for lic, ss in sents.items():
    pick = rng.sample(ss, min(len(ss), 18))
    train += [{"text": s, "label": lic} for s in pick[:10]]
    test += [{"text": s, "label": lic} for s in pick[10:16]]
    clus += [{"text": s, "label": lic} for s in pick[:8]]
rng.shuffle(train), rng.shuffle(test), rng.shuffle(clus)
task_json("classification", {"type": "classification", "name": "LicenseClassification",
                             "instruction": "Classify the license a sentence comes from",
                             "languages": ["eng-Latn"], "n_experiments": 3, "samples_per_label": 8})
write("classification", "train.jsonl", train)
write("classification", "test.jsonl", test)
task_json("clustering", {"type": "clustering", "name": "LicenseClustering",
                         "instruction": "Identify the license of a sentence", "languages": ["eng-Latn"]})
write("clustering", "test.jsonl", clus)

# bitext: coreutils messages and their German translations.
cat = gettext.GNUTranslations(open("/usr/share/locale/de/LC_MESSAGES/coreutils.mo", "rb"))._catalog
pairs = []
for en, de in sorted(cat.items(), key=lambda kv: str(kv[0])):
    if not isinstance(en, str) or not en or "%" in en or "\n" in en or not isinstance(de, str):
        continue
    if 30 <= len(en) <= 120 and de and de != en:
        pairs.append({"sentence1": en, "sentence2": de})
pairs = rng.sample(pairs, 24)
task_json("bitext", {"type": "bitext", "name": "CoreutilsBitext", "instruction": "Retrieve parallel sentences",
                     "languages": ["eng-Latn", "deu-Latn"]})
write("bitext", "test.jsonl", pairs)

with open(os.path.join(HERE, "suite.txt"), "w") as f:
    f.write("# Every example task; paths are relative to this file.\n")
    for t in ["retrieval", "reranking", "sts", "pair_classification", "classification", "clustering", "bitext"]:
        f.write(t + "\n")
