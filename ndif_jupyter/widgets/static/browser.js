// @ts-check
// Front end of the activation-browser anywidget: overview table, layer × token heatmap, logit lens, attention heads and token strip, all drawn from synced traits.

/**
 * The synced traits of ActivationBrowser (ndif_jupyter/widgets/widget.py): `view` and those after it are the user's
 * choices, which the front end sets. A dict is empty, or lens and attention hold only a status, when there is nothing
 * to show.
 * @typedef {object} BrowserTraits
 * @property {string} title
 * @property {Array<{prompt: string, generated: string}>} texts
 * @property {string[]} views
 * @property {Array<{view: string, how: string}>} absent_views
 * @property {OverviewRow[]} overview
 * @property {Array<{label: string, layers: number, steps: number[], rows: number, width: number}>} stacks
 * @property {string[]} reductions
 * @property {string[]} scales
 * @property {{start?: number, count?: number, total?: number}} window
 * @property {string[]} tokens
 * @property {string[]} layer_labels
 * @property {GridTrait} grid
 * @property {{status?: string, rows?: number, cols?: number, top_tokens?: string[], top_probs?: number[]}} lens
 * @property {{layer?: number, token?: number, top?: Array<{token: string, prob: number}>}} lens_cell
 * @property {CellDetail} cell_detail
 * @property {GridTrait & {layer?: number}} strip
 * @property {Array<{label: string, heads: number}>} attention_sources
 * @property {AttentionTrait} attention
 * @property {string} view
 * @property {number} stack
 * @property {number} step
 * @property {number} row
 * @property {string} reduction
 * @property {number} neuron
 * @property {number} reference
 * @property {string} scale
 * @property {boolean} leave_out_first
 * @property {number} token_start
 * @property {number[]} selected
 * @property {number} strip_layer
 * @property {number} attention_source
 * @property {number} head
 * @property {boolean} lens_probabilities
 * @property {number} settled
 */
/**
 * @typedef {{name: string, module: string | null, step: number | null, invoke: number | null, shape: number[],
 *   dtype: string, mean: number | null, std: number | null, min: number | null, max: number | null,
 *   norm: number | null}} OverviewRow
 * @typedef {{rows?: number, cols?: number, values?: Array<number | null>, min?: number, max?: number,
 *   diverging?: boolean, label?: string, scale?: string, data_min?: number | null, data_max?: number | null,
 *   below?: number, above?: number, left_out_first?: boolean}} GridTrait
 * @typedef {{layer?: number, token?: number, value?: number | null, norm?: number | null,
 *   neurons?: Array<{index: number, value: number | null}>, lens?: Array<{token: string, prob: number}>}} CellDetail
 * @typedef {{status?: string, heads?: number, q?: number, k?: number, step?: number, query_tokens?: string[],
 *   key_tokens?: string[], patterns?: Array<Array<number | null>>}} AttentionTrait
 */
/**
 * The part of anywidget's model that this module uses.
 * @typedef {object} BrowserModel
 * @property {<K extends keyof BrowserTraits>(name: K) => BrowserTraits[K] | undefined} get
 * @property {<K extends keyof BrowserTraits>(name: K, value: BrowserTraits[K]) => void} set
 * @property {() => void} save_changes
 * @property {(event: string, callback: () => void) => void} on
 * @property {(event: string, callback: () => void) => void} off
 */
/**
 * What anywidget passes to render.
 * @typedef {{model: BrowserModel, el: HTMLElement}} RenderProps
 */

/** @type {Array<keyof BrowserTraits>} */
const TRAITS = [
  "title", "texts", "views", "absent_views", "view", "overview", "stacks", "stack", "step", "row",
  "reductions", "reduction", "neuron", "reference", "scales", "scale", "leave_out_first", "window", "token_start", "tokens",
  "layer_labels", "grid", "selected", "lens", "lens_cell", "strip", "strip_layer",
  "attention_sources", "attention_source", "attention", "head", "cell_detail", "lens_probabilities",
];

/** @type {Array<keyof BrowserTraits>} */
const USER_CHOICES = [
  "view", "stack", "step", "row", "reduction", "neuron", "reference", "scale", "leave_out_first", "token_start",
  "selected", "strip_layer", "attention_source", "head", "lens_probabilities",
];

const VIEW_LABELS = {
  overview: "Overview",
  heatmap: "Layer × token",
  lens: "Logit lens",
  attention: "Attention",
  strip: "Token strip",
};

const VIEWS_WITH_POSITION_CONTROLS = new Set(["heatmap", "lens", "strip", "attention"]);
const VIEWS_WITH_STACK_SELECT = new Set(["heatmap", "lens", "strip"]);
const VIEWS_WITH_REDUCTION = new Set(["heatmap", "strip"]);

const OVERVIEW_COLUMNS = ["name", "module", "step", "invoke", "shape", "dtype", "mean", "std", "min", "max", "norm"];
const NUMERIC_OVERVIEW_COLUMNS = new Set(["mean", "std", "min", "max", "norm"]);
// Cut with an ellipsis (the whole text in the cell's tooltip) so that the numbers stay in view in a narrow notebook.
const WIDE_OVERVIEW_COLUMNS = new Set(["name", "module"]);

const VIRIDIS = [
  [68, 1, 84], [72, 40, 120], [62, 74, 137], [49, 104, 142], [38, 130, 142],
  [31, 158, 137], [53, 183, 121], [109, 205, 89], [180, 222, 44], [253, 231, 37],
];
const BLUE_WHITE_RED = [
  [33, 102, 172], [103, 169, 207], [209, 229, 240], [247, 247, 247],
  [253, 219, 199], [239, 138, 98], [178, 24, 43],
];
const WHITE_TO_DARK = [[255, 255, 255], [198, 219, 239], [107, 174, 214], [33, 113, 181], [8, 48, 107]];
// On a dark theme attention starts from the page's dark and grows light, so that an empty pattern does not glare.
const DARK_TO_LIGHT = [[24, 24, 24], [8, 48, 107], [33, 113, 181], [107, 174, 214], [222, 235, 247]];
const NULL_COLOR = [150, 150, 150];
const LENS_COLOR = [33, 102, 172];

// Below this maximum an attention head is drawn on [0, max] instead of [0, 1].
const TINY_ATTENTION = 0.1;
const THUMBNAIL_SIZE = 96;
const TEXT_TRUNCATION = 40;

/* ---------- reading traits safely ---------- */

function asList(value) {
  return Array.isArray(value) ? value : [];
}

function asObject(value) {
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function asText(value) {
  return value === null || value === undefined ? "" : String(value);
}

function asInt(value, fallback) {
  const number = Number(value);
  return value !== null && value !== "" && Number.isFinite(number) ? Math.trunc(number) : fallback;
}

function isNumber(value) {
  return typeof value === "number" && Number.isFinite(value);
}

function clamp(value, low, high) {
  return Math.min(high, Math.max(low, value));
}

/** @param {BrowserModel} model */
function readState(model) {
  /**
   * @template {keyof BrowserTraits} K
   * @param {K} name
   */
  const read = (name) => model.get(name);
  return {
    title: asText(read("title")),
    texts: asList(read("texts")).map(asObject),
    views: asList(read("views")).filter((name) => name in VIEW_LABELS),
    absentViews: asList(read("absent_views")).map(asObject).filter((absent) => absent.view in VIEW_LABELS),
    view: asText(read("view")),
    overview: asList(read("overview")).map(asObject),
    stacks: asList(read("stacks")).map(asObject),
    stack: asInt(read("stack"), 0),
    step: read("step"),
    row: asInt(read("row"), 0),
    reductions: asList(read("reductions")).map(asText),
    reduction: asText(read("reduction")),
    neuron: asInt(read("neuron"), 0),
    reference: asInt(read("reference"), 0),
    scales: asList(read("scales")).map(asText),
    scale: asText(read("scale")),
    leaveOutFirst: Boolean(read("leave_out_first")),
    window: readWindow(read("window")),
    tokens: asList(read("tokens")).map(asText),
    layerLabels: asList(read("layer_labels")).map(asText),
    grid: asObject(read("grid")),
    selected: asList(read("selected")),
    lens: asObject(read("lens")),
    lensCell: asObject(read("lens_cell")),
    strip: asObject(read("strip")),
    stripLayer: asInt(read("strip_layer"), 0),
    attentionSources: asList(read("attention_sources")).map(asObject),
    attentionSource: asInt(read("attention_source"), 0),
    attention: asObject(read("attention")),
    head: asInt(read("head"), null),
    cellDetail: asObject(read("cell_detail")),
    lensProbabilities: Boolean(read("lens_probabilities")),
  };
}

function readWindow(value) {
  const shown = asObject(value);
  return {
    start: Math.max(0, asInt(shown.start, 0)),
    count: Math.max(0, asInt(shown.count, 0)),
    total: Math.max(0, asInt(shown.total, 0)),
  };
}

function currentView(state) {
  const known = state.view in VIEW_LABELS;
  if (known && (state.views.length === 0 || state.views.includes(state.view))) return state.view;
  return state.views[0] || "overview";
}

function selectedStack(state) {
  return state.stacks[state.stack] || state.stacks[0] || null;
}

function layerLabel(state, layer) {
  return state.layerLabels[layer] || `layer ${layer}`;
}

// "model.layers.0", "model.layers.1", … → prefix "model.layers." and names "0", "1", …
function sharedLabelPrefix(labels) {
  if (labels.length < 2) return "";
  let prefix = labels.reduce((common, label) => {
    let length = 0;
    while (length < common.length && common[length] === label[length]) length += 1;
    return common.slice(0, length);
  });
  while (prefix && /[A-Za-z0-9_]/.test(prefix[prefix.length - 1])) prefix = prefix.slice(0, -1);
  return labels.every((label) => label.length > prefix.length) ? prefix : "";
}

function shortLayerName(state, layer) {
  const label = layerLabel(state, layer);
  const prefix = sharedLabelPrefix(state.layerLabels);
  return truncateStart(prefix && label.startsWith(prefix) ? label.slice(prefix.length) : label, 16);
}

function layerAxisCaption(state) {
  const prefix = sharedLabelPrefix(state.layerLabels);
  return `rows: ${prefix ? `${prefix}N` : "layers"}, first layer at the bottom · columns: tokens`;
}

function selectedCell(state) {
  const [layer, token] = state.selected;
  return isNumber(layer) && isNumber(token) ? { layer, token } : null;
}

/* ---------- writing traits ---------- */

/**
 * @template {keyof BrowserTraits} K
 * @param {BrowserModel} model
 * @param {K} name
 * @param {BrowserTraits[K]} value
 */
function setTrait(model, name, value) {
  model.set(name, value);
  model.save_changes();
}

/* ---------- formatting ---------- */

function formatNumber(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value !== "number" && !Number.isFinite(Number(value))) return String(value);
  const number = Number(value);
  if (!Number.isFinite(number)) return String(number);
  if (number === 0) return "0";
  const magnitude = Math.abs(number);
  if (magnitude >= 1e5 || magnitude < 1e-3) return number.toExponential(3);
  return String(Number(number.toPrecision(4)));
}

function formatProbability(value) {
  return isNumber(value) ? value.toFixed(3) : "—";
}

function formatShape(shape) {
  const dims = asList(shape);
  return dims.length ? dims.join(" × ") : "—";
}

// Axis labels: make a leading space (a quiet dot), newlines, tabs and empty tokens visible; a token of spaces only
// shows each as ␣.
function tokenLabel(token) {
  const text = asText(token);
  if (text === "") return "∅";
  if (/^ +$/.test(text)) return "␣".repeat(text.length);
  return text.replace(/^ /, "·").replace(/\r?\n/g, "⏎").replace(/\t/g, "⇥");
}

function stripTokenText(token) {
  const text = asText(token);
  return text === "" ? "∅" : text.replace(/\r?\n/g, "⏎\n");
}

function singleLine(text) {
  return asText(text).replace(/\r?\n/g, "⏎");
}

function truncate(text, limit) {
  const line = singleLine(text);
  return line.length > limit ? `${line.slice(0, limit - 1)}…` : line;
}

// Layer names such as "model.layers.12" keep their distinguishing tail.
function truncateStart(text, limit) {
  return text.length > limit ? `…${text.slice(text.length - limit + 1)}` : text;
}

/* ---------- colours ---------- */

function interpolateStops(stops, fraction) {
  const position = clamp(fraction, 0, 1) * (stops.length - 1);
  const index = Math.min(stops.length - 2, Math.floor(position));
  const local = position - index;
  const [from, to] = [stops[index], stops[index + 1]];
  return from.map((channel, i) => Math.round(channel + (to[i] - channel) * local));
}

function valueRange(values) {
  const finite = values.filter(isNumber);
  if (finite.length === 0) return { min: 0, max: 0 };
  return { min: Math.min(...finite), max: Math.max(...finite) };
}

/**
 * The colour scale of a grid or strip trait: its ends (computed in the kernel, robust to a few extreme values),
 * linear or log, and how many values lie beyond each end.
 * @param {GridTrait} trait
 * @param {Array<number | null>} values
 */
function makeScale(trait, values) {
  const fallback = isNumber(trait.min) && isNumber(trait.max) ? { min: Number(trait.min), max: Number(trait.max) } : valueRange(values);
  const outside = {
    below: Math.max(0, asInt(trait.below, 0)),
    above: Math.max(0, asInt(trait.above, 0)),
    dataMin: isNumber(trait.data_min) ? trait.data_min : null,
    dataMax: isNumber(trait.data_max) ? trait.data_max : null,
    leftOutFirst: Boolean(trait.left_out_first),
  };
  if (trait.diverging) {
    const extent = Math.max(Math.abs(fallback.min), Math.abs(fallback.max)) || 1;
    return { low: -extent, high: extent, stops: BLUE_WHITE_RED, diverging: true, log: false, ...outside };
  }
  const log = trait.scale === "log" && fallback.min > 0;
  return { low: fallback.min, high: fallback.max, stops: VIRIDIS, diverging: false, log, ...outside };
}

function scaleFraction(scale, value) {
  if (scale.log) {
    if (value <= 0) return 0;
    const span = Math.log10(scale.high) - Math.log10(scale.low);
    return span > 0 ? (Math.log10(value) - Math.log10(scale.low)) / span : 0.5;
  }
  const span = scale.high - scale.low;
  return span > 0 ? (value - scale.low) / span : 0.5;
}

function scaleColor(scale, value) {
  if (!isNumber(value)) return NULL_COLOR;
  return interpolateStops(scale.stops, scaleFraction(scale, value));
}

/** "above" or "below" for a value past an end of the scale (drawn in that end's colour and marked), else null. */
function outsideScale(scale, value) {
  if (!isNumber(value)) return null;
  if (value > scale.high) return "above";
  if (value < scale.low) return "below";
  return null;
}

const OUTSIDE_WORDS = { above: "above the colour scale", below: "below the colour scale" };

function valueText(scale, value) {
  const outside = outsideScale(scale, value);
  return outside ? `${formatNumber(value)} (${OUTSIDE_WORDS[outside]})` : formatNumber(value);
}

/** @param {number[]} color */
function cssColor([red, green, blue], alpha = 1) {
  return alpha === 1 ? `rgb(${red}, ${green}, ${blue})` : `rgba(${red}, ${green}, ${blue}, ${alpha})`;
}

/** @param {number[]} color */
function readableTextOn([red, green, blue]) {
  const luminance = (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255;
  return luminance > 0.55 ? "#111" : "#fff";
}

// JupyterLab marks its theme on the body; elsewhere (a light page) this is false.
function darkTheme() {
  return document.body?.dataset?.jpThemeLight === "false";
}

/* ---------- DOM helpers ---------- */

function element(tag, options = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(options)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  appendAll(node, children);
  return node;
}

function appendAll(node, children) {
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
}

function note(text, className = "ndif-empty") {
  return element("div", { class: className, text });
}

function statusNote(status) {
  const computing = status === "computing";
  return element("div", {
    class: computing ? "ndif-status ndif-computing" : "ndif-status",
    "data-status": status,
    text: computing ? "Computing…" : status,
  });
}

function scrollBox(key, children) {
  return element("div", { class: "ndif-scroll", "data-keep-scroll": key }, children);
}

function prepareCanvas(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.max(1, Math.round(width * ratio));
  canvas.height = Math.max(1, Math.round(height * ratio));
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  return context;
}

/* ---------- focus and scroll survive re-rendering ---------- */

function rememberUiState(root) {
  const active = root.getRootNode().activeElement;
  const focused = active && root.contains(active) ? active.getAttribute("data-keep") : null;
  const scrolls = new Map();
  for (const node of root.querySelectorAll("[data-keep-scroll]")) {
    scrolls.set(node.getAttribute("data-keep-scroll"), [node.scrollLeft, node.scrollTop]);
  }
  return { focused, scrolls };
}

function restoreUiState(root, remembered) {
  for (const node of root.querySelectorAll("[data-keep-scroll]")) {
    const position = remembered.scrolls.get(node.getAttribute("data-keep-scroll"));
    if (position) [node.scrollLeft, node.scrollTop] = position;
  }
  if (!remembered.focused) return;
  const target = root.querySelector(`[data-keep="${CSS.escape(remembered.focused)}"]`);
  if (target) target.focus({ preventScroll: true });
}

/* ---------- header and tabs ---------- */

function renderHeader(state) {
  if (!state.title && state.texts.length === 0) return null;
  return element("div", { class: "ndif-header" }, [
    state.title ? element("div", { class: "ndif-title", text: state.title }) : null,
    state.texts.length ? element("div", { class: "ndif-texts" }, state.texts.map(renderText)) : null,
  ]);
}

function renderText(text) {
  return element("div", { class: "ndif-text" }, [
    element("span", { class: "ndif-prompt", text: singleLine(text.prompt) }),
    element("span", { class: "ndif-generated", text: singleLine(text.generated) }),
  ]);
}

function renderTabs(state, view, model) {
  if (state.views.length === 0) return null;
  return element("div", { class: "ndif-tabs", role: "tablist" }, state.views.map((name) => element("button", {
    class: "ndif-tab",
    type: "button",
    role: "tab",
    "data-view": name,
    "data-keep": `tab-${name}`,
    "aria-selected": String(name === view),
    text: VIEW_LABELS[name],
    onclick: () => setTrait(model, "view", name),
  })));
}

// The views these values lack, each with what would give it; the heatmap's hint stands for the token strip too.
function renderAbsentViews(state) {
  if (state.absentViews.length === 0) return null;
  const lines = state.absentViews.map((absent) => {
    const name = absent.view === "heatmap" ? `${VIEW_LABELS.heatmap} and ${VIEW_LABELS.strip}` : VIEW_LABELS[absent.view];
    return element("div", { class: "ndif-absent-view", "data-view": absent.view }, [
      element("span", { class: "ndif-absent-name", text: `${name}: ` }),
      element("span", { text: asText(absent.how) }),
    ]);
  });
  return element("details", { class: "ndif-absent", open: state.views.length <= 1 ? "" : null }, [
    element("summary", { text: `Other views (${lines.length}) and how to get them` }),
    ...lines,
  ]);
}

/* ---------- controls ---------- */

function renderControls(state, view, model) {
  if (!VIEWS_WITH_POSITION_CONTROLS.has(view)) return null;
  const stack = selectedStack(state);
  const controls = [
    VIEWS_WITH_STACK_SELECT.has(view) ? stackSelect(state, model) : null,
    view === "attention" ? attentionSourceSelect(state, model) : null,
    stepSlider(state, stack, model),
    rowSelect(state, stack, model),
    windowSlider(state, model),
    view === "strip" ? stripLayerSelect(state, model) : null,
    ...(VIEWS_WITH_REDUCTION.has(view) ? reductionControls(state, stack, model) : []),
    ...(VIEWS_WITH_REDUCTION.has(view) ? colourControls(state, view, model) : []),
  ].filter(Boolean);
  return controls.length ? element("div", { class: "ndif-controls" }, controls) : null;
}

function labelledControl(labelText, control, after = null) {
  return element("label", { class: "ndif-control" }, [
    labelText ? element("span", { class: "ndif-control-label", text: labelText }) : null,
    control,
    after,
  ]);
}

// JupyterLab's notebook shortcuts (arrow keys select cells, Enter edits one) would take the keys of the controls;
// this attribute keeps them for the control under the focus.
const OWN_KEYS = { "data-lm-suppress-shortcuts": "true" };

function selectInput({ className, options, value, onChoose }) {
  const select = element("select", { class: className, "data-keep": className, ...OWN_KEYS }, options.map((option) => element("option", {
    value: String(option.value),
    text: option.label,
  })));
  select.value = String(value);
  select.addEventListener("change", () => onChoose(select.value));
  return select;
}

// Commits on "change" (release or key press) so that a drag is not cut short by the re-render it causes.
function rangeInput({ className, min, max, value, onMove, onCommit }) {
  const input = element("input", { type: "range", class: className, "data-keep": className, min, max, step: 1, ...OWN_KEYS });
  input.value = String(value);
  input.addEventListener("input", () => onMove(Number(input.value)));
  input.addEventListener("change", () => onCommit(Number(input.value)));
  return input;
}

// Commits on "change" (Tab, a click elsewhere, the spin buttons) and on Enter.
function numberInput({ className, min, max, value, onCommit }) {
  const input = element("input", { type: "number", class: className, "data-keep": className, min, max, step: 1, ...OWN_KEYS });
  input.value = String(value);
  const commit = () => {
    const number = Math.trunc(Number(input.value));
    if (input.value === "" || !Number.isFinite(number)) {
      input.value = String(value);
      return;
    }
    onCommit(clamp(number, min, max ?? Number.MAX_SAFE_INTEGER));
  };
  input.addEventListener("change", commit);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      commit();
    }
  });
  return input;
}

function stackSelect(state, model) {
  if (state.stacks.length <= 1) return null;
  const options = state.stacks.map((stack, index) => ({ value: index, label: asText(stack.label) || `stack ${index}` }));
  return labelledControl("states", selectInput({
    className: "ndif-stack",
    options,
    value: state.stack,
    onChoose: (value) => setTrait(model, "stack", Number(value)),
  }));
}

function attentionSourceSelect(state, model) {
  const sources = state.attentionSources;
  if (sources.length <= 1) return null;
  const options = sources.map((source, index) => ({
    value: index,
    label: `${asText(source.label) || `source ${index}`} (${asInt(source.heads, 0)} heads)`,
  }));
  return labelledControl("attention", selectInput({
    className: "ndif-attention-source",
    options,
    value: state.attentionSource,
    onChoose: (value) => setTrait(model, "attention_source", Number(value)),
  }));
}

// Step -1 is every step joined along the tokens (the prompt's pass, then each generated token).
function stepLabel(step) {
  return step === -1 ? "all steps" : `step ${step}`;
}

function stepSlider(state, stack, model) {
  const steps = stack ? asList(stack.steps) : [];
  if (steps.length <= 1) return null;
  const position = Math.max(0, steps.indexOf(state.step));
  const label = element("span", { class: "ndif-step-label", text: stepLabel(steps[position]) });
  const slider = rangeInput({
    className: "ndif-step",
    min: 0,
    max: steps.length - 1,
    value: position,
    onMove: (moved) => { label.textContent = stepLabel(steps[moved]); },
    onCommit: (moved) => setTrait(model, "step", steps[moved]),
  });
  return labelledControl(null, slider, label);
}

function rowSelect(state, stack, model) {
  const rows = stack ? asInt(stack.rows, 0) : 0;
  if (rows <= 1) return null;
  const options = Array.from({ length: rows }, (_, index) => ({
    value: index,
    label: state.texts[index] ? truncate(state.texts[index].prompt, TEXT_TRUNCATION) : `row ${index}`,
  }));
  return labelledControl("prompt", selectInput({
    className: "ndif-row",
    options,
    value: state.row,
    onChoose: (value) => setTrait(model, "row", Number(value)),
  }));
}

function windowLabelText(start, count, total) {
  return `tokens ${start}–${Math.max(start, start + count - 1)} of ${total}`;
}

function windowSlider(state, model) {
  const { start, count, total } = state.window;
  if (total <= count) return null;
  const label = element("span", { class: "ndif-window-label", text: windowLabelText(start, count, total) });
  const slider = rangeInput({
    className: "ndif-window",
    min: 0,
    max: total - count,
    value: start,
    onMove: (moved) => { label.textContent = windowLabelText(moved, count, total); },
    onCommit: (moved) => setTrait(model, "token_start", moved),
  });
  return labelledControl(null, slider, label);
}

function stripLayerSelect(state, model) {
  if (state.layerLabels.length === 0) return null;
  const options = state.layerLabels.map((label, index) => ({
    value: index,
    label: label === String(index) ? label : `${index}: ${label}`,
  }));
  return labelledControl("layer", selectInput({
    className: "ndif-strip-layer",
    options,
    value: state.stripLayer,
    onChoose: (value) => setTrait(model, "strip_layer", Number(value)),
  }));
}

function reductionControls(state, stack, model) {
  if (state.reductions.length === 0) return [];
  const select = labelledControl("reduce by", selectInput({
    className: "ndif-reduction",
    options: state.reductions.map((name) => ({ value: name, label: name })),
    value: state.reduction,
    onChoose: (value) => setTrait(model, "reduction", value),
  }));
  return [select, reductionArgument(state, stack, model)];
}

function reductionArgument(state, stack, model) {
  if (state.reduction === "neuron") {
    const width = stack ? asInt(stack.width, 0) : 0;
    return indexInput("neuron", "ndif-neuron", width, state.neuron, (value) => setTrait(model, "neuron", value));
  }
  if (state.reduction === "cosine") {
    return indexInput("cosine to token", "ndif-reference", state.window.total, state.reference,
      (value) => setTrait(model, "reference", value));
  }
  return null;
}

// Linear or log colours (log only for a reduction that is not diverging: it has no zero), and the range with or
// without token 0.
function colourControls(state, view, model) {
  const trait = view === "strip" ? state.strip : state.grid;
  const diverging = Boolean(trait.diverging);
  const scale = selectInput({
    className: "ndif-scale",
    options: state.scales.map((name) => ({ value: name, label: name })),
    value: diverging ? "linear" : state.scale,
    onChoose: (value) => setTrait(model, "scale", value),
  });
  if (diverging) {
    scale.disabled = true;
    scale.title = "a log scale needs values of one sign: choose the norm";
  }
  const leaveOut = element("input", { type: "checkbox", class: "ndif-leave-out-first", "data-keep": "ndif-leave-out-first", ...OWN_KEYS });
  leaveOut.checked = state.leaveOutFirst;
  leaveOut.disabled = state.window.start > 0;
  leaveOut.addEventListener("change", () => setTrait(model, "leave_out_first", leaveOut.checked));
  return [
    state.scales.length > 1 ? labelledControl("scale", scale) : null,
    element("label", { class: "ndif-control", title: "compute the colour range without the first token; it is still drawn, marked if beyond" }, [
      leaveOut,
      element("span", { class: "ndif-control-label", text: "range without token 0" }),
    ]),
  ];
}

// A number input for an index below `count` (a neuron of the width, a token of the step).
function indexInput(label, className, count, value, onCommit) {
  return labelledControl(label, numberInput({ className, min: 0, max: count > 0 ? count - 1 : null, value, onCommit }));
}

/* ---------- colour legend ---------- */

const LEGEND_WIDTH = 160;
const LEGEND_HEIGHT = 10;
const LEGEND_POINT = 8;

// The bar ends in a point on a side where values lie beyond the scale, as matplotlib's extended colour bars do.
function paintColorBar(bar, scale) {
  const left = scale.below ? LEGEND_POINT : 0;
  const right = scale.above ? LEGEND_POINT : 0;
  const context = prepareCanvas(bar, left + LEGEND_WIDTH + right, LEGEND_HEIGHT);
  for (let x = 0; x < LEGEND_WIDTH; x += 1) {
    context.fillStyle = cssColor(interpolateStops(scale.stops, x / (LEGEND_WIDTH - 1)));
    context.fillRect(left + x, 0, 1, LEGEND_HEIGHT);
  }
  const point = (baseX, tipX, color) => {
    context.fillStyle = cssColor(color);
    context.beginPath();
    context.moveTo(baseX, 0);
    context.lineTo(tipX, LEGEND_HEIGHT / 2);
    context.lineTo(baseX, LEGEND_HEIGHT);
    context.closePath();
    context.fill();
  };
  if (left) point(left, 0, scale.stops[0]);
  if (right) point(left + LEGEND_WIDTH, left + LEGEND_WIDTH + right, scale.stops[scale.stops.length - 1]);
}

function countText(count) {
  return count === 1 ? "1 value" : `${count} values`;
}

// What lies beyond the scale's ends, and what its range leaves out, in words.
function outsideText(scale) {
  const parts = [];
  if (scale.above) {
    const reach = scale.dataMax === null ? "" : `, up to ${formatNumber(scale.dataMax)}`;
    parts.push(`◥ ${countText(scale.above)} above ${formatNumber(scale.high)}${reach}`);
  }
  if (scale.below) {
    const reach = scale.dataMin === null ? "" : `, down to ${formatNumber(scale.dataMin)}`;
    parts.push(`◣ ${countText(scale.below)} below ${formatNumber(scale.low)}${reach}`);
  }
  if (scale.leftOutFirst) parts.push("range without token 0");
  return parts.join(" · ");
}

function renderColorLegend(scale, label) {
  const bar = element("canvas", { class: "ndif-colorbar" });
  paintColorBar(bar, scale);
  const outside = outsideText(scale);
  return element("div", {
    class: "ndif-legend",
    "data-above": scale.above || 0,
    "data-below": scale.below || 0,
    "data-scale": scale.log ? "log" : "linear",
  }, [
    element("span", { class: "ndif-legend-min", text: formatNumber(scale.low) }),
    bar,
    element("span", { class: "ndif-legend-max", text: formatNumber(scale.high) }),
    label ? element("span", { class: "ndif-legend-label", text: scale.log ? `${label} (log scale)` : label }) : null,
    outside ? element("span", { class: "ndif-legend-outside", text: outside }) : null,
  ]);
}

/* ---------- matrix chart: canvas of cells with DOM axis labels ---------- */

function labelStride(cellSize, fontSize) {
  return Math.max(1, Math.ceil((fontSize + 1) / cellSize));
}

function rowLabelFontSize(cellHeight) {
  return clamp(cellHeight - 1, 9, 12);
}

// Monospace labels: the widest one fixes the axis width.
function rowAxisWidth(labels, cellHeight) {
  const longest = Math.max(1, ...labels.map((label) => label.text.length));
  return clamp(Math.ceil(longest * rowLabelFontSize(cellHeight) * 0.62) + 12, 24, 160);
}

function renderRowLabels(labels, cellHeight) {
  const fontSize = rowLabelFontSize(cellHeight);
  const stride = labelStride(cellHeight, fontSize);
  const box = element("div", { class: "ndif-ylabels", style: { height: `${labels.length * cellHeight}px` } });
  labels.forEach((label, displayRow) => {
    if (label.index % stride !== 0) return;
    box.append(element("div", {
      class: "ndif-ylabel",
      title: label.title,
      text: label.text,
      style: {
        top: `${displayRow * cellHeight + cellHeight / 2 - fontSize / 2 - 1}px`,
        fontSize: `${fontSize}px`,
        lineHeight: `${fontSize + 2}px`,
      },
    }));
  });
  return box;
}

// Labels lie flat when the longest fits in a cell, and run upwards otherwise.
function renderColumnLabels(labels, cellWidth) {
  const longest = Math.max(1, ...labels.map((label) => label.text.length));
  if (Math.ceil(longest * 12 * 0.62) + 4 <= cellWidth) return renderFlatColumnLabels(labels, cellWidth, 12);
  const fontSize = clamp(cellWidth - 2, 9, 12);
  const stride = labelStride(cellWidth, fontSize);
  const thickness = fontSize + 3;
  const height = clamp(Math.ceil(longest * fontSize * 0.62) + 6, 16, 72);
  const box = element("div", { class: "ndif-xlabels", style: { width: `${labels.length * cellWidth}px`, height: `${height}px` } });
  labels.forEach((label, column) => {
    if (column % stride !== 0) return;
    box.append(element("div", {
      class: "ndif-xlabel",
      title: label.title,
      text: label.text,
      style: {
        left: `${column * cellWidth + cellWidth / 2 - thickness / 2}px`,
        width: `${thickness}px`,
        lineHeight: `${thickness}px`,
        fontSize: `${fontSize}px`,
      },
    }));
  });
  return box;
}

function renderFlatColumnLabels(labels, cellWidth, fontSize) {
  const box = element("div", {
    class: "ndif-xlabels ndif-xlabels-flat",
    style: { width: `${labels.length * cellWidth}px`, height: `${fontSize + 6}px` },
  });
  labels.forEach((label, column) => {
    box.append(element("div", {
      class: "ndif-xlabel",
      title: label.title,
      text: label.text,
      style: { left: `${column * cellWidth}px`, width: `${cellWidth}px`, fontSize: `${fontSize}px` },
    }));
  });
  return box;
}

function cellAtEvent(canvas, event, spec) {
  const bounds = canvas.getBoundingClientRect();
  const x = (event.clientX - bounds.left) * (spec.cols * spec.cellWidth / bounds.width);
  const y = (event.clientY - bounds.top) * (spec.rows * spec.cellHeight / bounds.height);
  const column = Math.floor(x / spec.cellWidth);
  const displayRow = Math.floor(y / spec.cellHeight);
  if (column < 0 || column >= spec.cols || displayRow < 0 || displayRow >= spec.rows) return null;
  return { displayRow, column };
}

function outlineCell(context, spec, cell, lineWidth) {
  const x = cell.column * spec.cellWidth;
  const y = cell.displayRow * spec.cellHeight;
  context.lineWidth = lineWidth + 2;
  context.strokeStyle = "#000";
  context.strokeRect(x + lineWidth / 2, y + lineWidth / 2, spec.cellWidth - lineWidth, spec.cellHeight - lineWidth);
  context.lineWidth = lineWidth;
  context.strokeStyle = "#fff";
  context.strokeRect(x + lineWidth / 2, y + lineWidth / 2, spec.cellWidth - lineWidth, spec.cellHeight - lineWidth);
}

// A cell beyond the colour scale gets a corner: top right above it, bottom left below it.
function markOutside(context, x, y, width, height, outside) {
  const size = Math.max(3, Math.floor(Math.min(width, height) * 0.5));
  context.beginPath();
  if (outside === "above") {
    context.moveTo(x + width, y);
    context.lineTo(x + width, y + size);
    context.lineTo(x + width - size, y);
  } else {
    context.moveTo(x, y + height);
    context.lineTo(x, y + height - size);
    context.lineTo(x + size, y + height);
  }
  context.closePath();
  context.fillStyle = "#fff";
  context.fill();
  context.lineWidth = 1;
  context.strokeStyle = "#000";
  context.stroke();
}

function paintMatrix(context, spec, hovered) {
  context.clearRect(0, 0, spec.cols * spec.cellWidth, spec.rows * spec.cellHeight);
  for (let displayRow = 0; displayRow < spec.rows; displayRow += 1) {
    for (let column = 0; column < spec.cols; column += 1) {
      const [x, y] = [column * spec.cellWidth, displayRow * spec.cellHeight];
      context.fillStyle = cssColor(spec.colorAt(displayRow, column));
      context.fillRect(x, y, spec.cellWidth, spec.cellHeight);
      const outside = spec.outsideAt ? spec.outsideAt(displayRow, column) : null;
      if (outside) markOutside(context, x, y, spec.cellWidth, spec.cellHeight, outside);
    }
  }
  if (hovered && spec.crosshair) shadeRowAndColumn(context, spec, hovered);
  if (hovered) outlineCell(context, spec, hovered, 1);
  if (spec.marked) outlineCell(context, spec, spec.marked, 2);
}

// The hovered query's row and key's column, lightly shaded, as attention viewers such as CircuitsVis do.
function shadeRowAndColumn(context, spec, cell) {
  context.fillStyle = darkTheme() ? "rgba(255, 255, 255, 0.18)" : "rgba(255, 170, 0, 0.22)";
  context.fillRect(0, cell.displayRow * spec.cellHeight, spec.cols * spec.cellWidth, spec.cellHeight);
  context.fillRect(cell.column * spec.cellWidth, 0, spec.cellWidth, spec.rows * spec.cellHeight);
}

function sameCell(a, b) {
  return a === b || (a && b && a.displayRow === b.displayRow && a.column === b.column);
}

function wireMatrixEvents(canvas, context, spec) {
  let hovered = null;
  canvas.addEventListener("mousemove", (event) => {
    const cell = cellAtEvent(canvas, event, spec);
    if (sameCell(cell, hovered)) return;
    hovered = cell;
    paintMatrix(context, spec, hovered);
    spec.onHover(hovered);
  });
  canvas.addEventListener("mouseleave", () => {
    hovered = null;
    paintMatrix(context, spec, null);
    spec.onHover(null);
  });
  canvas.addEventListener("click", (event) => {
    const cell = cellAtEvent(canvas, event, spec);
    if (cell && spec.onClick) spec.onClick(cell);
  });
}

// spec: rows, cols, cellWidth, cellHeight, colorAt(displayRow, column), outsideAt(displayRow, column) or none,
// rowLabels, columnLabels,
// marked cell or null, onHover(cell|null), onClick(cell), canvasClass, attributes, scrollKey.
function renderMatrixChart(spec) {
  const canvas = element("canvas", { class: spec.canvasClass, ...spec.attributes });
  const context = prepareCanvas(canvas, spec.cols * spec.cellWidth, spec.rows * spec.cellHeight);
  paintMatrix(context, spec, null);
  wireMatrixEvents(canvas, context, spec);
  const axisWidth = rowAxisWidth(spec.rowLabels, spec.cellHeight);
  const chart = element("div", { class: "ndif-chart", style: { gridTemplateColumns: `${axisWidth}px max-content` } }, [
    renderRowLabels(spec.rowLabels, spec.cellHeight),
    canvas,
    element("div", { class: "ndif-corner" }),
    renderColumnLabels(spec.columnLabels, spec.cellWidth),
  ]);
  return scrollBox(spec.scrollKey, [chart]);
}

function tokenColumnLabels(state, cols) {
  return Array.from({ length: cols }, (_, column) => {
    const index = state.window.start + column;
    const token = state.tokens[column];
    return { text: token === undefined ? String(index) : tokenLabel(token), title: `token ${index}: ${JSON.stringify(asText(token))}` };
  });
}

/* ---------- overview view ---------- */

function overviewCell(entry, column) {
  const value = entry[column];
  if (column === "shape") return formatShape(value);
  if (NUMERIC_OVERVIEW_COLUMNS.has(column)) return formatNumber(value);
  return value === null || value === undefined || value === "" ? "—" : String(value);
}

function renderOverviewView(state) {
  if (state.overview.length === 0) return [note("Nothing to show: no values were saved.")];
  const head = element("tr", {}, OVERVIEW_COLUMNS.map((column) => element("th", { text: column })));
  const rows = state.overview.map((entry) => element("tr", {}, OVERVIEW_COLUMNS.map((column) => {
    const text = overviewCell(entry, column);
    if (NUMERIC_OVERVIEW_COLUMNS.has(column)) return element("td", { class: "ndif-number", text });
    return element("td", { class: WIDE_OVERVIEW_COLUMNS.has(column) ? "ndif-cut" : null, title: text, text });
  })));
  const table = element("table", { class: "ndif-overview" }, [element("thead", {}, [head]), element("tbody", {}, rows)]);
  return [scrollBox("overview", [table])];
}

/* ---------- heatmap view ---------- */

// Cells fill the widget's width (a short prompt gets wide cells, a long one scrolls), and the layers fit in about
// 420 px of height.
const HEATMAP_HEIGHT = 420;
const MAX_CELL_WIDTH = 96;

function heatmapCellSizes(rows, cols, width) {
  return {
    cellWidth: clamp(Math.floor(width / cols), 6, MAX_CELL_WIDTH),
    cellHeight: clamp(Math.floor(HEATMAP_HEIGHT / rows), 6, 22),
  };
}

function heatmapReadout(state, grid, values, scale, layer, column) {
  const index = state.window.start + column;
  const token = tokenLabel(state.tokens[column]);
  return `layer ${layer} · token '${token}' (index ${index}) · value ${valueText(scale, values[layer * grid.cols + column])}`;
}

function heatmapMarkedCell(state, rows, cols) {
  const cell = selectedCell(state);
  if (!cell) return null;
  const column = cell.token - state.window.start;
  if (cell.layer < 0 || cell.layer >= rows || column < 0 || column >= cols) return null;
  return { displayRow: rows - 1 - cell.layer, column };
}

function renderHeatmapView(state, model) {
  const grid = { rows: asInt(state.grid.rows, 0), cols: asInt(state.grid.cols, 0) };
  const values = asList(state.grid.values);
  if (grid.rows <= 0 || grid.cols <= 0 || values.length === 0) {
    return [note(`Nothing to show: ${asText(state.grid.label) || "no layer × token values for this selection"}.`)];
  }
  const scale = makeScale(state.grid, values);
  const layerOf = (displayRow) => grid.rows - 1 - displayRow;
  const valueAt = (displayRow, column) => values[layerOf(displayRow) * grid.cols + column];
  const marked = heatmapMarkedCell(state, grid.rows, grid.cols);
  const idleText = marked
    ? heatmapReadout(state, grid, values, scale, layerOf(marked.displayRow), marked.column)
    : "Hover a cell to read its value; click to select it.";
  const readout = element("div", { class: "ndif-readout", text: idleText });
  const chart = renderMatrixChart({
    ...grid,
    ...heatmapCellSizes(grid.rows, grid.cols, state.chartWidth),
    canvasClass: "ndif-heatmap",
    attributes: {
      "data-rows": grid.rows,
      "data-cols": grid.cols,
      "data-window-start": state.window.start,
      "data-above": scale.above,
      "data-below": scale.below,
    },
    scrollKey: "heatmap",
    colorAt: (displayRow, column) => scaleColor(scale, valueAt(displayRow, column)),
    outsideAt: (displayRow, column) => outsideScale(scale, valueAt(displayRow, column)),
    rowLabels: Array.from({ length: grid.rows }, (_, displayRow) => {
      const layer = layerOf(displayRow);
      return { index: layer, text: shortLayerName(state, layer), title: layerLabel(state, layer) };
    }),
    columnLabels: tokenColumnLabels(state, grid.cols),
    marked,
    onHover: (cell) => {
      readout.textContent = cell ? heatmapReadout(state, grid, values, scale, layerOf(cell.displayRow), cell.column) : idleText;
    },
    onClick: (cell) => setTrait(model, "selected", [layerOf(cell.displayRow), state.window.start + cell.column]),
  });
  const caption = element("div", {
    class: "ndif-caption",
    text: [asText(state.grid.label), layerAxisCaption(state)].filter(Boolean).join(" · "),
  });
  return [caption, chart, readout, renderColorLegend(scale, asText(state.grid.label)), renderCellDetail(state, model)];
}

// The clicked cell: its value, its hidden state's norm and largest neurons (a click shows one as the reduction),
// and where the lens runs, its top tokens.
function renderCellDetail(state, model) {
  const detail = state.cellDetail;
  if (!isNumber(detail.layer) || !isNumber(detail.token)) return null;
  const token = state.tokens[Number(detail.token) - state.window.start];
  const heading = `layer ${detail.layer} · token${token === undefined ? "" : ` '${tokenLabel(token)}'`} (index ${detail.token}) · `
    + `value ${formatNumber(detail.value)} · norm of the hidden state ${formatNumber(detail.norm)}`;
  const neurons = asList(detail.neurons).map(asObject).map((neuron) => element("button", {
    type: "button",
    class: "ndif-detail-neuron",
    "data-neuron": neuron.index,
    title: `colour the views by neuron ${neuron.index}`,
    text: `#${neuron.index} ${formatNumber(neuron.value)}`,
    onclick: () => {
      model.set("reduction", "neuron");
      model.set("neuron", Number(neuron.index));
      model.save_changes();
    },
  }));
  const lens = asList(detail.lens).map(asObject);
  return element("div", { class: "ndif-cell-detail" }, [
    element("div", { class: "ndif-caption", text: heading }),
    element("div", { class: "ndif-detail-row" }, [element("span", { class: "ndif-detail-label", text: "largest neurons" }), ...neurons]),
    lens.length ? element("div", { class: "ndif-detail-row" }, [
      element("span", { class: "ndif-detail-label", text: "logit lens" }),
      ...lens.map((entry) => element("span", { class: "ndif-detail-token", text: `${tokenLabel(entry.token)} ${formatProbability(entry.prob)}` })),
    ]) : null,
  ]);
}

/* ---------- logit lens view ---------- */

function lensCellBackground(probability) {
  const alpha = isNumber(probability) ? clamp(probability, 0, 1) * 0.9 : 0;
  return { backgroundColor: cssColor(LENS_COLOR, alpha), color: alpha > 0.45 ? "#fff" : null };
}

function renderLensRow(state, lens, layer, marked) {
  const cells = Array.from({ length: lens.cols }, (_, column) => {
    const offset = layer * lens.cols + column;
    const probability = lens.probs[offset];
    const token = state.window.start + column;
    const isMarked = marked && marked.layer === layer && marked.token === token;
    return element("td", {
      class: isMarked ? "ndif-selected" : null,
      "data-layer": layer,
      "data-token": token,
      title: `p = ${formatProbability(probability)}`,
      style: lensCellBackground(probability),
    }, [
      tokenLabel(lens.tokens[offset]),
      state.lensProbabilities ? element("span", { class: "ndif-lens-prob", text: formatProbability(probability) }) : null,
    ]);
  });
  const header = element("th", { class: "ndif-layer", title: layerLabel(state, layer), text: shortLayerName(state, layer) });
  return element("tr", {}, [header, ...cells]);
}

function renderLensTable(state, lens, model) {
  const marked = selectedCell(state);
  const headerCells = tokenColumnLabels(state, lens.cols).map((label) => element("th", { title: label.title, text: label.text }));
  const head = element("thead", {}, [element("tr", {}, [element("th", { class: "ndif-layer" }), ...headerCells])]);
  const layers = Array.from({ length: lens.rows }, (_, index) => lens.rows - 1 - index);
  const body = element("tbody", {}, layers.map((layer) => renderLensRow(state, lens, layer, marked)));
  return element("table", {
    class: "ndif-lens",
    onclick: (event) => {
      const cell = event.target.closest("td[data-layer]");
      if (cell) setTrait(model, "selected", [Number(cell.dataset.layer), Number(cell.dataset.token)]);
    },
  }, [head, body]);
}

function renderTopTokens(state) {
  const cell = state.lensCell;
  const top = asList(cell.top).map(asObject);
  if (!isNumber(cell.layer) || !isNumber(cell.token) || top.length === 0) {
    return note("Click a cell to see the top tokens there.", "ndif-empty ndif-lens-cell");
  }
  const tokenInWindow = state.tokens[cell.token - state.window.start];
  const heading = `layer ${cell.layer} · token${tokenInWindow === undefined ? "" : ` '${tokenLabel(tokenInWindow)}'`} (index ${cell.token})`;
  const items = top.map((entry, rank) => element("li", {}, [
    element("span", { class: "ndif-topk-rank", text: `${rank + 1}.` }),
    element("span", { class: "ndif-topk-token", title: JSON.stringify(asText(entry.token)), text: tokenLabel(entry.token) }),
    element("span", { class: "ndif-topk-track" }, [
      element("span", { class: "ndif-topk-bar", style: { width: `${clamp(Number(entry.prob) || 0, 0, 1) * 100}%` } }),
    ]),
    element("span", { class: "ndif-topk-prob", text: formatProbability(entry.prob) }),
  ]));
  return element("div", { class: "ndif-lens-cell" }, [
    element("div", { class: "ndif-caption", text: heading }),
    element("ol", { class: "ndif-topk" }, items),
  ]);
}

function renderLensView(state, model) {
  const status = asText(state.lens.status);
  if (status !== "ready") return [statusNote(status || "Nothing to show: the logit lens has not been computed.")];
  const lens = {
    rows: asInt(state.lens.rows, 0),
    cols: asInt(state.lens.cols, 0),
    tokens: asList(state.lens.top_tokens),
    probs: asList(state.lens.top_probs),
  };
  if (lens.rows <= 0 || lens.cols <= 0) return [note("Nothing to show: the logit lens is empty.")];
  const caption = `top token and its probability at each layer · ${layerAxisCaption(state)}`;
  return [element("div", { class: "ndif-caption", text: caption }), element("div", { class: "ndif-lens-layout" }, [
    scrollBox("lens", [renderLensTable(state, lens, model)]),
    renderTopTokens(state),
  ]), renderLensLegend(state, model)];
}

// The shading's key (the top token's probability, 0 to 1) and the choice to write the probabilities in the cells.
function renderLensLegend(state, model) {
  const bar = element("canvas", { class: "ndif-colorbar" });
  const context = prepareCanvas(bar, LEGEND_WIDTH, LEGEND_HEIGHT);
  for (let x = 0; x < LEGEND_WIDTH; x += 1) {
    context.fillStyle = lensCellBackground(x / (LEGEND_WIDTH - 1)).backgroundColor;
    context.fillRect(x, 0, 1, LEGEND_HEIGHT);
  }
  const toggle = element("input", { type: "checkbox", class: "ndif-lens-probabilities", "data-keep": "ndif-lens-probabilities", ...OWN_KEYS });
  toggle.checked = state.lensProbabilities;
  toggle.addEventListener("change", () => setTrait(model, "lens_probabilities", toggle.checked));
  return element("div", { class: "ndif-legend ndif-lens-legend" }, [
    element("span", { class: "ndif-legend-min", text: "0" }),
    bar,
    element("span", { class: "ndif-legend-max", text: "1" }),
    element("span", { class: "ndif-legend-label", text: "shading: probability of the top token" }),
    element("label", { class: "ndif-control" }, [toggle, element("span", { class: "ndif-control-label", text: "show probabilities" })]),
  ]);
}

/* ---------- attention view ---------- */

function attentionScale(pattern) {
  const { max } = valueRange(pattern);
  const high = max > 0 && max < TINY_ATTENTION ? max : 1;
  return { low: 0, high, stops: darkTheme() ? DARK_TO_LIGHT : WHITE_TO_DARK, diverging: false };
}

function paintPatternPixels(canvas, pattern, scale, q, k) {
  canvas.width = k;
  canvas.height = q;
  const context = canvas.getContext("2d");
  const image = context.createImageData(k, q);
  for (let offset = 0; offset < q * k; offset += 1) {
    const [red, green, blue] = scaleColor(scale, pattern[offset]);
    image.data.set([red, green, blue, 255], offset * 4);
  }
  context.putImageData(image, 0, 0);
}

function renderHeadThumbnail(pattern, head, attention, selectedHead, model) {
  const scale = attentionScale(pattern);
  const canvas = element("canvas", { class: "ndif-head", "data-head": head });
  paintPatternPixels(canvas, pattern, scale, attention.q, attention.k);
  const zoom = THUMBNAIL_SIZE / Math.max(attention.q, attention.k);
  Object.assign(canvas.style, { width: `${attention.k * zoom}px`, height: `${attention.q * zoom}px` });
  return element("button", {
    type: "button",
    class: head === selectedHead ? "ndif-head-card ndif-selected" : "ndif-head-card",
    "data-head": head,
    "data-keep": `head-${head}`,
    title: `head ${head} · colour scale 0–${formatNumber(scale.high)}`,
    onclick: () => setTrait(model, "head", head),
  }, [canvas, element("span", { class: "ndif-head-label", text: `head ${head}` })]);
}

function attentionReadout(attention, pattern, query, key) {
  const queryToken = tokenLabel(attention.queryTokens[query] ?? String(query));
  const keyToken = tokenLabel(attention.keyTokens[key] ?? String(key));
  return `query '${queryToken}' → key '${keyToken}': ${formatNumber(pattern[query * attention.k + key])}`;
}

function axisLabels(tokens, count) {
  return Array.from({ length: count }, (_, index) => {
    const token = tokens[index];
    return { index, text: token === undefined ? String(index) : tokenLabel(token), title: `${index}: ${JSON.stringify(asText(token))}` };
  });
}

function renderHeadDetail(attention, pattern, head) {
  const scale = attentionScale(pattern);
  const cell = clamp(Math.floor(Math.min(720 / attention.k, 480 / attention.q)), 4, 24);
  const idleText = `head ${head}: hover a cell to read the attention weight.`;
  const readout = element("div", { class: "ndif-readout", text: idleText });
  const chart = renderMatrixChart({
    rows: attention.q,
    cols: attention.k,
    cellWidth: cell,
    cellHeight: cell,
    canvasClass: "ndif-head-detail",
    crosshair: true,
    attributes: { "data-head": head, "data-rows": attention.q, "data-cols": attention.k },
    scrollKey: "attention",
    colorAt: (query, key) => scaleColor(scale, pattern[query * attention.k + key]),
    rowLabels: axisLabels(attention.queryTokens, attention.q),
    columnLabels: axisLabels(attention.keyTokens, attention.k),
    marked: null,
    onHover: (hovered) => {
      readout.textContent = hovered ? attentionReadout(attention, pattern, hovered.displayRow, hovered.column) : idleText;
    },
    onClick: null,
  });
  return element("div", { class: "ndif-head-zoom" }, [
    element("div", { class: "ndif-caption", text: `head ${head} · rows: query tokens · columns: key tokens` }),
    chart,
    readout,
    renderColorLegend(scale, "attention weight"),
  ]);
}

function renderAttentionView(state, model) {
  const status = asText(state.attention.status);
  if (status !== "ready") return [statusNote(status || "Nothing to show: no attention pattern was computed.")];
  const attention = {
    q: asInt(state.attention.q, 0),
    k: asInt(state.attention.k, 0),
    queryTokens: asList(state.attention.query_tokens).map(asText),
    keyTokens: asList(state.attention.key_tokens).map(asText),
  };
  const patterns = asList(state.attention.patterns).map(asList);
  if (patterns.length === 0 || attention.q <= 0 || attention.k <= 0) {
    return [note("Nothing to show: the attention pattern is empty.")];
  }
  const gallery = element("div", { class: "ndif-heads" }, patterns.map((pattern, head) => (
    renderHeadThumbnail(pattern, head, attention, state.head, model)
  )));
  const detail = state.head !== null && patterns[state.head]
    ? renderHeadDetail(attention, patterns[state.head], state.head)
    : note("Click a head to enlarge it.");
  return [gallery, detail];
}

/* ---------- token strip view ---------- */

function renderStripToken(state, scale, value, column) {
  const token = state.tokens[column];
  const color = scaleColor(scale, value);
  const outside = outsideScale(scale, value);
  const classes = ["ndif-token", token === "" || token === undefined ? "ndif-token-empty" : null, outside ? `ndif-outside-${outside}` : null];
  return element("span", {
    class: classes.filter(Boolean).join(" "),
    "data-token": state.window.start + column,
    "data-column": column,
    "data-outside": outside,
    title: valueText(scale, value),
    text: stripTokenText(token),
    style: { backgroundColor: cssColor(color), color: readableTextOn(color) },
  });
}

function stripReadout(state, values, scale, column) {
  return `token '${tokenLabel(state.tokens[column])}' (index ${state.window.start + column}) · value ${valueText(scale, values[column])}`;
}

function renderStripView(state) {
  const strip = state.strip;
  const values = asList(strip.values);
  if (values.length === 0) return [note("Nothing to show: no token strip for this selection.")];
  const scale = makeScale(strip, values);
  const idleText = "Hover a token to read its value.";
  const readout = element("div", { class: "ndif-readout", text: idleText });
  const tokens = element("div", {
    class: "ndif-strip",
    "data-above": scale.above,
    "data-below": scale.below,
    onmouseover: (event) => {
      const span = event.target.closest(".ndif-token");
      if (span) readout.textContent = stripReadout(state, values, scale, Number(span.dataset.column));
    },
    onmouseleave: () => { readout.textContent = idleText; },
  }, values.flatMap((value, column) => [renderStripToken(state, scale, value, column), element("wbr")]));
  const caption = asText(strip.label) || layerLabel(state, asInt(strip.layer, state.stripLayer));
  return [
    element("div", { class: "ndif-caption", text: caption }),
    tokens,
    readout,
    renderColorLegend(scale, asText(strip.label)),
  ];
}

/* ---------- assembling ---------- */

const VIEW_RENDERERS = {
  overview: renderOverviewView,
  heatmap: renderHeatmapView,
  lens: renderLensView,
  attention: renderAttentionView,
  strip: renderStripView,
};

function renderViewBody(state, view, model) {
  const body = element("div", { class: "ndif-body" });
  try {
    appendAll(body, VIEW_RENDERERS[view](state, model));
  } catch (error) {
    console.error("ndif browser: could not draw the view", error);
    body.append(note(`Could not draw this view: ${error && /** @type {Error} */ (error).message}`));
  }
  return body;
}

// Room for a chart's cells: the widget's width less its row labels, as laid out when the view is drawn.
function chartWidth(root) {
  const width = root.clientWidth || 960;
  return clamp(width - 90, 240, 900);
}

function renderInto(root, model) {
  const state = { ...readState(model), chartWidth: chartWidth(root) };
  const view = currentView(state);
  const remembered = rememberUiState(root);
  root.setAttribute("data-view", view);
  root.replaceChildren();
  appendAll(root, [
    renderHeader(state),
    renderTabs(state, view, model),
    view === "overview" ? renderAbsentViews(state) : null,
    renderControls(state, view, model),
    renderViewBody(state, view, model),
  ]);
  restoreUiState(root, remembered);
}

// When the user has changed the view and then leaves the widget (the pointer out, the focus elsewhere), the kernel is
// told, and it redraws the picture saved with the notebook. Not while the user works in it: that redraw replaces
// the output, and with it this view.
const SETTLE_MS = 400;

function watchSettling(root, model) {
  let changed = false;
  let timer = 0;
  const onChange = () => { changed = true; };
  const check = () => {
    window.clearTimeout(timer);
    timer = window.setTimeout(() => {
      const inside = root.matches(":hover") || root.contains(root.getRootNode().activeElement);
      if (!changed || inside) return;
      changed = false;
      setTrait(model, "settled", asInt(model.get("settled"), 0) + 1);
    }, SETTLE_MS);
  };
  for (const name of USER_CHOICES) model.on(`change:${name}`, onChange);
  root.addEventListener("mouseleave", check);
  root.addEventListener("focusout", check);
  return () => {
    window.clearTimeout(timer);
    for (const name of USER_CHOICES) model.off(`change:${name}`, onChange);
  };
}

/** @param {RenderProps} props */
function render({ model, el }) {
  const root = element("div", { class: "ndif-browser" });
  el.append(root);
  let alive = true;
  let scheduled = false;
  let shown = false;
  let stopSettling = () => {};
  const themes = new MutationObserver(() => scheduleRender());
  // Cells fit the width they are drawn in: a notebook narrowed by a sidebar redraws them.
  let drawnWidth = 0;
  const resizes = new ResizeObserver(() => {
    const width = chartWidth(root);
    if (root.clientWidth > 0 && Math.abs(width - drawnWidth) > 40) {
      drawnWidth = width;
      scheduleRender();
    }
  });
  const stop = () => {
    alive = false;
    stopSettling();
    themes.disconnect();
    resizes.disconnect();
    for (const name of TRAITS) model.off(`change:${name}`, scheduleRender);
    root.remove();
  };
  // Python often changes several traits in one message: draw once for all of them. A view whose element was taken
  // out of its output without being closed (JupyterLab redraws an updated output in a new view) stops listening; a
  // view merely off the page (a notebook's cells out of view are detached) keeps its place in its output and stays.
  const scheduleRender = () => {
    if (scheduled) return;
    scheduled = true;
    queueMicrotask(() => {
      scheduled = false;
      if (el.parentNode) shown = true;
      else if (shown) stop();
      if (alive) renderInto(root, model);
    });
  };
  for (const name of TRAITS) model.on(`change:${name}`, scheduleRender);
  // Attention's colours follow JupyterLab's theme.
  if (document.body) themes.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light"] });
  renderInto(root, model);
  drawnWidth = chartWidth(root);
  resizes.observe(root);
  stopSettling = watchSettling(root, model);
  return stop;
}

export default { render };
