"""`t2i eval --metric attr --captions FILE` (t2icli.metrics.captions_file) and the held-out paraphrase set
(scripts/paraphrases.py)."""

import importlib.util
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from t2icli.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _paraphrases():
    spec = importlib.util.spec_from_file_location("paraphrases", os.path.join(ROOT, "scripts", "paraphrases.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from test_eval import make_tiny_models

    from t2icli.data.toybirds import prepare_toybirds

    root = tmp_path_factory.mktemp("capfile")
    data = str(root / "tb")
    prepare_toybirds(data, size=32, n_train=40, n_test=12, captions_per_image=3, workers=1)
    gan, _ = make_tiny_models(data, str(root))
    return {"data": data, "gan": gan, "root": root}


def _attr(tiny, *extra):
    res = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--attr-steps", 3, "--json",
              *extra)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _images_seen(tiny, monkeypatch):
    """Record the images the attribute classifier is asked about: per evaluation the generated ones, then the real
    ones (the classifier is trained first, so that its own test predictions are not recorded)."""
    from t2icli.metrics import attributes

    attributes.load_or_train_classifier(tiny["data"], steps=3)
    seen, predict = [], attributes.predict_attributes

    def spy(model, images, size, **kw):
        seen.append(np.array(images))
        return predict(model, images, size, **kw)

    monkeypatch.setattr(attributes, "predict_attributes", spy)
    return seen


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_own_captions_as_a_file_reproduce_eval(tiny, monkeypatch):
    own = str(tiny["root"] / "own.jsonl")
    n = 36  # every test caption once: line j is test caption j
    counts = _paraphrases().write_paraphrases(tiny["data"], own, n=n, own=True)
    assert counts["lines"] == n
    seen = _images_seen(tiny, monkeypatch)
    plain = _attr(tiny, "--n-samples", n)
    from_file = _attr(tiny, "--captions", own)
    gen_plain, gen_file = seen[0], seen[2]  # [1] and [3] are the real images
    assert gen_plain.shape == (n, 32, 32, 3) and np.array_equal(gen_plain, gen_file)  # same captions, same noise
    assert len({im.tobytes() for im in gen_plain}) == n
    for key in ("accuracy", "n", "n_mentions", "per_attribute", "real"):
        assert from_file[key] == plain[key], key
    assert from_file["captions"] == os.path.abspath(own)
    assert from_file["words"]["total"] > 5 * n
    assert sum(from_file["per_attribute_n"].values()) == from_file["n_mentions"]

    # Another seed draws other noise; reordering the file moves each caption's image with it.
    seen.clear()
    _attr(tiny, "--captions", own, "--seed", 1)
    assert not np.array_equal(seen[0], gen_plain)
    lines = open(own).read().splitlines()
    swapped = str(tiny["root"] / "swapped.jsonl")
    with open(swapped, "w") as f:
        f.write("\n".join([lines[1], lines[0]] + lines[2:]) + "\n")
    seen.clear()
    _attr(tiny, "--captions", swapped)
    assert np.array_equal(seen[0][2:], gen_plain[2:]) and not np.array_equal(seen[0][:2], gen_plain[:2])


def test_out_of_vocabulary_words_are_counted(tiny, tmp_path):
    from t2icli.data import PreparedDataset
    from t2icli.data.text import tokenize

    known = PreparedDataset(tiny["data"], "train", train=False).caption_texts(0)[0]  # every word in the vocabulary
    path = tmp_path / "c.jsonl"
    lines = [{"text": known, "attributes": {"body": "red", "wing": "blue"}},
             {"text": "A crimson bird, azure wings!", "attributes": {"body": "red", "wing": "blue"}},
             {"text": "zzz qqq", "attributes": {"size": "small"}}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")  # a trailing empty line is skipped
    res = _attr(tiny, "--captions", path)
    w = res["words"]
    total = len(tokenize(known)) + 5 + 2
    assert res["n"] == 3 and res["n_mentions"] == 5 and "real" not in res  # no line names its image
    assert w["total"] == total and w["out_of_vocabulary"] == 4 and w["captions_with_oov"] == 2
    assert w["captions_without_known_words"] == 1 and w["captions_cut_to_word_limit"] == 0
    assert dict(map(tuple, w["most_frequent_oov"])) == {"crimson": 1, "azure": 1, "zzz": 1, "qqq": 1}
    assert res["per_attribute"]["crown"] is None and res["per_attribute_n"]["size"] == 1
    text = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--attr-steps", 3,
               "--captions", path)
    assert text.exit_code == 0 and f"out of vocabulary (dropped): 4 of {total} words, in 2 of 3 captions" in text.stdout


def test_groups_are_scored_apart(tiny, tmp_path):
    own = tmp_path / "own.jsonl"
    _paraphrases().write_paraphrases(tiny["data"], str(own), n=36, own=True)
    lines = [json.loads(x) for x in own.read_text().splitlines()]
    assert {x["group"] for x in lines} == {"own"}
    for j, x in enumerate(lines):  # three labels, and lines without one
        if j % 4 == 3:
            del x["group"]
        else:
            x["group"] = "abc"[j % 4]
    path = tmp_path / "grouped.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    res = _attr(tiny, "--captions", path)
    by = res["by_group"]
    assert list(by) == ["(none)", "a", "b", "c"] and [g["lines"] for g in by.values()] == [9, 9, 9, 9]
    assert sum(g["n_mentions"] for g in by.values()) == res["n_mentions"]
    micro = sum(g["accuracy"] * g["n_mentions"] for g in by.values()) / res["n_mentions"]
    assert micro == pytest.approx(res["accuracy"])  # the groups split the whole file's count
    assert sum(g["wrong_colours"] for g in by.values()) == res["misplaced_colours"]["wrong"]
    plain = _attr(tiny, "--captions", own)
    assert plain["accuracy"] == res["accuracy"] and list(plain["by_group"]) == ["own"]  # a label changes nothing else
    staged = _attr(tiny, "--captions", path, "--stage", "all")
    assert staged["by_group"] == by and [st["size"] for st in staged["per_stage"]] == [16]
    text = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--attr-steps", 3,
               "--captions", path)
    assert text.exit_code == 0 and "per group: (none) " in text.stdout and "c " in text.stdout.split("per group:")[1]
    for x in lines:
        x.pop("group", None)
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    assert "by_group" not in _attr(tiny, "--captions", path)  # no labels, no breakdown


def test_cut_and_encode_like_eval():
    from t2icli.data.text import Vocab, cut_caption
    from t2icli.metrics.captions_file import encode_captions

    vocab = Vocab(["<end>", "a", "red", "bird"])
    long = " ".join(["a red bird"] * 5)  # 15 known words
    tokens, lengths, words = encode_captions([long, "a bird", "nothing known"], vocab, 6, seed=3)
    assert lengths.tolist() == [6, 2, 1] and tokens[2].tolist() == [0] * 6
    want, _ = cut_caption(vocab.encode(long)[0], 6, np.random.default_rng([3, 0, 0xC0]))
    assert tokens[0].tolist() == want.tolist()
    assert words["captions_cut_to_word_limit"] == 1 and words["out_of_vocabulary"] == 2


@pytest.mark.parametrize("line,message", [
    ("not json", "line 2: not a JSON object"),
    ('["a red bird"]', "line 2: expected a JSON object"),
    ('{"text": "a red bird", "attributes": {"body": "red"}, "colour": 1}', "line 2: unknown key(s) 'colour'"),
    ('{"attributes": {"body": "red"}}', 'line 2: "text" must be a non-empty string'),
    ('{"text": "  ", "attributes": {"body": "red"}}', 'line 2: "text" must be a non-empty string'),
    ('{"text": "a bird", "attributes": {}}', 'line 2: "attributes" must be an object naming at least one'),
    ('{"text": "a bird", "attributes": {"tail": "red"}}', "line 2: unknown attribute 'tail'; this data set has body"),
    ('{"text": "a bird", "attributes": {"body": "crimson"}}', "line 2: body: unknown value 'crimson'; choose from red"),
    ('{"text": "a bird", "attributes": {"size": "Small"}}', "line 2: size: unknown value 'Small'"),
    ('{"text": "a bird", "attributes": {"body": "red"}, "group": 3}', 'line 2: "group" must be a non-empty string'),
    ('{"text": "a bird", "attributes": {"body": "red"}, "group": " "}', 'line 2: "group" must be a non-empty string'),
    ('{"text": "a bird", "attributes": {"body": "red"}, "image": "test/999999"}',
     "line 2: image 'test/999999' is not an image of the evaluated split (names look like 'test/000000')"),
])
def test_bad_lines_are_errors_naming_the_line(tiny, tmp_path, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a red bird", "attributes": {"body": "red"}}\n' + line + "\n")
    res = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--captions", path)
    assert res.exit_code == 1, res.output
    assert f"--captions {path} {message}" in res.output and "Traceback" not in res.output


def test_image_must_agree_with_the_line(tiny, tmp_path):
    from t2icli.data import PreparedDataset
    from t2icli.data.toybirds import COLORS

    ds = PreparedDataset(tiny["data"], "test", train=False)
    body = COLORS[int(ds.attributes[0, 0])]
    wrong = COLORS[(int(ds.attributes[0, 0]) + 1) % len(COLORS)]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"text": f"a {wrong} bird", "attributes": {"body": wrong}, "image": "test/000000"}))
    res = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--captions", path)
    assert res.exit_code == 1
    assert f"line 1: body: the line states {wrong!r}, but image test/000000 has {body!r}" in res.output


def test_empty_file_and_usage_errors(tiny, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    res = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--captions", empty)
    assert res.exit_code == 1 and "no captions" in res.output
    good = tmp_path / "good.jsonl"
    good.write_text('{"text": "a red bird", "attributes": {"body": "red"}}\n')
    for extra, msg in ((["--metric", "rprecision"], "--captions goes with --metric attr"),
                       (["--metric", "attr", "--n-samples", 5], "--n-samples does not go with --captions"),
                       (["--metric", "attr", "--stats-only"], "--captions goes with --metric attr")):
        res = run("eval", *extra, "--model", tiny["gan"], "--data", tiny["data"], "--captions", good)
        assert res.exit_code == 2 and msg in res.output, res.output
    res = run("eval", "--metric", "attr", "--model", tiny["gan"], "--data", tiny["data"], "--captions",
              tmp_path / "missing.jsonl")
    assert res.exit_code == 2 and "does not exist" in res.output


# -- the paraphrase set -----------------------------------------------------------------------------
COLOUR_WORD = re.compile(r"\b(red|orange|yellow|green|blue|purple|brown|black|white|gr[ae]y)\b")


def test_paraphrases_state_the_test_captions_facts(tiny, tmp_path):
    from t2icli.data import PreparedDataset

    para = _paraphrases()
    out = tmp_path / "para.jsonl"
    n = 80  # more than the 36 test captions: cycles, as `t2i eval --n-samples` does
    assert para.write_paraphrases(tiny["data"], str(out), n=n, seed=0)["lines"] == n
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    ds = PreparedDataset(tiny["data"], "test", train=False)
    names = ["body", "wing", "crown", "belly", "beak", "beak_length", "size", "background"]
    image_of_row = np.repeat(np.arange(len(ds)), np.diff(ds.image_captions))
    for j, line in enumerate(lines):
        row = j % 36
        i = int(image_of_row[row])
        assert line["image"] == f"test/{i:06d}"
        mentioned = {names[k] for k in range(8) if (int(ds.caption_mentions[row]) >> k) & 1}
        assert set(line["attributes"]) == mentioned  # the same facts as test caption `row` ...
        for name, value in line["attributes"].items():  # ... with the image's true values
            k = names.index(name)
            assert ds.meta["attributes"][k]["values"].index(value) == ds.attributes[i, k]
        colours = {"gray" if c == "grey" else c for c in COLOUR_WORD.findall(line["text"].lower())}
        stated = {line["attributes"][p] for p in ("body", "wing", "crown", "belly", "beak") if p in line["attributes"]}
        assert colours == stated, line
        assert para.held_out(line["text"]), line["text"]
        assert line["group"] in {para.frame_name(f) for f in para.FRAMES}
    # The same seed writes the same file; another seed other words.
    again = tmp_path / "again.jsonl"
    para.write_paraphrases(tiny["data"], str(again), n=n, seed=0)
    assert again.read_bytes() == out.read_bytes()
    para.write_paraphrases(tiny["data"], str(again), n=n, seed=1)
    assert again.read_bytes() != out.read_bytes()
    # The files are readable by the evaluation.
    from t2icli.metrics.captions_file import read_captions_file

    read = read_captions_file(out, ds.meta["attributes"], [f"test/{i:06d}" for i in range(len(ds))], ds.attributes)
    assert len(read["texts"]) == n and (read["images"] >= 0).all()
    assert read["groups"] == [x["group"] for x in lines]


def test_paraphrases_are_held_out_from_the_grammar(tiny, tmp_path):
    from t2icli.data import PreparedDataset
    from t2icli.data.toybirds import generate_split

    para = _paraphrases()
    out = tmp_path / "para.jsonl"
    para.write_paraphrases(tiny["data"], str(out), n=300, seed=0)
    texts = [json.loads(x)["text"] for x in out.read_text().splitlines()]
    folder = {t for split in ("train", "test") for i in range(len(PreparedDataset(tiny["data"], split, train=False)))
              for t in PreparedDataset(tiny["data"], split, train=False).caption_texts(i)}
    assert not {t.lower().rstrip(".") for t in texts} & folder
    # No wording marked held out is ever produced by the grammar (5000 captions of other birds).
    grammar = generate_split(500, 16, seed=5, captions_per_image=10, split="train", workers=1)
    for caption in (t for caps in grammar["captions"] for t in caps):
        assert not para.held_out(caption), caption
    # Every frame of the set is used.
    assert len({para.FRAMES[int(np.random.default_rng([0, j, 0x9A7A]).integers(len(para.FRAMES)))]
                for j in range(300)}) == len(para.FRAMES)


def test_paraphrase_script_refuses_other_data(tmp_path):
    para = _paraphrases()
    with pytest.raises(SystemExit, match="not a prepared dataset"):
        para.write_paraphrases(str(tmp_path), str(tmp_path / "x.jsonl"))
    (tmp_path / "dataset.json").write_text(json.dumps({"source": "cub", "splits": {}}))
    with pytest.raises(SystemExit, match="not a toybirds folder"):
        para.write_paraphrases(str(tmp_path), str(tmp_path / "x.jsonl"))
