// t2i serve: the page's behaviour. Talks to the JSON API only (GET /api/model, POST /api/sample,
// POST /api/interpolate); every picture comes from the server as a PNG data URL, so nothing is drawn here.
"use strict";

const $ = (id) => document.getElementById(id);
let CARD = null;   // GET /api/model
let INTERP = null; // the last POST /api/interpolate answer

// el("td", {className: "x"}, child, "text", ...): a DOM element with properties and children.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "dataset") Object.assign(node.dataset, v);
    else if (k in node) node[k] = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

// fetch JSON; a non-2xx answer throws its {"error": ...} message.
async function api(path, body) {
  const opts = body === undefined ? {} :
    {method: "POST", headers: {"content-type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, opts);
  let data = null;
  try { data = await response.json(); } catch (e) { /* not JSON: reported below */ }
  if (!response.ok) throw new Error((data && data.error) || `HTTP ${response.status}`);
  return data;
}

function setStatus(node, text, isError) {
  node.textContent = text;
  node.classList.toggle("error", !!isError);
}

function fmt(x, digits) { return typeof x === "number" ? x.toFixed(digits === undefined ? 3 : digits) : "?"; }

function slug(text) { return text.toLowerCase().replace(/[^a-z0-9]+/g, "_").replace(/^_+|_+$/g, "").slice(0, 40) || "caption"; }

// ---- the model card -----------------------------------------------------------------------------------------
function renderCard(card) {
  const rows = [];
  const add = (term, ...value) => rows.push(el("div", {className: "item"}, el("dt", {}, term), el("dd", {}, ...value)));
  add("model", card.kind, card.pretrained ? el("span", {className: "badge"}, "shipped pretrained") : null,
      card.attention ? " (word attention)" : "");
  const d = card.data || {};
  const dataText = [d.source || "unknown data set", d.train_images ? `${d.train_images} train images` : null,
                    d.image_size ? `${d.image_size} px` : null].filter(Boolean).join(", ");
  add("data set", dataText);
  add("trained", card.steps === null || card.steps === undefined ? "steps unknown" : `${card.steps} steps`,
      card.ema ? " (EMA weights)" : "");
  add("stages", card.sizes.map((s) => `${s}px`).join(" → "));
  for (const f of card.eval || []) {
    add(f.label, fmt(f.value), f.std !== null ? ` ± ${fmt(f.std)}` : "", f.n ? ` (n=${f.n})` : "",
        f.real !== null ? ` · real images ${fmt(f.real)}` : "");
  }
  if (!(card.eval || []).length) add("eval", el("span", {className: "muted"}, "no eval.json in the run folder"));
  const tr = card.training_rprecision;
  if (tr) add("training R-precision", `${fmt(tr.mean)} at step ${tr.step}`);
  add("run", el("code", {title: card.run}, card.run.length > 48 ? "…" + card.run.slice(-47) : card.run),
      ` on ${card.device}`);
  const box = $("model-card");
  box.replaceChildren(el("dl", {}, ...rows));
  for (const note of card.notes || []) box.append(el("p", {className: "muted"}, note));
}

async function loadModel() {
  try {
    CARD = await api("/api/model");
  } catch (e) {
    $("model-card").replaceChildren(el("p", {}, `could not read the model card: ${e.message}`));
    return;
  }
  renderCard(CARD);
  const L = CARD.limits;
  $("n").max = L.max_n; $("seed").max = L.max_seed;
  $("interp-steps").min = L.min_steps; $("interp-steps").max = L.max_steps; $("interp-n").max = L.max_interp_n;
  if (!CARD.captions) {  // e.g. a model trained on --text-embeddings: it cannot embed new captions
    const banner = $("banner");
    banner.textContent = `This model cannot draw typed captions: ${CARD.captions_error}`;
    banner.hidden = false;
    $("generate").disabled = true;
    $("interpolate").disabled = true;
  }
}

// ---- captions -> images ---------------------------------------------------------------------------------------
// Point at (hover, focus or click) a known word: every attention row shows that word's map over its images.
function showWord(article, wordIndex) {
  const res = article._result;
  for (const span of article.querySelectorAll(".word.known")) {
    span.classList.toggle("active", Number(span.dataset.word) === wordIndex);
  }
  for (const row of article.querySelectorAll("tr.attn-row")) {
    const a = res.attention[Number(row.dataset.index)];
    const plain = res.stages.find((s) => s.stage === a.stage);
    row.classList.toggle("showing", wordIndex !== null);
    row.querySelectorAll("img").forEach((img, k) => {
      img.src = wordIndex === null ? plain.images[k] : a.maps[k][wordIndex];
      img.dataset.word = wordIndex === null ? "" : res.words[wordIndex];
    });
    row.querySelector("th .which").textContent = wordIndex === null ? "point at a word" : `“${res.words[wordIndex]}”`;
  }
}

function renderResult(res, seed, n) {
  const article = el("article", {className: "result"});
  article._result = res;
  let pinned = null;
  const caption = el("h3", {className: "caption"});
  let known = 0;
  for (const tok of res.tokens) {
    const span = el("span", {className: `word ${tok.status}`}, tok.word);
    if (tok.status === "known" && res.attention.length) {  // only attention models have maps to point at
      const index = known++;
      span.dataset.word = index;
      span.tabIndex = 0;
      span.title = "point here: its attention map over each image";
      span.addEventListener("mouseenter", () => showWord(article, index));
      span.addEventListener("focus", () => showWord(article, index));
      span.addEventListener("mouseleave", () => showWord(article, pinned));
      span.addEventListener("blur", () => showWord(article, pinned));
      span.addEventListener("click", () => { pinned = pinned === index ? null : index; showWord(article, pinned); });
    } else if (tok.status !== "known") {
      span.title = tok.status === "oov" ? "not in the model's vocabulary: ignored" : "past the model's word limit: ignored";
    }
    caption.append(span, " ");
  }
  const meta = el("p", {className: "meta"}, `seed ${seed} · draws #0–#${n - 1}`);
  if (res.oov.length) meta.append(" · ", el("span", {className: "oov-list"}, `not in the vocabulary (ignored): ${res.oov.join(", ")}`));
  const cut = res.tokens.filter((t) => t.status === "cut").length;
  if (cut) meta.append(` · ${cut} word(s) past the word limit ignored`);
  meta.append(el("a", {className: "download", href: res.grid, download: `t2i-${slug(res.caption)}-seed${seed}.png`}, "download PNG"));

  const table = el("table", {className: "grid"});
  table.append(el("tr", {}, el("th", {}), ...Array.from({length: n}, (_, k) => el("td", {}, `#${k}`))));
  for (const s of res.stages) {
    table.append(el("tr", {className: "stage-row", dataset: {stage: s.stage}},
      el("th", {}, `stage ${s.stage} · ${s.size} px`),
      ...s.images.map((src, k) => el("td", {}, el("img", {className: "gen", src, alt: `${res.caption} — stage ${s.stage}, #${k}, seed ${seed}`,
                                                         dataset: {size: s.size}})))));
  }
  res.attention.forEach((a, i) => {
    const plain = res.stages.find((s) => s.stage === a.stage);
    table.append(el("tr", {className: "attn-row", dataset: {index: i, stage: a.stage}},
      el("th", {}, `attention of stage ${a.stage} over ${a.regions}×${a.regions} regions: `, el("span", {className: "which"}, "point at a word")),
      ...plain.images.map((src, k) => el("td", {}, el("img", {className: "attn", src, alt: `attention of stage ${a.stage}, #${k}`})))));
  });
  article.append(caption, meta, table);
  return article;
}

async function generate(event) {
  event.preventDefault();
  const captions = $("captions").value.split("\n").map((c) => c.trim()).filter((c) => c.length);
  const n = Number($("n").value), seed = Number($("seed").value);
  if (!captions.length) { setStatus($("status"), "type a caption first", true); return; }
  $("generate").disabled = true;
  setStatus($("status"), `drawing ${captions.length} × ${n} images…`);
  const t0 = performance.now();
  try {
    const data = await api("/api/sample", {captions, n, seed, stage: "all"});
    $("results").replaceChildren(...data.results.map((r) => renderResult(r, data.seed, data.n)));
    setStatus($("status"), `${data.results.length} caption(s) × ${data.n} images, seed ${data.seed}, in ${Math.round(performance.now() - t0)} ms`);
  } catch (e) {
    setStatus($("status"), e.message, true);
  } finally {
    $("generate").disabled = !(CARD && CARD.captions);
  }
}

// ---- interpolation ------------------------------------------------------------------------------------------------
function showStep(j) {
  const r = INTERP;
  $("interp-slider").value = j;
  $("interp-t").textContent = `t = ${r.t[j].toFixed(2)}`;
  $("interp-view").replaceChildren(...r.images[j].map((src, k) => el("img", {src, alt: `t=${r.t[j].toFixed(2)}, #${k}`, dataset: {step: j}})));
  $("interp-strip").querySelectorAll("img").forEach((img) => img.classList.toggle("current", Number(img.dataset.step) === j));
}

async function interpolate(event) {
  event.preventDefault();
  const body = {a: $("interp-a").value, b: $("interp-b").value, steps: Number($("interp-steps").value),
                n: Number($("interp-n").value), seed: Number($("seed").value)};
  $("interpolate").disabled = true;
  setStatus($("interp-status"), `drawing ${body.steps} steps…`);
  try {
    INTERP = await api("/api/interpolate", body);
    const slider = $("interp-slider");
    slider.max = INTERP.steps - 1;
    $("interp-label-a").textContent = INTERP.a;
    $("interp-label-b").textContent = INTERP.b;
    $("interp-download").href = INTERP.grid;
    $("interp-strip").replaceChildren(...INTERP.images.map((col, j) => {
      const img = el("img", {src: col[0], alt: `t=${INTERP.t[j].toFixed(2)}`, title: `t = ${INTERP.t[j].toFixed(2)}`, dataset: {step: j}});
      img.addEventListener("click", () => showStep(j));
      return img;
    }));
    $("interp-result").hidden = false;
    showStep(0);
    const oov = [...INTERP.oov.a, ...INTERP.oov.b];
    setStatus($("interp-status"), `seed ${INTERP.seed}, ${INTERP.steps} steps` + (oov.length ? ` · not in the vocabulary (ignored): ${oov.join(", ")}` : ""));
  } catch (e) {
    setStatus($("interp-status"), e.message, true);
  } finally {
    $("interpolate").disabled = !(CARD && CARD.captions);
  }
}

// ---- wiring ---------------------------------------------------------------------------------------------------------
$("sample-form").addEventListener("submit", generate);
$("interp-form").addEventListener("submit", interpolate);
$("interp-slider").addEventListener("input", (e) => { if (INTERP) showStep(Number(e.target.value)); });
$("random-seed").addEventListener("click", () => { $("seed").value = Math.floor(Math.random() * 2 ** 31); });
$("captions").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); $("sample-form").requestSubmit(); }
});
loadModel();
