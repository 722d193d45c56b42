// Opens a notebook in a real JupyterLab with Debian's chromium, runs it, and checks the activation browser renders.
//
// node notebook_widget.mjs LAB_URL TOKEN NOTEBOOK OUTPUT_FOLDER
// Prints one JSON line with what it saw; screenshots go to OUTPUT_FOLDER.

import { openNotebook, runAllCells, session, shot } from "./lab.mjs";

const [labUrl, token, notebook, outputFolder] = process.argv.slice(2);
const RUN_TIMEOUT = Number(process.env.RUN_TIMEOUT || 240_000);

// Enter in the neuron field applies the neuron; arrow keys move the step slider (not the notebook's cell selection).
async function keyboard(page, widget) {
  const keys = {};
  await widget.locator('button.ndif-tab[data-view="heatmap"]').click();
  const legend = widget.locator(".ndif-legend").first();
  await widget.locator("select.ndif-reduction").selectOption("neuron");
  const neuron = widget.locator("input.ndif-neuron");
  await neuron.waitFor({ timeout: RUN_TIMEOUT });
  await legend.waitFor();
  keys.legendBefore = await legend.textContent();
  await neuron.fill("3");
  await neuron.press("Enter");
  keys.neuronApplied = await page
    .waitForFunction(
      ([selector, before]) => document.querySelector(selector)?.textContent !== before,
      [".ndif-browser .ndif-legend", keys.legendBefore],
      { timeout: 60_000 },
    )
    .then(() => true, () => false);
  keys.legendAfter = await legend.textContent();

  const generated = page.locator(".ndif-browser").nth(1);
  await generated.waitFor({ timeout: RUN_TIMEOUT });
  await generated.scrollIntoViewIfNeeded();
  const slider = generated.locator("input.ndif-step");
  const label = generated.locator(".ndif-step-label");
  const heatmap = generated.locator("canvas.ndif-heatmap");
  await slider.waitFor({ timeout: RUN_TIMEOUT });
  keys.cellsSelectedBefore = await page.locator(".jp-Notebook .jp-Cell.jp-mod-selected").count();
  keys.stepLabels = [await label.textContent()];
  keys.colsPerStep = [Number(await heatmap.getAttribute("data-cols"))];
  for (const key of ["ArrowLeft", "ArrowRight"]) {
    const before = await heatmap.getAttribute("data-cols");
    await slider.focus();
    await slider.press(key);
    await page
      .waitForFunction(
        ([selector, old]) => document.querySelectorAll(selector)[1]?.getAttribute("data-cols") !== old,
        [".ndif-browser canvas.ndif-heatmap", before],
        { timeout: 60_000 },
      )
      .catch(() => {});
    keys.stepLabels.push(await label.textContent());
    keys.colsPerStep.push(Number(await heatmap.getAttribute("data-cols")));
  }
  keys.cellsSelected = await page.locator(".jp-Notebook .jp-Cell.jp-mod-selected").count();
  return keys;
}

// The fourth cell's values have a huge first token: the heatmap and the strip mark what lies beyond their scales,
// and the log scale and "range without token 0" change the legend.
async function colours(page, outputFolder, seen) {
  const widget = page.locator(".ndif-browser").nth(2);
  await widget.waitFor({ timeout: RUN_TIMEOUT });
  await widget.scrollIntoViewIfNeeded();
  const found = {};
  const legend = widget.locator(".ndif-legend");
  const legendState = async () => ({
    above: await legend.getAttribute("data-above"),
    scale: await legend.getAttribute("data-scale"),
    text: await legend.textContent(),
  });
  const changed = async (before) => page
    .waitForFunction(
      ([old]) => document.querySelectorAll(".ndif-browser")[2]?.querySelector(".ndif-legend")?.textContent !== old,
      [before.text],
      { timeout: 60_000 },
    )
    .catch(() => {});
  await widget.locator('button.ndif-tab[data-view="heatmap"]').click();
  const heatmap = widget.locator("canvas.ndif-heatmap");
  await heatmap.waitFor();
  found.heatmapAbove = await heatmap.getAttribute("data-above");
  found.heatmapBox = await heatmap.boundingBox();
  found.flatLabels = await widget.locator(".ndif-xlabels-flat").count();
  found.chartScrolls = await widget.locator(".ndif-scroll").first().evaluate((box) => box.scrollWidth > box.clientWidth);
  found.heatmapLegend = await legendState();
  await shot(widget, outputFolder, "colours-heatmap.png", seen);
  // A click on the top layer's first cell details it; a click on its largest neuron colours the views by it.
  const box = await heatmap.boundingBox();
  const rows = Number(await heatmap.getAttribute("data-rows"));
  const cols = Number(await heatmap.getAttribute("data-cols"));
  await page.mouse.click(box.x + box.width / cols / 2, box.y + box.height / rows / 2);
  const neurons = widget.locator(".ndif-cell-detail button.ndif-detail-neuron");
  await neurons.first().waitFor({ timeout: 60_000 }).catch(() => {});
  found.detail = {
    caption: await widget.locator(".ndif-cell-detail .ndif-caption").textContent().catch(() => ""),
    neurons: await neurons.count(),
    first: await neurons.first().getAttribute("data-neuron").catch(() => null),
  };
  await shot(widget, outputFolder, "cell-detail.png", seen);
  await neurons.first().click().catch(() => {});
  await widget.locator("input.ndif-neuron").waitFor({ timeout: 60_000 }).catch(() => {});
  found.detail.reduction = await widget.locator("select.ndif-reduction").inputValue();
  found.detail.neuron = await widget.locator("input.ndif-neuron").inputValue().catch(() => null);
  await widget.locator("select.ndif-reduction").selectOption("norm");
  await widget.locator("input.ndif-neuron").waitFor({ state: "detached", timeout: 60_000 }).catch(() => {});
  await widget.locator('button.ndif-tab[data-view="strip"]').click();
  await widget.locator(".ndif-strip").waitFor();
  found.stripOutside = await widget.locator(".ndif-strip .ndif-token[data-outside='above']").evaluateAll(
    (spans) => spans.map((span) => Number(span.getAttribute("data-token"))),
  );
  found.stripLegend = await legendState();
  await shot(widget, outputFolder, "colours-strip.png", seen);
  const scale = widget.locator("select.ndif-scale");
  if (await scale.count()) {
    await scale.selectOption("log");
    await changed(found.stripLegend);
    found.logLegend = await legendState();
    await shot(widget, outputFolder, "colours-strip-log.png", seen);
    await widget.locator("select.ndif-scale").selectOption("linear");
    await changed(found.logLegend);
    const linear = await legendState();
    await widget.locator("input.ndif-leave-out-first").check();
    await changed(linear);
    found.withoutFirstLegend = await legendState();
  }
  return found;
}

async function chooseTheme(page, theme) {
  await page.mouse.move(5, 5);
  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Settings$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Theme$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: new RegExp(`^${theme}$`) }).click();
  const light = theme.includes("Light") ? "true" : "false";
  await page.waitForFunction((wanted) => document.body.dataset.jpThemeLight === wanted, light, { timeout: 30_000 });
  await page.waitForTimeout(500);
}

// The fifth cell saved eager attention weights: hovering a cell of head 0 shades its query's row and key's column,
// and on the dark theme a masked (zero) weight is dark instead of white.
async function attention(page, outputFolder, seen) {
  const widget = page.locator(".ndif-browser").nth(3);
  await widget.waitFor({ timeout: RUN_TIMEOUT });
  await widget.scrollIntoViewIfNeeded();
  await widget.locator('button.ndif-tab[data-view="attention"]').click();
  await widget.locator("button.ndif-head-card").first().click();
  const detail = widget.locator("canvas.ndif-head-detail");
  await detail.waitFor({ timeout: 60_000 });
  const size = await detail.evaluate((canvas) => ({
    rows: Number(canvas.dataset.rows),
    cols: Number(canvas.dataset.cols),
    cell: canvas.clientWidth / Number(canvas.dataset.cols),
    ratio: canvas.width / canvas.clientWidth,
  }));
  const pixel = (row, column) => detail.evaluate(
    (canvas, [x, y]) => Array.from(canvas.getContext("2d").getImageData(x, y, 1, 1).data).slice(0, 3),
    [Math.floor((column + 0.5) * size.cell * size.ratio), Math.floor((row + 0.5) * size.cell * size.ratio)],
  );
  const found = { size };
  const last = size.rows - 1;
  found.maskedLight = await pixel(0, size.cols - 1);
  const before = { row: await pixel(last, 0), elsewhere: await pixel(1, 0) };
  const box = await detail.boundingBox();
  await page.mouse.move(box.x + 1.5 * size.cell, box.y + (last + 0.5) * size.cell);
  await page.waitForTimeout(200);
  found.rowShaded = JSON.stringify(await pixel(last, 0)) !== JSON.stringify(before.row);
  found.elsewhereSame = JSON.stringify(await pixel(1, 0)) === JSON.stringify(before.elsewhere);
  found.readout = await widget.locator(".ndif-head-zoom .ndif-readout").textContent();
  await shot(widget, outputFolder, "attention-hover.png", seen);
  await chooseTheme(page, "JupyterLab Dark");
  found.maskedDark = await pixel(0, size.cols - 1);
  await shot(widget, outputFolder, "attention-dark.png", seen);
  await chooseTheme(page, "JupyterLab Light");
  return found;
}

// Leaving the fourth browser (pointer out, focus elsewhere) redraws its saved picture (by now it was left once); the notebook is saved, its
// kernel shut down, and on reopening every browser shows its picture instead of a missing widget.
async function savedPictures(page, labUrl, token, notebook, outputFolder, seen) {
  const found = {};
  await page.mouse.move(5, 500);
  await page.locator(".jp-Cell").nth(3).locator(".jp-InputArea-editor").click();
  await page.keyboard.press("Escape");
  await page.waitForTimeout(3000);
  await page.keyboard.press("Control+s");
  await page.locator(".jp-mod-dirty").waitFor({ state: "detached", timeout: 60_000 }).catch(() => {});
  const sessions = await (await fetch(`${labUrl}api/sessions?token=${token}`)).json();
  for (const item of sessions) {
    await fetch(`${labUrl}api/sessions/${item.id}?token=${token}`, { method: "DELETE" });
  }
  await openNotebook(page, labUrl, token, notebook);
  const pictures = page.locator(".jp-RenderedImage img");
  await pictures.nth(3).waitFor({ timeout: 60_000 }).catch(() => {});
  await page.waitForTimeout(2000);
  found.pictures = await pictures.count();
  found.missingWidgets = await page.locator(".jp-OutputArea-output", { hasText: "model not found" }).count();
  found.dirty = await page.locator(".jp-mod-dirty").count();
  await shot(page, outputFolder, "reopened.png", seen);
  return found;
}

await session(outputFolder, async (page, seen) => {
  await openNotebook(page, labUrl, token, notebook);
  await runAllCells(page);

  const widget = page.locator(".ndif-browser").first();
  await widget.waitFor({ timeout: RUN_TIMEOUT });
  const heatmap = widget.locator("canvas.ndif-heatmap");
  await heatmap.waitFor();
  await widget.scrollIntoViewIfNeeded();
  seen.heatmap = {
    rows: Number(await heatmap.getAttribute("data-rows")),
    cols: Number(await heatmap.getAttribute("data-cols")),
    box: await heatmap.boundingBox(),
  };
  await shot(widget, outputFolder, "heatmap.png", seen);

  await widget.locator('button.ndif-tab[data-view="lens"]').click();
  const lensCells = widget.locator("table.ndif-lens td[data-layer][data-token]");
  await lensCells.first().waitFor({ timeout: RUN_TIMEOUT });
  seen.lens = {
    cells: await lensCells.count(),
    lastLayerTokens: await widget.locator("table.ndif-lens tr").nth(1).locator("td[data-token]").allTextContents(),
  };
  const target = lensCells.last();
  seen.lens.clicked = [Number(await target.getAttribute("data-layer")), Number(await target.getAttribute("data-token"))];
  await target.click();
  const topk = widget.locator("ol.ndif-topk li");
  await topk.first().waitFor({ timeout: 60_000 });
  seen.lens.topk = await topk.allTextContents();
  await widget.locator("input.ndif-lens-probabilities").check();
  const probabilities = widget.locator("table.ndif-lens .ndif-lens-prob");
  await probabilities.first().waitFor({ timeout: 60_000 }).catch(() => {});
  seen.lens.probabilities = await probabilities.count();
  seen.lens.legend = await widget.locator(".ndif-lens-legend").textContent();
  await shot(widget, outputFolder, "lens.png", seen);
  await shot(page, outputFolder, "notebook.png", seen);
  seen.keys = await keyboard(page, widget);
  await shot(page.locator(".ndif-browser").nth(1), outputFolder, "keyboard.png", seen);
  seen.colours = await colours(page, outputFolder, seen);
  seen.attention = await attention(page, outputFolder, seen);
  seen.saved = await savedPictures(page, labUrl, token, notebook, outputFolder, seen);
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
