"""Tests of `t2i serve`: the JSON API (in process), its input checks, determinism under concurrent requests, the CLI's
errors, the shipped-pretrained lookup, the load-test script, and the page in a real headless chromium."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from t2icli.cli import main

HERE = os.path.dirname(os.path.abspath(__file__))
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(module):
    """Import `module`, or skip the test locally / fail it in CI (scripts/test.sh installs it: a missing one there is
    a broken install, not a reason to skip)."""
    try:
        return __import__(module)
    except ImportError:
        msg = f"{module} is not installed (scripts/test.sh installs it)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from t2icli.data.toybirds import prepare_toybirds
    from test_eval import make_tiny_models

    root = tmp_path_factory.mktemp("tiny_serve")
    data = str(root / "tb")
    prepare_toybirds(data, size=32, n_train=20, n_test=5, captions_per_image=2, workers=1)
    gan, _ = make_tiny_models(data, str(root))
    plain, _ = make_tiny_models(data, str(root / "plain"), attention=False)
    return {"data": data, "gan": gan, "plain": plain, "root": root}


@pytest.fixture(scope="module")
def client(tiny):
    need("fastapi")
    need("httpx")
    from fastapi.testclient import TestClient

    from t2icli.serve import build_app

    app, engine = build_app(tiny["gan"], "cpu")
    with TestClient(app) as c:
        c.engine = engine
        yield c


def decode(url):
    """A PNG data URL -> uint8 [H, W, 3] (fails unless it is exactly a PNG)."""
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix), url[:40]
    raw = base64.b64decode(url[len(prefix):], validate=True)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(raw)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


def reference_images(model, caption, n, seed):
    """What t2i sample draws: per stage uint8 [n, s, s, 3]."""
    from t2icli.metrics.generate import to_uint8

    ids, _ = model.encode(caption)
    out = model.generate(torch.tensor([ids] * n), torch.tensor([len(ids)] * n), np.arange(n), seed=seed)
    return [to_uint8(x) for x in out["images"]]


# -- the API, in process ------------------------------------------------------------------------------------------
def test_api_sample_gives_every_stage_oov_attention_and_the_sample_grid(client, tiny, tmp_path):
    model = client.engine.model
    r = client.post("/api/sample", json={"captions": ["a small red zorblax bird", "a blue bird"], "n": 3, "seed": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["seed"], body["n"], len(body["results"])) == (5, 3, 2)
    first = body["results"][0]
    assert first["oov"] == ["zorblax"] and first["words"] == ["a", "small", "red", "bird"]
    assert [t["status"] for t in first["tokens"]] == ["known", "known", "known", "oov", "known"]
    want = reference_images(model, "a small red bird", 3, 5)
    assert [s["size"] for s in first["stages"]] == model.sizes == [16, 32]
    for s, ref in zip(first["stages"], want):
        got = np.stack([decode(u) for u in s["images"]])
        assert got.shape == (3, s["size"], s["size"], 3)
        assert np.array_equal(got, ref)  # image k is t2i sample's image #k for this seed
    [att] = first["attention"]  # the tiny model attends at stage 2 over stage 1's 16 x 16 regions
    assert (att["stage"], att["size"], att["regions"]) == (2, 32, 16)
    assert len(att["maps"]) == 3 and all(len(m) == 4 for m in att["maps"])
    maps = [decode(u) for u in att["maps"][0]]
    assert all(m.shape == (32, 32, 3) for m in maps) and not np.array_equal(maps[0], maps[2])
    # "download PNG" is the very picture `t2i sample --stage all` writes for this caption and seed.
    out = tmp_path / "s.png"
    res = CliRunner().invoke(main, ["sample", "a small red zorblax bird", "--model", tiny["gan"], "--out", str(out),
                                    "--n", 3, "--seed", 5, "--stage", "all", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert np.array_equal(decode(first["grid"]), np.asarray(Image.open(out).convert("RGB")))


def test_api_stage_last_and_no_attention(client):
    r = client.post("/api/sample", json={"captions": ["a red bird"], "n": 1, "stage": "last", "attention": False})
    assert r.status_code == 200, r.text
    res = r.json()["results"][0]
    assert [s["stage"] for s in res["stages"]] == [2] and res["attention"] == []


def test_api_words_past_the_word_limit_are_flagged(client):
    words = " ".join(["red"] * 20) + " zorblax"
    res = client.post("/api/sample", json={"captions": [words], "n": 1}).json()["results"][0]
    statuses = [t["status"] for t in res["tokens"]]
    assert statuses == ["known"] * 18 + ["cut"] * 2 + ["oov"] and len(res["words"]) == 18
    assert len(res["attention"][0]["maps"][0]) == 18


def test_api_model_card_reads_the_optional_run_files(tiny, tmp_path):
    need("fastapi")
    from fastapi.testclient import TestClient

    from t2icli.serve import build_app

    run = tmp_path / "run"
    shutil.copytree(tiny["gan"], run)
    with TestClient(build_app(str(run), "cpu")[0]) as c:  # the bare export: everything optional is absent
        card = c.get("/api/model").json()
    assert card["kind"] == "attngan" and card["sizes"] == [16, 32] and card["attention"] is True
    assert card["eval"] == [] and card["training_rprecision"] is None and card["steps"] is None
    assert card["limits"]["max_n"] == 16 and card["captions"] is True and card["notes"] == []

    (run / "config.json").write_text(json.dumps({"data": str(tmp_path / "gone")}))  # the data folder is gone:
    (run / "run.json").write_text(json.dumps({"dataset": {  # the run's own record of it
        "source": "toybirds", "image_size": 32, "splits": {"train": {"images": 20}}}}))
    stats = [{"step": 100, "gen_rprecision": {"mean": 0.5, "std": 0.1, "n": 40, "n_negatives": 9}},
             {"step": 200, "gen_rprecision": None}, {"step": 300, "gen_rprecision": {"mean": 0.75, "std": 0.05, "n": 40}}]
    (run / "stats.jsonl").write_text("".join(json.dumps(s) + "\n" for s in stats) + '{"step": 4')  # torn last line
    (run / "eval.json").write_text(json.dumps({"metric": "all", "metrics": {
        "rprecision": {"metric": "rprecision", "mean": 0.91, "std": 0.02, "n": 2000, "real": {"mean": 0.95}},
        "attr": {"metric": "attr", "accuracy": 0.66, "n": 2000, "real": {"accuracy": 0.99}},
        "fid": {"metric": "fid", "skipped": "needs --inception-weights"}}}))
    with TestClient(build_app(str(run / "generator.pt"), "cpu")[0]) as c:  # the export file works as --model too
        card = c.get("/api/model").json()
    assert card["run"] == str(run)
    assert card["data"]["source"] == "toybirds" and card["data"]["train_images"] == 20
    assert card["training_rprecision"] == {"step": 300, "mean": 0.75, "std": 0.05, "n": 40}
    assert card["steps"] == 300  # the export records no step: the last snapshot's
    assert [(f["metric"], f["value"], f["real"]) for f in card["eval"]] == [("rprecision", 0.91, 0.95),
                                                                             ("attr", 0.66, 0.99)]
    assert any("stats.jsonl" in n and "1 unreadable" in n for n in card["notes"])

    (run / "eval.json").write_text("{not json")
    with TestClient(build_app(str(run), "cpu")[0]) as c:
        card = c.get("/api/model").json()
    assert card["eval"] == [] and any("eval.json" in n for n in card["notes"])


BAD_SAMPLE = [  # (body, status, words the message must contain)
    ({"captions": []}, 422, ["captions", "at least 1"]),
    ({"captions": ["a bird"] * 9}, 422, ["captions", "at most 8"]),
    ({"captions": ["a " * 200]}, 422, ["captions[0]", "300"]),
    ({"captions": ["a bird", 5]}, 422, ["captions[1]", "string"]),
    ({"captions": ["a bird"], "n": 0}, 422, ["n", "greater than or equal to 1"]),
    ({"captions": ["a bird"], "n": 17}, 422, ["n", "less than or equal to 16"]),
    ({"captions": ["a bird"], "n": "4"}, 422, ["n", "integer"]),
    ({"captions": ["a bird"], "n": True}, 422, ["n", "integer"]),
    ({"captions": ["a bird"], "seed": -1}, 422, ["seed"]),
    ({"captions": ["a bird"], "seed": 2**32}, 422, ["seed"]),
    ({"captions": ["a bird"], "stage": "first"}, 422, ["stage", "'all' or 'last'"]),
    ({"caption": ["a bird"]}, 422, ["captions", "required", "caption: unknown field"]),
    ({"captions": ["a bird", "zorblax quux"]}, 400, ["captions[1]", "vocabulary"]),
    ({"captions": ["   "]}, 400, ["captions[0]", "empty"]),
    ({"captions": ["!!!"]}, 400, ["captions[0]", "no words"]),
]


@pytest.mark.parametrize("body,status,words", BAD_SAMPLE)
def test_api_bad_sample_requests_are_4xx_json_naming_the_field(client, body, status, words):
    r = client.post("/api/sample", json=body)
    assert r.status_code == status, r.text
    msg = r.json()["error"]
    assert "Traceback" not in msg and all(w in msg for w in words), msg


def test_api_other_bad_requests_and_the_server_keeps_serving(client):
    cases = [
        (client.post("/api/sample", content=b"{not json", headers={"content-type": "application/json"}), 422, "JSON"),
        (client.post("/api/sample", content=b"x" * 70000, headers={"content-type": "application/json"}), 413, "body"),
        (client.get("/api/sample"), 405, "GET /api/sample"),
        (client.get("/api/nothing"), 404, "/api/nothing"),
        (client.post("/api/interpolate", json={"a": "a red bird", "b": "a blue bird", "steps": 1}), 422, "steps"),
        (client.post("/api/interpolate", json={"a": "a red bird", "b": "a blue bird", "steps": 17}), 422, "steps"),
        (client.post("/api/interpolate", json={"a": "a red bird"}), 422, "b: Field required"),
        (client.post("/api/interpolate", json={"a": "zorblax", "b": "a blue bird"}), 400, "a: caption 'zorblax'"),
        (client.post("/api/interpolate", json={"a": "a red bird", "b": "a bird", "n": 5}), 422, "n"),
    ]
    for r, status, word in cases:
        assert r.status_code == status and word in r.json()["error"], (status, r.text)
    assert client.post("/api/sample", json={"captions": ["a red bird"], "n": 1}).status_code == 200


def test_api_interpolate_ends_are_the_two_captions(client):
    model = client.engine.model
    r = client.post("/api/interpolate", json={"a": "a small red bird", "b": "a large blue bird", "steps": 4,
                                              "seed": 3, "n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["t"] == [0.0, 1 / 3, 2 / 3, 1.0] and len(body["images"]) == 4 and len(body["images"][0]) == 2
    for col, text in ((0, "a small red bird"), (-1, "a large blue bird")):
        got = np.stack([decode(u) for u in body["images"][col]])
        assert np.abs(got.astype(int) - reference_images(model, text, 2, 3)[-1].astype(int)).max() <= 1
    assert decode(body["grid"]).shape[1] > 4 * 64  # 4 columns of 64 px tiles and the labels


def test_api_model_without_attention_and_model_without_caption_encoder(tiny):
    need("fastapi")
    from fastapi.testclient import TestClient

    from t2icli.serve import build_app

    app, engine = build_app(tiny["plain"], "cpu")
    with TestClient(app) as c:
        assert c.get("/api/model").json()["attention"] is False
        ok = c.post("/api/sample", json={"captions": ["a red bird"], "n": 2})
        assert ok.status_code == 200 and ok.json()["results"][0]["attention"] == []
        r = c.post("/api/sample", json={"captions": ["a red bird"], "attention": True})
        assert r.status_code == 400 and r.json()["error"].startswith("attention: this stackgan2 model")
    # A model trained on --text-embeddings (char-CNN-RNN) has no encoder for typed captions: the card and every
    # generation request say so.
    from t2icli.serve.card import model_card

    engine.model.text_source = "char-cnn-rnn"
    engine.card = model_card(engine.model, tiny["plain"])
    with TestClient(app) as c:
        card = c.get("/api/model").json()
        assert card["captions"] is False and "--text-embeddings" in card["captions_error"]
        for path, body in (("/api/sample", {"captions": ["a red bird"]}), ("/api/interpolate", {"a": "red", "b": "blue"})):
            r = c.post(path, json=body)
            assert r.status_code == 400 and "--text-embeddings" in r.json()["error"], r.text


# -- the CLI ----------------------------------------------------------------------------------------------------------
def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_serve_cli_errors_before_loading(tiny, monkeypatch):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        res = run("serve", "--model", tiny["gan"], "--port", busy.getsockname()[1])
        assert res.exit_code == 1 and f"--port {busy.getsockname()[1]}" in res.output, res.output
    finally:
        busy.close()
    res = run("serve", "--model", tiny["gan"], "--host", "no-such-host.invalid", "--port", 0)
    assert res.exit_code == 1 and "--host no-such-host.invalid" in res.output, res.output
    assert run("serve", "--model", tiny["gan"], "--port", 70000).exit_code == 2
    assert run("serve", "--model", tiny["root"] / "missing").exit_code == 2
    res = run("serve", "--model", tiny["data"], "--port", 0)  # a folder without a generator export
    assert res.exit_code == 1 and "--model" in res.output and "generator" in res.output, res.output
    monkeypatch.setattr("t2icli.pretrained.ROOT", str(tiny["root"] / "no-pretrained"))
    res = run("serve", "--port", 0)
    assert res.exit_code == 2 and "--model RUN" in res.output and "pretrained" in res.output, res.output
    monkeypatch.setitem(sys.modules, "fastapi", None)  # as if the [serve] extra were not installed
    res = run("serve", "--model", tiny["gan"])
    assert res.exit_code == 1 and "pip install fastapi uvicorn" in res.output and ".[serve]" in res.output


def test_serve_warns_when_not_loopback(tiny, monkeypatch):
    need("fastapi")
    import t2icli.serve as serve_mod

    served = []
    monkeypatch.setattr(serve_mod, "run_app", lambda app, sock: served.append(sock.getsockname()))
    lines = []
    serve_mod.serve(tiny["gan"], host="0.0.0.0", port=0, log=lines.append)
    assert served and "not a loopback address" in lines[0] and "http://0.0.0.0:" in lines[1]
    lines.clear()
    serve_mod.serve(tiny["gan"], host="127.0.0.1", port=0, log=lines.append)
    assert len(lines) == 1 and "warning" not in lines[0]


def test_serve_uses_the_shipped_pretrained_model(tiny, tmp_path, monkeypatch):
    need("fastapi")
    from fastapi.testclient import TestClient

    import t2icli.serve as serve_mod

    root = tmp_path / "pretrained"
    shutil.copytree(tiny["gan"], root / "toybirds")
    (root / "toybirds" / "eval.json").write_text(json.dumps({"metric": "attr", "accuracy": 0.9, "n": 100}))
    monkeypatch.setattr("t2icli.pretrained.ROOT", str(root))
    apps = []
    monkeypatch.setattr(serve_mod, "run_app", lambda app, sock: apps.append(app))
    res = run("serve", "--port", 0, "--device", "cpu")
    assert res.exit_code == 0 and "shipped pretrained" in res.stderr, res.output
    with TestClient(apps[0]) as c:
        card = c.get("/api/model").json()
    assert card["pretrained"] is True and card["run"] == str(root / "toybirds")
    assert card["eval"][0]["metric"] == "attr" and card["eval"][0]["value"] == 0.9


# -- a real server: concurrency, the load script, the browser -------------------------------------------------------
@pytest.fixture(scope="module")
def server(tiny):
    need("fastapi")
    need("uvicorn")
    from serve_helpers import Server

    with Server("--model", tiny["gan"], "--device", "cpu") as s:
        yield s


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_concurrent_requests_give_the_sequential_images(server):
    bodies = [{"captions": [c], "n": 3, "seed": s} for c in ("a small red bird", "a blue bird with black wings")
              for s in (0, 1, 7)]
    bodies.append({"captions": ["zorblax"]})  # a bad request in the middle changes nothing
    sequential = [post(server.url + "api/sample", b) for b in bodies]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda b: post(server.url + "api/sample", b), bodies * 2))
    assert [s for s, _ in sequential] == [200] * 6 + [400]
    assert concurrent == sequential * 2
    images = {json.dumps(r["results"][0]["stages"]) for _, r in sequential[:6]}
    assert len(images) == 6  # different captions and seeds give different images


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_load_script_reports_latency_and_memory(tiny):
    need("fastapi")
    res = subprocess.run([sys.executable, os.path.join(HERE, "..", "scripts", "load_serve.py"), "--model", tiny["gan"],
                          "--requests", "12", "--concurrency", "3", "--n", "2", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["requests"] == 12 and out["answered"] == 12 and out["errors"] == 0 and out["mismatches"] == 0
    assert 0 < out["latency_ms"]["p50"] <= out["latency_ms"]["p95"] <= out["latency_ms"]["max"]
    assert out["rss_mb"]["before"] > 0 and out["rss_mb"]["after"] > 0


@pytest.mark.long  # over ~3 s: left out of scripts/test.sh --fast
def test_page_in_headless_chromium(server):
    """Type captions, wait for the images, check they are PNGs of the model's sizes, point at a word and see its
    attention map, drag the interpolation slider."""
    from serve_helpers import Chromium, browser_missing

    missing = browser_missing()
    if missing:
        if IN_CI:
            pytest.fail(f"the browser test cannot run in CI: {missing}")
        pytest.skip(missing)
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Chromium() as d:
        d.get(server.url)
        wait = WebDriverWait(d, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-card dl"))
        assert "attngan" in d.find_element(By.ID, "model-card").text
        box = d.find_element(By.ID, "captions")
        box.clear()
        box.send_keys("a small red zorblax bird\na blue bird")
        d.find_element(By.ID, "n").clear()
        d.find_element(By.ID, "n").send_keys("2")
        d.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) == 2)
        first = d.find_elements(By.CSS_SELECTOR, ".result")[0]
        imgs = first.find_elements(By.CSS_SELECTOR, "img.gen")
        assert len(imgs) == 2 * 2  # 2 stages x 2 draws
        for img in imgs:
            size = int(img.get_attribute("data-size"))
            assert decode(img.get_attribute("src")).shape == (size, size, 3)
            assert d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) == size
        assert [w.text for w in first.find_elements(By.CSS_SELECTOR, ".word.oov")] == ["zorblax"]

        attn = first.find_elements(By.CSS_SELECTOR, "tr.attn-row img")
        plain = [i.get_attribute("src") for i in attn]
        red = [w for w in first.find_elements(By.CSS_SELECTOR, ".word.known") if w.text == "red"][0]
        ActionChains(d).move_to_element(red).perform()
        wait.until(lambda d: attn[0].get_attribute("data-word") == "red")
        shown = [i.get_attribute("src") for i in attn]
        assert all(s != p for s, p in zip(shown, plain))
        assert all(decode(s).shape == (32, 32, 3) for s in shown)
        assert "red" in first.find_element(By.CSS_SELECTOR, "tr.attn-row th").text
        download = first.find_element(By.CSS_SELECTOR, "a.download")
        assert download.get_attribute("download").endswith(".png") and decode(download.get_attribute("href")).size

        d.find_element(By.ID, "interp-steps").clear()
        d.find_element(By.ID, "interp-steps").send_keys("5")
        d.find_element(By.ID, "interpolate").click()
        wait.until(lambda d: d.find_element(By.ID, "interp-result").is_displayed())
        view = lambda: d.find_element(By.CSS_SELECTOR, "#interp-view img").get_attribute("src")  # noqa: E731
        start, t_start = view(), d.find_element(By.ID, "interp-t").text
        assert t_start == "t = 0.00"
        slider = d.find_element(By.ID, "interp-slider")
        ActionChains(d).click_and_hold(slider).move_by_offset(slider.size["width"] // 2, 0).release().perform()
        wait.until(lambda d: d.find_element(By.ID, "interp-t").text != t_start)
        step = int(slider.get_attribute("value"))
        strip = d.find_elements(By.CSS_SELECTOR, "#interp-strip img")
        assert len(strip) == 5 and step > 0 and d.find_element(By.ID, "interp-t").text == f"t = {step / 4:.2f}"
        assert view() != start and view() == strip[step].get_attribute("src") and decode(view()).shape == (32, 32, 3)
        logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, logs
