// Opens a notebook in a real JupyterLab with Debian's chromium, runs it, and checks the activation browser renders.
//
// node notebook_widget.mjs LAB_URL TOKEN NOTEBOOK OUTPUT_FOLDER
// Prints one JSON line with what it saw; screenshots go to OUTPUT_FOLDER.

import { openNotebook, runAllCells, session, shot } from "./lab.mjs";

const [labUrl, token, notebook, outputFolder] = process.argv.slice(2);
const RUN_TIMEOUT = Number(process.env.RUN_TIMEOUT || 240_000);

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
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
