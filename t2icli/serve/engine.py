"""What `t2i serve` answers, without the web framework: captions -> JSON-able images of every stage, attention maps, interpolations.

Images travel as PNG data URLs (`data:image/png;base64,...`). Generation goes through t2icli.sample, so image k of a
caption is the image `t2i sample --seed SEED` draws as #k: a pure function of (caption, seed, k), whatever else is
being generated. One lock runs one caption's generation at a time: the model is shared, and on a CPU (or one GPU)
concurrent forward passes would only compete for the same cores; the PNG encoding runs outside it.
"""

import base64
import threading

from t2icli.errors import T2IError

__all__ = ["ServeError", "Engine", "LIMITS", "png_data_url"]

# The bounds every request is checked against (the API's pydantic models and the page's inputs read them here).
LIMITS = {
    "max_captions": 8,  # captions per /api/sample request
    "max_caption_chars": 300,  # characters per caption (the longest toybirds caption is ~150)
    "max_n": 16,  # noise draws per caption
    "max_seed": 2**32 - 1,  # seeds are 0 .. 2^32-1 (numpy SeedSequence entropy; exact in a JS number)
    "min_steps": 2,  # interpolation columns
    "max_steps": 16,
    "max_interp_n": 4,  # noise draws (rows) of an interpolation
}


class ServeError(T2IError):
    """A request the model cannot answer (a caption with no known word, attention of a model without it, ...); the
    message starts with the request field at fault. The app answers it with HTTP 400 and {"error": message}."""


def png_data_url(image):
    """A uint8 image [H, W, 3] (or a PIL image) as a `data:image/png;base64,...` string."""
    from t2icli.viz.grid import png_bytes

    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


class Engine:
    """The loaded generator and the answers of the JSON API (dicts ready for JSON).

    model: a t2icli.metrics.generate.GeneratorModel; card: the dict of t2icli.serve.card.model_card.
    """

    def __init__(self, model, card):
        self.model, self.card = model, card
        self._lock = threading.Lock()

    def _check_captions_possible(self):
        from t2icli.metrics.common import MetricError

        try:
            self.model.check_captions()
        except MetricError as exc:  # a model trained on --text-embeddings: no encoder for new captions
            raise ServeError(f"captions: {exc}") from None

    def _encode(self, field, text):
        """(ids, words) of one caption; ServeError naming `field` when the model cannot read any of it."""
        from t2icli.sample import SampleError, encode_captions

        try:
            [(ids, words)] = encode_captions(self.model, [text])
        except SampleError as exc:
            raise ServeError(f"{field}: {exc}") from None
        return ids, words

    def sample(self, captions, n=4, seed=0, stage="all", attention=None):
        """Images of each caption for draws 0..n-1 (noise (seed, k)).

        captions: list of str; stage: "all" (every stage) or "last"; attention: None = the model's per-word maps
        when it has attention, True = required (ServeError for a model without), False = none. Returns
        {"seed", "n", "stage", "results": [per caption {"caption", "tokens": [{"word", "status": known|oov|cut}],
        "oov": [words], "words": [the T known words the model read], "stages": [{"stage": 1-based, "size": s,
        "images": [n data URLs of s x s PNGs]}], "attention": [{"stage": 1-based stage that attended, "size": its
        image side, "regions": side of the region grid it attended over, "maps": [n][T] data URLs: word t's map
        blended over image k of that stage}], "grid": data URL of the picture `t2i sample --stage STAGE` writes}]}.
        Raises ServeError before generating.
        """
        from t2icli.sample import caption_grid, caption_images, caption_words
        from t2icli.viz.attention import blend_attention

        self._check_captions_possible()
        if attention and not self.model.attention:
            raise ServeError(f"attention: this {self.model.kind} model has no word attention (AttnGAN models have)")
        want_attn = self.model.attention if attention is None else bool(attention)
        encoded = [self._encode(f"captions[{i}]", text) for i, text in enumerate(captions)]
        results = []
        for text, (ids, words) in zip(captions, encoded):
            with self._lock:
                res = caption_images(self.model, ids, n, seed=seed, return_attn=want_attn)
            images = res["images"]  # per stage uint8 [n, s, s, 3]
            shown = range(len(images)) if stage == "all" else [len(images) - 1]
            tokens = [{"word": w, "status": s} for w, s in caption_words(self.model, text)]
            attn = []
            for a in res["attn"]:  # maps [n, T, r, r] of stage a["stage"] (0-based)
                i = a["stage"]
                maps = [[png_data_url(blend_attention(images[i][k], a["maps"][k, t])) for t in range(len(words))]
                        for k in range(n)]
                attn.append({"stage": i + 1, "size": int(self.model.sizes[i]), "regions": int(a["regions"]),
                             "maps": maps})
            results.append({
                "caption": text, "tokens": tokens, "oov": [t["word"] for t in tokens if t["status"] == "oov"],
                "words": list(words),
                "stages": [{"stage": i + 1, "size": int(self.model.sizes[i]),
                            "images": [png_data_url(im) for im in images[i]]} for i in shown],
                "attention": attn,
                "grid": png_data_url(caption_grid(self.model, text, images, stage)),
            })
        return {"seed": int(seed), "n": int(n), "stage": stage, "results": results}

    def interpolate(self, a, b, steps=8, seed=0, n=1):
        """Final-stage images along the line from caption a's features to caption b's, at the noise of draws 0..n-1.

        Returns {"a", "b", "seed", "n", "steps", "t": [steps floats in 0..1], "size": S, "images": [steps][n] data
        URLs of S x S PNGs, "oov": {"a": [...], "b": [...]}, "grid": data URL of the picture `t2i sample
        --interpolate` writes}. Raises ServeError before generating.
        """
        from t2icli.sample import caption_words, interpolation_grid, interpolation_images

        self._check_captions_possible()
        self._encode("a", a)
        self._encode("b", b)
        with self._lock:
            ts, images = interpolation_images(self.model, a, b, steps=steps, n=n, seed=seed)  # [steps, n, S, S, 3]
        oov = {k: [w for w, s in caption_words(self.model, text) if s == "oov"] for k, text in (("a", a), ("b", b))}
        return {"a": a, "b": b, "seed": int(seed), "n": int(n), "steps": int(steps), "t": ts,
                "size": int(self.model.sizes[-1]),
                "images": [[png_data_url(im) for im in col] for col in images], "oov": oov,
                "grid": png_data_url(interpolation_grid(self.model, a, b, images, ts))}
