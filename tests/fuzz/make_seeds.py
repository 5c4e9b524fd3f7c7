#!/usr/bin/env python3
"""Writes the seed corpora in tests/fuzz/corpus/<target>/ (committed; rerun
after changing this script). Seeds are small on purpose: a handful of valid
inputs taken from tests/fixtures and examples/, plus invalid ones that reach
each parser's error paths. Standard library only, plus the zstd command for one
compressed JSON Lines seed (skipped when zstd is missing)."""
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
CORPUS = os.path.join(HERE, "corpus")
SEP = b"\x00\x01"  # fuzz_common.h: kSeparator


def read(rel, limit=None):
    with open(os.path.join(ROOT, rel), "rb") as f:
        data = f.read()
    if limit is not None:  # whole lines only
        cut = data[:limit]
        data = cut[: cut.rfind(b"\n") + 1] if b"\n" in cut else cut
    return data


def write_corpus(target, seeds):
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, name), "wb") as f:
            f.write(data)


# fuzz_jsonl_records reads an input one way, chosen by its size modulo 5.
JSONL_MODES = {"group": 0, "corpus": 1, "raw": 2, "text": 3, "short": 4}


def to_mode(data, mode, compressed=False):
    """Pads `data` to a size that selects `mode`: blank lines for JSON Lines (the
    reader skips them), a zstd skippable frame for compressed input."""
    if compressed:
        for n in range(5):
            padded = data + struct.pack("<II", 0x184D2A50, n) + b"\0" * n
            if len(padded) % 5 == mode:
                return padded
    while len(data) % 5 != mode:
        data += b"\n"
    return data


def jsonl_seeds():
    def b(x):
        return x.encode() if isinstance(x, str) else x

    files = {
        "train_retrieval": (read("tests/fixtures/train/toy/retrieval.jsonl", 1500), ["group", "raw"]),
        "train_sts": (read("tests/fixtures/train/toy/sts.jsonl", 800), ["group", "short"]),
        "queries": (read("examples/eval/retrieval/queries.jsonl", 600), ["corpus", "text"]),
        "corpus_ids": ('{"id": 7, "input_ids": [1, 2, 3]}\n{"id": "d1", "text": "caf\u00e9"}\r\n'
                       '{"id": null, "text": "", "extra": {"a": [1, {"b": null}]}}\n\n  \t\n', ["corpus", "raw"]),
        "group_full": ('\ufeff{"query": "q", "pos": ["p"], "neg": ["n1", "n2"], "pos_scores": [1.5],'
                       ' "neg_scores": [0.25, -1e-7], "task": "t", "instruction": "i", "type": "pair",'
                       ' "x": "\\u00e9\\n"}\n', ["group"]),
        "bad_mixed": ('{"query": "q", "pos": []}\n[1, 2]\n{"text": "a", "input_ids": [1]}\n'
                      '{"query": 1, "pos": ["p"]}\n{"id": 1.5, "text": "x"}\n{"a": tru}\n'
                      '{"query": "q", "pos": ["p"], "pos_scores": [1, 2]}\n{"query": "q", "query": "r"}\n'
                      '{"input_ids": [-1]}\n{"type": "nope", "query": "q", "pos": ["p"]}\n{"trunc": ',
                      ["group", "corpus", "raw"]),
        "bad_utf8": (b'{"text": "\xff\xfe"}\n{"text": "ok"} trailing\n\xc3\x28\n', ["corpus", "text"]),
        # Found by fuzz_config_json in the shared writer (lib/src/io/json_writer.cpp): a score
        # whose shortest form is an integer past 64 bits did not read back.
        "regression_big_score": ('{"query": "q", "pos": ["p"], "pos_scores": [108888888888888800000.0]}\n',
                                 ["group"]),
        "long_line": ('{"text": "' + "x" * 80 + '"}\n{"text": "short"}\n', ["short"]),
        "text_lines": ("plain text line\n\nsecond line\r\nno newline at end", ["text"]),
    }
    s = {}
    for name, (data, modes) in files.items():
        for m in modes:
            s[f"{name}.{m}.jsonl"] = to_mode(b(data), JSONL_MODES[m])
    if shutil.which("zstd"):
        raw = read("tests/fixtures/train/toy/sts.jsonl", 400)
        z = subprocess.run(["zstd", "-q", "-c", "-3"], input=raw, stdout=subprocess.PIPE, check=True).stdout
        s["compressed.group.jsonl.zst"] = to_mode(z, JSONL_MODES["group"], compressed=True)
    return s


def safetensors_file(header, data=b"", pad=True):
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * ((8 - len(h) % 8) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_seeds():
    f32 = struct.pack("<6f", 1, 2, 3, 4, 5, 6)
    return {
        "two_tensors.safetensors": safetensors_file(
            {"__metadata__": {"format": "pt", "tool": "kalm"},
             "w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
             "b": {"dtype": "BF16", "shape": [2], "data_offsets": [24, 28]}}, f32 + b"\x80\x3f\x00\x40"),
        "dtypes.safetensors": safetensors_file(
            {"i64": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]},
             "f64": {"dtype": "F64", "shape": [], "data_offsets": [8, 16]},
             "i32": {"dtype": "I32", "shape": [1], "data_offsets": [16, 20]},
             "f16": {"dtype": "F16", "shape": [1], "data_offsets": [20, 22]},
             "i16": {"dtype": "I16", "shape": [1], "data_offsets": [22, 24]},
             "i8": {"dtype": "I8", "shape": [1], "data_offsets": [24, 25]},
             "u8": {"dtype": "U8", "shape": [1], "data_offsets": [25, 26]},
             "bool": {"dtype": "BOOL", "shape": [1], "data_offsets": [26, 27]},
             "empty": {"dtype": "F32", "shape": [0, 4], "data_offsets": [27, 27]}}, bytes(range(27)) + b"\0" * 5),
        "empty_header.safetensors": safetensors_file({}),
        "bad_overlap.safetensors": safetensors_file(
            {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
             "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, b"\0" * 12),
        "bad_dtype.safetensors": safetensors_file(
            {"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0"),
        "bad_shape.safetensors": safetensors_file(
            {"a": {"dtype": "F32", "shape": [-1, 2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "bad_length.safetensors": struct.pack("<Q", 1 << 40) + b"{}",
        "short.safetensors": b"\x02\x00\x00",
    }


def tokenizer_seeds():
    tok = "tests/fixtures/tokenizers"
    byte_level = read(tok + "/tiny_bytelevel/tokenizer.json")
    spbpe = read(tok + "/tiny_spbpe/tokenizer.json")
    texts = SEP.join([b"Hello world", "na\u00efve caf\u00e9 \u65e5\u672c".encode(), b"  x  y\t\n"])
    unigram = json.dumps({
        "version": "1.0",
        "normalizer": {"type": "Sequence", "normalizers": [
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
            {"type": "Prepend", "prepend": "\u2581"}]},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": True},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": True, "vocab": [
            ["<unk>", 0.0], ["\u2581", -1.0], ["a", -2.0], ["b", -2.0], ["ab", -1.5], ["<0x41>", -5.0],
            ["<0xC3>", -5.0], ["<0xA9>", -5.0], ["\u2581ab", -0.5]]},
        "decoder": {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "added_tokens": [{"id": 9, "content": "<s>", "special": True, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False}],
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"<s>": {"id": "<s>", "ids": [9], "tokens": ["<s>"]}}},
    }, ensure_ascii=False).encode()
    bert_like = json.dumps({
        "version": "1.0",
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "model": {"type": "BPE", "dropout": None, "unk_token": "[UNK]", "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                  "vocab": {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "h": 3, "e": 4, "l": 5, "o": 6, "he": 7, "ll": 8,
                            "hell": 9, "hello": 10, "!": 11}, "merges": ["h e", "l l", "he ll", "hell o"]},
        "post_processor": {"type": "BertProcessing", "sep": ["[SEP]", 2], "cls": ["[CLS]", 1]},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
    }).encode()
    wordpiece = json.dumps({"version": "1.0", "model": {"type": "WordPiece", "unk_token": "[UNK]",
                                                         "vocab": {"[UNK]": 0, "a": 1, "##b": 2}}}).encode()
    wordlevel = json.dumps({"model": {"type": "WordLevel", "vocab": {"a": 0}, "unk_token": "a"}}).encode()
    return {
        "bytelevel_bpe.bin": byte_level + SEP + read(tok + "/tiny_bytelevel/tokenizer_config.json") + SEP + texts,
        "spbpe_gemma_config.bin": spbpe + SEP + read(tok + "/tiny_spbpe/tokenizer_config.json") + SEP + texts,
        "spbpe_no_config.bin": spbpe,
        "unigram_bytefallback.bin": unigram + SEP + SEP + texts + SEP + b"Ab\xc3\xa9",
        "bert_like_bpe.bin": bert_like + SEP + b'{"model_max_length": 512, "unk_token": "[UNK]"}' + SEP + b"Hello!",
        "wordpiece_unsupported.bin": wordpiece,
        "wordlevel_unsupported.bin": wordlevel,
        "bad_json.bin": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"',
        "bad_config.bin": byte_level + SEP + b'{"pad_token": "<not-a-token>"}',
        # Found by this target (fixed in lib/src/text/hf_tokenizer.cpp; unit test in
        # tests/unit/text/test_tokenizer.cpp): a template adding id 9, which no token has.
        "regression_template_id_not_in_vocab.bin": json.dumps({
            "version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "decoder": None,
            "model": {"type": "BPE", "unk_token": "<unk>", "fuse_unk": True, "byte_fallback": False,
                      "vocab": {"<unk>": 0, "a": 1, "b": 2, "c": 3, "ab": 4, "bc": 5, "abc": 6}, "merges": []},
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                          {"Sequence": {"id": "A", "type_id": 0}}],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [9], "tokens": ["<s>"]}}}}).encode()
                                                   + SEP + SEP + b"abc",
        # Also found by this target (fixed in lib/src/text/post_processors.cpp): $A twice
        # in a template, so that encode() under max_length returned too many ids.
        "regression_template_twice.bin": json.dumps({
            "version": "1.0", "model": {"type": "BPE", "unk_token": "<unk>",
                                        "vocab": {"<unk>": 0, "a": 1, "b": 2}, "merges": []},
            "post_processor": {"type": "TemplateProcessing", "single": ["$A", "[CLS]", "$A"],
                               "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [0], "tokens": ["<unk>"]}}}
        }).encode() + SEP + SEP + b"abab",
    }


def config_seeds():
    s = {}
    for name in ["models/qwen2_causal", "models/gemma3_bidir", "models_v5/qwen2_bidir_last",
                 "models_v5/gemma3_causal_last_left", "export/model"]:
        s[name.replace("/", "_") + ".json"] = read("tests/fixtures/" + name + "/config.json")
    s["gemma3_wrapper.json"] = json.dumps({
        "model_type": "gemma3", "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "text_config": {"hidden_size": 64, "num_hidden_layers": 7, "num_attention_heads": 4,
                        "num_key_value_heads": 2, "head_dim": 16, "intermediate_size": 128, "vocab_size": 100,
                        "sliding_window": 8, "sliding_window_pattern": 3,
                        "rope_scaling": {"rope_type": "linear", "factor": 8.0}}})
    s["qwen2_v5_rope.json"] = json.dumps({
        "model_type": "qwen2", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 50, "dtype": "float32",
        "is_causal": False, "layer_types": ["full_attention", "full_attention"],
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}})
    s["bad_rope.json"] = json.dumps({"model_type": "qwen2", "rope_scaling": {"rope_type": "yarn", "factor": 4}})
    s["bad_heads.json"] = json.dumps({"model_type": "qwen2", "num_attention_heads": 6, "num_key_value_heads": 4})
    s["bad_type.json"] = json.dumps({"model_type": "llama", "hidden_size": 8})
    s["not_object.json"] = "[1, 2, 3]"
    # Found by this target (fixed in lib/src/model/json_util.cpp and config.cpp; unit
    # tests in tests/unit/model/test_config.cpp).
    s["regression_uint64_id.json"] = '{"model_type": "gemma3_text", "bos_token_id": 18446744073709551615}'
    s["regression_layer_count.json"] = '{"model_type": "qwen2", "num_hidden_layers": 100000000000}'
    # Found by this target (fixed in lib/src/io/json_writer.cpp): config_to_json wrote
    # this rope_theta as an integer literal past 64 bits, which kalm cannot read.
    s["regression_rope_theta.json"] = ('{"model_type": "qwen2", "hidden_size": 32, "num_attention_heads": 4, '
                                       '"num_hidden_layers": 2, "rope_theta": 108888888888888800000.0}')
    return s


def task_seeds():
    ex = "examples/eval/"
    s = {}
    for kind in ["bitext", "classification", "clustering", "pair_classification", "reranking", "sts"]:
        parts = [read(ex + kind + "/task.json"), read(ex + kind + "/test.jsonl", 700)]
        if kind == "classification":
            parts.append(read(ex + kind + "/train.jsonl", 700))
        s[kind + ".bin"] = SEP.join(parts)
    qrels = sorted(os.listdir(os.path.join(ROOT, ex, "retrieval", "qrels")))[0]
    s["retrieval.bin"] = SEP.join([read(ex + "retrieval/task.json"), read(ex + "retrieval/corpus.jsonl", 700),
                                   read(ex + "retrieval/queries.jsonl", 500),
                                   read(ex + "retrieval/qrels/" + qrels, 300)])
    s["retrieval_trec.bin"] = SEP.join([b'{"type": "retrieval", "splits": ["dev"]}',
                                        b'{"id": 1, "text": "a", "title": "t"}\n{"id": "2", "text": "b"}\n',
                                        b'{"id": "q", "text": "x"}\n', b"q 0 1 1\nq 0 2 1.0\n"])
    s["clustering_sets.bin"] = SEP.join([b'{"type": "clustering", "batch_size": 2}',
                                         b'{"sentences": ["a", "b"], "labels": [1, "x"]}\n'])
    s["bad_field.bin"] = b'{"type": "sts", "splitz": ["test"]}'
    s["bad_type.bin"] = b'{"type": "summarization"}'
    s["bad_counts.bin"] = b'{"type": "classification", "n_experiments": 0, "splits": []}'
    return s


def main():
    write_corpus("fuzz_jsonl_records", jsonl_seeds())
    write_corpus("fuzz_safetensors_header", safetensors_seeds())
    write_corpus("fuzz_tokenizer_json", tokenizer_seeds())
    write_corpus("fuzz_config_json", config_seeds())
    write_corpus("fuzz_task_json", task_seeds())
    total = 0
    for dirpath, _, files in os.walk(CORPUS):
        total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print(f"seed corpora written to {os.path.relpath(CORPUS, ROOT)} ({total} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
