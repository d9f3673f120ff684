"""Hard negative captions (--hard-negatives): the caption editor, the paired word score, the loss's extra columns,
and both trainers (DAMSM and the AttnGAN DAMSM term)."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from t2icli import losses, ops
from t2icli.data.format import DatasetWriter
from t2icli.data.negatives import WORD_KINDS, CaptionEditor, editor_for
from t2icli.data.text import Vocab
from t2icli.errors import ConfigError
from t2icli.ops import reference

VOCAB = ["<end>", "a", "an", "bird", "with", "wings", "and", "beak", "is", "mostly", "this", "sized", "it", "at",
         "night", "red", "orange", "yellow", "blue", "black", "gray", "grey", "small", "tiny", "medium", "large", "big",
         "short", "stubby", "long", "crown"]
VALUE = {w: (kind, v) for kind, values in WORD_KINDS.items() for v, syn in enumerate(values) for w in syn}


def _encode(captions, T=16):
    vocab = Vocab(VOCAB)
    tokens, lengths = torch.zeros(len(captions), T, dtype=torch.long), []
    for i, c in enumerate(captions):
        ids, oov = vocab.encode(c)
        assert not oov, oov
        tokens[i, : len(ids)] = torch.tensor(ids)
        lengths.append(len(ids))
    return tokens, torch.tensor(lengths)


def test_every_edit_changes_exactly_one_fact_and_keeps_the_article_right():
    captions = ["an orange bird with blue wings and a long red beak", "this medium sized bird is mostly grey",
                "a tiny yellow bird with black wings and a short beak", "a large bird with gray wings"]
    tokens, lengths = _encode(captions)
    editor = CaptionEditor(VOCAB)
    u = torch.rand(len(captions), 64, 3, generator=torch.Generator().manual_seed(0))
    out, valid = editor.edit(tokens, lengths, u)
    assert out.shape == (4, 64, 16) and valid.all()
    changed_kinds = set()
    for b in range(4):
        old = [VOCAB[t] for t in tokens[b, : lengths[b]].tolist()]
        for j in range(64):
            new = [VOCAB[t] for t in out[b, j, : lengths[b]].tolist()]
            assert out[b, j, lengths[b]:].eq(0).all()  # the padding stays padding
            diff = [t for t in range(len(old)) if old[t] != new[t] and old[t] not in ("a", "an")]
            assert len(diff) == 1, (old, new)
            t = diff[0]
            kind, v = VALUE[old[t]]
            assert VALUE[new[t]][0] == kind and VALUE[new[t]][1] != v, (old[t], new[t])  # no synonym: a new fact
            changed_kinds.add(kind)
            assert not (old[t] == "medium" and old[t + 1] == "sized")  # a compound size word is left alone
            if t > 0 and old[t - 1] in ("a", "an"):
                assert new[t - 1] == ("an" if new[t][0] in "aeiou" else "a"), new
            assert [w for k, w in enumerate(new) if k not in (t, t - 1)] == \
                [w for k, w in enumerate(old) if k not in (t, t - 1)]
    assert changed_kinds == {"colour", "size", "length", "part"}
    # Same draws, same edits (a resumed run edits alike).
    again, _ = editor.edit(tokens, lengths, u)
    assert torch.equal(again, out)


def test_captions_with_nothing_to_edit_give_invalid_copies_and_a_bare_vocabulary_is_refused():
    tokens, lengths = _encode(["it is at night", "this medium sized bird", "a red bird"])
    out, valid = CaptionEditor(VOCAB).edit(tokens, lengths, torch.rand(3, 2, 3))
    assert valid.tolist() == [[False, False], [False, False], [True, True]]
    assert torch.equal(out[:2], tokens[:2, None].expand(2, 2, 16))
    with pytest.raises(ValueError, match="u must be"):
        CaptionEditor(VOCAB).edit(tokens, lengths, torch.rand(2, 2, 3))
    assert not CaptionEditor(["<end>", "a", "bird", "red"]).editable()  # one colour: nothing to change it into
    with pytest.raises(ConfigError, match="--hard-negatives 2: the vocabulary of --data D"):
        editor_for(["<end>", "a", "bird", "red"], "--hard-negatives 2", "D")


def test_scene_words_are_edited_into_another_scene_never_a_synonym_and_dark_is_left_alone():
    """The background is a fact too (toybirds states it in 15% of captions): "grass" becomes a word of another
    scene, never "lawn"; "dark" (CUB's "dark brown") is no scene word."""
    vocab = ["<end>", "a", "bird", "on", "the", "in", "at", "sky", "grass", "lawn", "sand", "beach", "night",
             "nighttime", "dark", "brown"]
    captions = [["a", "bird", "on", "the", "grass"], ["a", "bird", "at", "nighttime"],
                ["a", "bird", "in", "the", "dark"]]
    tokens = torch.tensor([[vocab.index(w) for w in c] + [0] * (6 - len(c)) for c in captions])
    lengths = torch.tensor([len(c) for c in captions])
    u = torch.rand(3, 64, 3, generator=torch.Generator().manual_seed(0))
    out, valid = CaptionEditor(vocab).edit(tokens, lengths, u)
    assert valid[:2].all() and not valid[2].any()
    scene_of = {w: v for v, syn in enumerate(WORD_KINDS["scene"]) for w in syn}
    for b, t in ((0, 4), (1, 3)):
        old = vocab[int(tokens[b, t])]
        new = {vocab[int(x)] for x in out[b, :, t]}
        assert all(scene_of[w] != scene_of[old] for w in new), (old, new)
        assert len({scene_of[w] for w in new}) == 3  # every other scene of the vocabulary is drawn
        rest = torch.cat([tokens[b, :t], tokens[b, t + 1:]])  # every other word is kept
        assert torch.equal(torch.cat([out[b, :, :t], out[b, :, t + 1:]], 1), rest.expand(64, -1))


def test_part_edits_move_a_colour_to_another_part_and_leave_plural_parts_alone():
    """ "a red crown" -> "a red belly": every colour stays, one moves (what colour edits alone never ask: the previous
    shipped model drew a "red crown" on the belly). "wings" (plural: the verb would not agree) is never a site."""
    vocab = ["<end>", "a", "bird", "with", "the", "are", "red", "blue", "crown", "head", "cap", "belly", "breast",
             "beak", "wings", "headed", "bellied"]
    captions = [["a", "bird", "with", "a", "red", "head"], ["a", "blue", "headed", "bird"],
                ["the", "wings", "are", "red"]]
    tokens = torch.tensor([[vocab.index(w) for w in c] + [0] * (7 - len(c)) for c in captions])
    lengths = torch.tensor([len(c) for c in captions])
    u = torch.rand(3, 64, 3, generator=torch.Generator().manual_seed(1))
    out, valid = CaptionEditor(vocab).edit(tokens, lengths, u)
    assert valid.all()
    assert out[2, :, 1].eq(vocab.index("wings")).all()  # only "red" is edited in "the wings are red"
    for b, t, kind in ((0, 5, "part"), (1, 2, "part_adjective")):
        value_of = {w: v for v, syn in enumerate(WORD_KINDS[kind]) for w in syn}
        edited = [vocab[int(out[b, j, t])] for j in range(64) if out[b, j, t] != tokens[b, t]]
        assert edited and all(value_of[w] != value_of[captions[b][t]] for w in edited), edited
        assert {"cap", "crown", "head", "headed"}.isdisjoint(edited)  # never a synonym of the old part


def test_natural_edits_create_only_ngrams_the_corpus_has():
    """With a corpus, "at night" is never edited into "at sky" (a phrase no caption has: the Ds of a toybirds run
    rejected such captions from their text alone) while "on the grass" -> "on the sand" is; an n-gram that was
    already missing before the edit (a cut caption) does not block it. Without a corpus every edit stays possible."""
    vocab = ["<end>", "a", "bird", "on", "the", "at", "against", "sky", "grass", "sand", "night", "red", "blue"]
    corpus_text = ["a red bird at night", "a blue bird at night", "a red bird on the grass",
                   "a blue bird on the sand", "a red bird against the sky"]
    corpus = [[vocab.index(w) for w in c.split()] for c in corpus_text]
    captions = [["a", "red", "bird", "at", "night"], ["a", "blue", "bird", "on", "the", "grass"],
                ["a", "red", "at", "night"]]  # the last one cut: "red at" is in no caption
    tokens = torch.tensor([[vocab.index(w) for w in c] + [0] * (7 - len(c)) for c in captions])
    lengths = torch.tensor([len(c) for c in captions])
    u = torch.rand(3, 256, 3, generator=torch.Generator().manual_seed(0))

    def edits(editor):
        out, valid = editor.edit(tokens, lengths, u)
        assert valid.all()
        return [{" ".join(vocab[int(x)] for x in out[b, j, : len(captions[b])]) for j in range(256)} for b in range(3)]

    natural = edits(CaptionEditor(vocab, corpus))
    assert natural[0] == {"a blue bird at night"}  # no scene edit: "at sky" / "at grass" / "at sand" are unseen
    assert natural[1] == {"a red bird on the grass", "a blue bird on the sand"}  # not "on the sky"
    assert natural[2] == {"a blue at night"}  # "blue at" is unseen, but so was "red at"
    raw = edits(CaptionEditor(vocab))
    assert {"a red bird at sky", "a red bird at sand", "a red bird at grass"} < raw[0]
    assert "a blue bird on the sky" in raw[1]


def test_swaps_exchange_two_colours_of_different_values_and_keep_the_articles_right():
    """--swap-negatives: the copy has the caption's words (a bag of words cannot tell them apart) with two colours of
    different values exchanged; every such pair is drawn; captions without two different colours give invalid
    copies; with a corpus a swap that creates an unseen n-gram is not drawn."""
    captions = ["an orange bird with blue wings and a red beak", "a red bird with red wings",
                "a tiny yellow bird with black wings", "a large bird with gray wings"]
    tokens, lengths = _encode(captions)
    u = torch.rand(4, 256, generator=torch.Generator().manual_seed(0))
    out, valid = CaptionEditor(VOCAB).swap(tokens, lengths, u)
    assert out.shape == (4, 256, 16) and valid.tolist() == [[True] * 256, [False] * 256, [True] * 256, [False] * 256]
    assert torch.equal(out[1], tokens[1].expand(256, 16)) and torch.equal(out[3], tokens[3].expand(256, 16))
    drawn = [{" ".join(VOCAB[t] for t in out[b, j, : lengths[b]].tolist()) for j in range(256)} for b in (0, 2)]
    assert drawn[0] == {"a blue bird with orange wings and a red beak", "a red bird with blue wings and an orange beak",
                        "an orange bird with red wings and a blue beak"}  # the 3 pairs, articles agreeing
    assert drawn[1] == {"a tiny black bird with yellow wings"}
    vocab = ["<end>", "a", "bird", "with", "wings", "red", "blue", "and", "beak"]
    corpus = [[vocab.index(w) for w in c.split()] for c in ("a red bird with blue wings and red beak",
                                                            "a blue bird with red wings and red beak")]
    tok = torch.tensor([[vocab.index(w) for w in "a red bird with blue wings and red beak".split()]])
    out, valid = CaptionEditor(vocab, corpus).swap(tok, torch.tensor([9]), torch.rand(1, 64))
    assert valid.all() and {" ".join(vocab[t] for t in row.tolist()) for row in out[0]} == {
        "a blue bird with red wings and red beak"}  # not "... red wings and blue beak": no caption has "and blue"
    raw, _ = CaptionEditor(vocab).swap(tok, torch.tensor([9]), torch.rand(1, 64, generator=torch.Generator().manual_seed(1)))
    assert "a red bird with red wings and blue beak" in {" ".join(vocab[t] for t in row.tolist()) for row in raw[0]}


def test_natural_edits_reach_both_trainers_editors(tiny_gan_setup, tmp_path, monkeypatch):
    """--natural-edits gives `t2i train damsm`'s and `t2i train attngan`'s editors the training captions as their
    corpus, and is recorded in config.json."""
    from t2icli.data import negatives
    from t2icli.training import train

    made, real = [], negatives.editor_for

    def spy(vocab, flag, data, corpus=None):
        made.append(real(vocab, flag, data, corpus))
        return made[-1]

    monkeypatch.setattr(negatives, "editor_for", spy)
    data = str(tmp_path / "d")
    _write(data, lambda a: [f"a {('red', 'blue')[a]} bird with {('black', 'white')[a]} wings"])
    train("damsm", data=data, out=str(tmp_path / "a"), steps=1, hard_negatives=1, natural_edits=True, **TINY_DAMSM)
    assert made[-1].ngrams  # the training captions' n-grams
    assert json.loads((tmp_path / "a" / "config.json").read_text())["natural_edits"]
    train("damsm", data=data, out=str(tmp_path / "b"), steps=1, hard_negatives=1, **TINY_DAMSM)
    assert made[-1].ngrams is None  # off by default
    tiny = tiny_gan_setup(tmp_path / "setup", n_train=16, n_test=8)
    train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "g", stages=2, gf_dim=4, df_dim=4,
          z_dim=8, cond_dim=8, batch_size=4, n_prompts=1, snapshot_rprecision=0, final_rprecision=0, progress=False,
          steps=1, edited_wrong=0.5, natural_edits=True)
    assert made[-1].ngrams
    with pytest.raises(ConfigError, match="--natural-edits filters"):  # nothing to filter
        train("damsm", data=data, out=str(tmp_path / "c"), steps=1, natural_edits=True, **TINY_DAMSM)
    with pytest.raises(ConfigError, match="--natural-edits filters edited captions: it needs"):
        train("attngan", data=tiny["data"], damsm=tiny["damsm"], out=tmp_path / "h", steps=1, natural_edits=True)


def test_paired_word_scores_are_the_diagonal_of_the_all_pairs_scores():
    g = torch.Generator().manual_seed(0)
    M, D, N, T = 5, 12, 9, 6
    img = torch.randn(M, D, N, generator=g, dtype=torch.float64, requires_grad=True)
    words = torch.randn(M, D, T, generator=g, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([6, 3, 1, 5, 2])
    full = reference.damsm_word_scores(img, words, lengths, 4.0, 5.0)  # [M, M]
    paired = ops.damsm_word_scores_paired(img, words, lengths, 4.0, 5.0)  # [M]
    torch.testing.assert_close(paired, full.diagonal(), rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda a, b: ops.damsm_word_scores_paired(a, b, lengths, 4.0, 5.0), (img, words))


def test_hard_scores_and_the_loss_columns():
    """hard_negative_scores scores image m against its own K captions (as the all-pairs scores of that one pair);
    damsm_loss puts them as extra columns of image m's row in the image -> caption terms only."""
    g = torch.Generator().manual_seed(1)
    M, K, D, T = 4, 3, 8, 5
    f, f_bar = torch.randn(M, D, 2, 3, generator=g), torch.randn(M, D, generator=g)
    e, e_bar = torch.randn(M, D, T, generator=g), torch.randn(M, D, generator=g)
    e_h, e_bar_h = torch.randn(M, K, D, T, generator=g), torch.randn(M, K, D, generator=g)
    lengths = torch.tensor([5, 2, 4, 3])
    word_h, sent_h = losses.hard_negative_scores(f, f_bar, e_h, e_bar_h, lengths)
    for m in range(M):
        for k in range(K):
            w = reference.damsm_word_scores(f[m : m + 1].flatten(2), e_h[m, k][None], lengths[m : m + 1], 4.0, 5.0)
            torch.testing.assert_close(word_h[m, k], w[0, 0])
            torch.testing.assert_close(sent_h[m, k], F.cosine_similarity(f_bar[m], e_bar_h[m, k], dim=0))
    word, sent = losses.damsm_scores(f, e, lengths, f_bar, e_bar)
    plain = losses.damsm_loss(word, sent)
    none_valid = losses.damsm_loss(word, sent, hard=(word_h, sent_h, torch.zeros(M, K, dtype=torch.bool)))
    for key in plain:
        torch.testing.assert_close(none_valid[key], plain[key])
    valid = torch.tensor([[True, False, True], [True, True, True], [False, False, False], [True, True, False]])
    out = losses.damsm_loss(word, sent, hard=(word_h, sent_h, valid))
    for name, scores, hard in (("w", word, word_h), ("s", sent, sent_h)):
        torch.testing.assert_close(out[name + "1"], plain[name + "1"])  # caption -> image: unchanged
        rows = [torch.cat([10 * scores[m], 10 * hard[m][valid[m]]]) for m in range(M)]
        want = torch.stack([-F.log_softmax(r, 0)[m] for m, r in enumerate(rows)]).mean()
        torch.testing.assert_close(out[name + "2"], want)
        assert out[name + "2"] > plain[name + "2"]


# -- trainers --------------------------------------------------------------------------------------
def _write(out, captions_of):
    rng = np.random.default_rng(0)
    with DatasetWriter(out, source="unit", image_size=16, word_limit=8) as w:
        for split, n in (("train", 16), ("test", 8)):
            s = w.split(split)
            for i in range(n):
                a = int(rng.integers(2))
                img = np.full((16, 16, 3), 60 + 150 * a, np.uint8)
                s.add(img, captions_of(a), class_id=a, filename=f"{split}/{i}")
        return w.finish()


TINY_DAMSM = dict(batch_size=8, small_width=8, progress=False, n_attention=0, rprecision_runs=1)


def _resumes_exactly(tmp_path, data, whole, **fields):
    """A DAMSM run of 3 steps resumed after 1 ends with the weights of the uninterrupted run `whole` (a folder)."""
    from t2icli.training import train
    from t2icli.training.run import find_latest_checkpoint, load_checkpoint

    out = str(tmp_path / "resumed")
    train("damsm", data=data, out=out, steps=1, **fields, **TINY_DAMSM)
    train("damsm", data=data, out=out, steps=3, resume="latest", **fields, **TINY_DAMSM)
    a = load_checkpoint(find_latest_checkpoint(str(whole)))["model"]
    b = load_checkpoint(find_latest_checkpoint(out))["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_damsm_hard_negatives_reach_the_loss_resume_exactly_and_need_attribute_words(tmp_path, monkeypatch):
    from t2icli.training import train

    data = str(tmp_path / "d")
    _write(data, lambda a: [f"a {('red', 'blue')[a]} bird with {('black', 'white')[a]} wings"])
    seen, real = [], losses.damsm_loss

    def spy(word, sent, class_ids=None, gamma3=10.0, hard=None):
        seen.append(None if hard is None else tuple(t.shape for t in hard))
        return real(word, sent, class_ids, gamma3, hard=hard)

    monkeypatch.setattr(losses, "damsm_loss", spy)
    train("damsm", data=data, out=str(tmp_path / "a"), steps=3, hard_negatives=2, **TINY_DAMSM)
    assert [s for s in seen if s] == [((8, 2), (8, 2), (8, 2))] * 3  # the 3 training steps
    assert None in seen  # the test-split evaluations score without them
    assert json.loads((tmp_path / "a" / "config.json").read_text())["hard_negatives"] == 2
    _resumes_exactly(tmp_path, data, tmp_path / "a", hard_negatives=2)
    bare = str(tmp_path / "bare")
    _write(bare, lambda a: [f"a bird of kind {'xy'[a]}"])
    with pytest.raises(ConfigError, match="--hard-negatives 1: the vocabulary of --data"):
        train("damsm", data=bare, out=str(tmp_path / "c"), steps=1, hard_negatives=1, **TINY_DAMSM)


def test_damsm_swap_negatives_join_the_hard_columns_and_resume_exactly(tmp_path, monkeypatch):
    """--swap-negatives K adds K columns after the --hard-negatives ones (alone: K columns), recorded in config.json;
    a resumed run draws them alike; --natural-edits accepts them as its edits; a vocabulary without colours is refused."""
    from t2icli.training import train

    data = str(tmp_path / "d")  # each class's caption is the other's swapped: natural swaps exist
    _write(data, lambda a: [f"a {('red', 'blue')[a]} bird with {('blue', 'red')[a]} wings"])
    seen, real = [], losses.damsm_loss

    def spy(word, sent, class_ids=None, gamma3=10.0, hard=None):
        seen.append(None if hard is None else (tuple(t.shape for t in hard), bool(hard[2].all())))
        return real(word, sent, class_ids, gamma3, hard=hard)

    monkeypatch.setattr(losses, "damsm_loss", spy)
    train("damsm", data=data, out=str(tmp_path / "a"), steps=2, hard_negatives=2, swap_negatives=1, **TINY_DAMSM)
    assert [s for s in seen if s] == [(((8, 3), (8, 3), (8, 3)), True)] * 2  # every caption has two colours
    assert json.loads((tmp_path / "a" / "config.json").read_text())["swap_negatives"] == 1
    seen.clear()
    train("damsm", data=data, out=str(tmp_path / "s"), steps=3, swap_negatives=2, natural_edits=True, **TINY_DAMSM)
    assert [s for s in seen if s] == [(((8, 2), (8, 2), (8, 2)), True)] * 3
    _resumes_exactly(tmp_path, data, tmp_path / "s", swap_negatives=2, natural_edits=True)
    bare = str(tmp_path / "bare")
    _write(bare, lambda a: [f"a bird of kind {'xy'[a]}"])
    with pytest.raises(ConfigError, match="--swap-negatives 1: the vocabulary of --data"):
        train("damsm", data=bare, out=str(tmp_path / "c"), steps=1, swap_negatives=1, **TINY_DAMSM)
    sizes = str(tmp_path / "sizes")  # editable (sizes), but no colour pair to exchange
    _write(sizes, lambda a: [f"a {('small', 'large')[a]} bird"])
    with pytest.raises(ConfigError, match="--swap-negatives 2: the vocabulary of --data .* no two colour words"):
        train("damsm", data=sizes, out=str(tmp_path / "e"), steps=1, hard_negatives=1, swap_negatives=2, **TINY_DAMSM)
    assert not (tmp_path / "e").exists() or not any((tmp_path / "e").rglob("*.pt"))


def test_attngan_hard_negatives_reach_the_damsm_term(tiny_gan_setup, tmp_path, monkeypatch):
    from t2icli.training import train

    tiny = tiny_gan_setup(tmp_path / "setup", n_train=16, n_test=8)
    seen, real = [], losses.generator_damsm_loss

    def spy(*args, **kw):
        hard = kw.get("hard")
        seen.append(None if hard is None else (tuple(hard[0].shape), tuple(hard[1].shape), hard[2].dtype))
        return real(*args, **kw)

    monkeypatch.setattr(losses, "generator_damsm_loss", spy)
    kw = dict(data=tiny["data"], damsm=tiny["damsm"], stages=2, gf_dim=4, df_dim=4, z_dim=8, cond_dim=8, batch_size=4,
              n_prompts=1, snapshot_rprecision=0, final_rprecision=0, progress=False)
    train("attngan", out=tmp_path / "r", steps=2, hard_negatives=3, **kw)
    D, T = 32, 18  # the tiny DAMSM's 2 x 16 hidden; toybirds' word limit
    assert seen == [((4, 3, D, T), (4, 3, D), torch.bool)] * 2
    train("attngan", out=tmp_path / "r0", steps=1, **kw)
    assert seen[-1] is None  # off by default


def test_attngan_edited_wrong_gives_d_the_rows_own_caption_edited(tiny_gan_setup, tmp_path, monkeypatch):
    """--edited-wrong SHARE: D's wrong condition of the chosen rows is the sentence feature of their own caption with
    one word edited; the other rows keep the batch roll's caption (AttnGAN's wrong pair), and the run resumes exactly."""
    from t2icli.training import attngan, train
    from t2icli.training.run import find_latest_checkpoint, load_checkpoint

    tiny = tiny_gan_setup(tmp_path / "setup", n_train=16, n_test=8)
    encoded, wrongs, real_enc, real_d = [], [], attngan.encode_with_edits, losses.discriminator_loss

    def enc_spy(text_encoder, tokens, lengths, edited=None):
        out = real_enc(text_encoder, tokens, lengths, edited)
        encoded.append((tokens, edited, out))
        return out

    def d_spy(D, real, fake, e_bar, e_bar_wrong=None, *a, **kw):
        wrongs.append((e_bar, e_bar_wrong))
        return real_d(D, real, fake, e_bar, e_bar_wrong, *a, **kw)

    monkeypatch.setattr(attngan, "encode_with_edits", enc_spy)
    monkeypatch.setattr(losses, "discriminator_loss", d_spy)
    kw = dict(data=tiny["data"], damsm=tiny["damsm"], stages=2, gf_dim=4, df_dim=4, z_dim=8, cond_dim=8, batch_size=8,
              n_prompts=1, snapshot_rprecision=0, final_rprecision=0, progress=False)
    train("attngan", out=tmp_path / "a", steps=3, edited_wrong=0.5, **kw)
    assert len(encoded) == 3 and len(wrongs) == 3 * 2  # 3 steps x 2 stages' Ds
    n_edited = 0
    for (tokens, edited, (e, e_bar, e_ed, e_bar_ed)), (cond, wrong) in zip(encoded, wrongs[::2]):
        assert edited.shape == (8, 1, tokens.shape[1]) and e_bar_ed.shape == (8, 1, e_bar.shape[1])
        assert ((edited[:, 0] != tokens).sum(1) >= 1).all()  # toybirds captions always name a colour
        assert torch.equal(cond, e_bar)
        rolled = losses.mismatched(e_bar)
        is_edit = torch.isclose(wrong, e_bar_ed[:, 0]).all(1)  # [8]
        assert (is_edit | torch.isclose(wrong, rolled).all(1)).all()  # each row: its edit, or the roll's caption
        n_edited += int(is_edit.sum())
    assert 0 < n_edited < 24  # a share of the rows, not none or all
    train("attngan", out=tmp_path / "b", steps=1, edited_wrong=0.5, **kw)
    train("attngan", out=tmp_path / "b", steps=3, edited_wrong=0.5, resume="latest", **kw)
    a = load_checkpoint(find_latest_checkpoint(str(tmp_path / "a")))
    b = load_checkpoint(find_latest_checkpoint(str(tmp_path / "b")))
    assert a["step"] == b["step"] == 3
    assert all(torch.equal(a[net][k], b[net][k]) for net in ("G", "Ds") for k in a[net])
    wrongs.clear()
    train("attngan", out=tmp_path / "c", steps=1, **kw)
    assert wrongs[0][1] is None  # off by default: AttnGAN's wrong pairs (losses.mismatched inside the loss)
