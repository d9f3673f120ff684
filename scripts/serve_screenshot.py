"""Screenshot of the `t2i serve` page for the README (docs/serve.png): captions typed, a word pointed at, the
interpolation slider moved. Uses the system chromium (see tests/serve_helpers.py); prints one JSON object.

    python scripts/serve_screenshot.py --model runs/attngan --out docs/serve.png
"""

import argparse
import io
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

from serve_helpers import Chromium, Server, browser_missing  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, metavar="RUN", help="generator run folder")
    ap.add_argument("--out", default=os.path.join(HERE, "..", "docs", "serve.png"), metavar="PNG")
    ap.add_argument("--captions", nargs="+", metavar="CAPTION",
                    default=["a small red bird with blue wings", "a large yellow bird with black wings and a long beak"])
    ap.add_argument("--word", default="red", help="the word of the first caption to point at")
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--width", type=int, default=1180)
    ap.add_argument("--max-bytes", type=int, default=300_000, help="quantise the PNG to a palette above this size")
    args = ap.parse_args()
    if browser_missing():
        sys.exit(f"serve_screenshot: {browser_missing()}")

    from PIL import Image
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with Server("--model", args.model, "--device", "cpu") as server, Chromium(args.width, 900) as d:
        d.get(server.url)
        wait = WebDriverWait(d, 120)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#model-card dl"))
        box = d.find_element(By.ID, "captions")
        box.clear()
        box.send_keys("\n".join(args.captions))
        for field, value in (("n", args.n), ("seed", args.seed)):
            d.find_element(By.ID, field).clear()
            d.find_element(By.ID, field).send_keys(str(value))
        d.find_element(By.ID, "generate").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".result")) == len(args.captions))
        d.find_element(By.ID, "interp-n").clear()
        d.find_element(By.ID, "interp-n").send_keys("1")
        d.find_element(By.ID, "interpolate").click()
        wait.until(lambda d: d.find_element(By.ID, "interp-result").is_displayed())
        slider = d.find_element(By.ID, "interp-slider")
        ActionChains(d).click_and_hold(slider).move_by_offset(slider.size["width"] // 8, 0).release().perform()
        word = [w for w in d.find_elements(By.CSS_SELECTOR, ".result .word.known") if w.text == args.word][:1]
        if word:
            d.execute_script("arguments[0].scrollIntoView({block: 'center'})", word[0])
            ActionChains(d).move_to_element(word[0]).perform()
        time.sleep(0.5)
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(args.width, height + 120)  # the whole page in one shot (headless: no window chrome)
        d.execute_script("window.scrollTo(0, 0)")
        if word:
            ActionChains(d).move_to_element(word[0]).perform()
        time.sleep(0.5)
        png = d.get_screenshot_as_png()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    data = png
    if len(data) > args.max_bytes:  # a 256-colour palette keeps a page of flat colours and small images sharp
        buf = io.BytesIO()
        img.quantize(256, method=Image.Quantize.MEDIANCUT).save(buf, format="PNG", optimize=True)
        data = buf.getvalue()
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "wb") as f:
        f.write(data)
    print(json.dumps({"png": os.path.abspath(args.out), "bytes": len(data), "width": img.size[0],
                      "height": img.size[1], "model": os.path.abspath(args.model), "captions": args.captions}))


if __name__ == "__main__":
    main()
