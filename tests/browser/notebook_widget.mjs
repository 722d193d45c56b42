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
  await shot(widget, outputFolder, "lens.png", seen);
  await shot(page, outputFolder, "notebook.png", seen);
  seen.keys = await keyboard(page, widget);
  await shot(page.locator(".ndif-browser").nth(1), outputFolder, "keyboard.png", seen);
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
