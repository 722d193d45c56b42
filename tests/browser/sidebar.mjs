// Runs a `%%ndif --server` notebook in a real JupyterLab with Debian's chromium, then uses the NDIF sidebar: the
// served model's module tree, a clicked module's path inserted into the active cell, and the job listed as done.
//
// node sidebar.mjs LAB_URL TOKEN NOTEBOOK OUTPUT_FOLDER
// Prints one JSON line with what it saw; screenshots go to OUTPUT_FOLDER.

import { openNotebook, runAllCells, session, shot } from "./lab.mjs";

const [labUrl, token, notebook, outputFolder] = process.argv.slice(2);

await session(outputFolder, async (page, seen) => {
  await openNotebook(page, labUrl, token, notebook);
  await runAllCells(page);
  await page.locator(".ndif-browser").first().waitFor({ timeout: 240_000 });
  seen.widget = true;

  await page.locator(".lm-TabBar-tab", { hasText: "NDIF" }).click();
  const panel = page.locator("#ndif-panel");
  await panel.locator(".ndif-model").first().waitFor({ timeout: 120_000 });
  seen.models = await panel.locator(".ndif-model > summary").allTextContents();
  seen.topModules = await panel.locator(".ndif-model > .ndif-tree > .ndif-tree-item").evaluateAll(
    (items) => items.map((item) => item.dataset.path));

  const lastCell = page.locator(".jp-NotebookPanel .jp-Cell").last();
  await lastCell.locator(".cm-content").click();
  const layers = panel.locator('.ndif-tree-item[data-path="model.layers"]');
  await layers.locator(":scope > .ndif-tree-row .ndif-tree-toggle").click();
  await layers.locator('.ndif-tree-item[data-path="model.layers.0"] > .ndif-tree-row .ndif-tree-label').click();
  await page.waitForFunction(
    () => [...document.querySelectorAll(".jp-NotebookPanel .jp-Cell")].at(-1)
      .querySelector(".cm-content").textContent.includes("layers[0]"),
    null, { timeout: 10_000 });
  seen.inserted = await lastCell.locator(".cm-content").textContent();

  const done = panel.locator('.ndif-job[data-status="done"]');
  await done.first().waitFor({ timeout: 30_000 });
  seen.jobs = await panel.locator(".ndif-job").evaluateAll((items) => items.map((item) => item.dataset.status));
  await shot(panel, outputFolder, "sidebar.png", seen);
  await shot(page, outputFolder, "lab.png", seen);

  await page.keyboard.press("Control+Shift+C");
  await page.locator(".lm-CommandPalette-input").fill("New NDIF notebook");
  await page.locator(".lm-CommandPalette-item", { hasText: "New NDIF notebook" }).first().click();
  await page.waitForFunction(
    () => [...document.querySelectorAll(".jp-NotebookPanel")].some((panel) => panel.offsetParent !== null &&
      panel.querySelectorAll(".jp-Cell").length === 2 && panel.textContent.includes("%load_ext ndif_jupyter")),
    null, { timeout: 60_000 });
  seen.newNotebookCells = await page.locator(".jp-NotebookPanel:visible .jp-Cell").evaluateAll((cells) =>
    cells.map((cell) => cell.querySelector(".cm-content")?.textContent ?? ""));
  await shot(page, outputFolder, "new-notebook.png", seen);
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
