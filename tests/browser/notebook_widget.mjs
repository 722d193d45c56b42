// Opens a notebook in a real JupyterLab with Debian's chromium, runs it, and checks the activation browser renders.
//
// node notebook_widget.mjs LAB_URL TOKEN NOTEBOOK OUTPUT_FOLDER
// Prints one JSON line with what it saw; screenshots go to OUTPUT_FOLDER.

import { chromium } from "playwright-core";
import path from "node:path";

const [labUrl, token, notebook, outputFolder] = process.argv.slice(2);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
];
const RUN_TIMEOUT = Number(process.env.RUN_TIMEOUT || 240_000);

async function openNotebook(page) {
  await page.goto(`${labUrl}lab/tree/${notebook}?token=${token}`);
  await page.locator(".jp-NotebookPanel .jp-Cell").first().waitFor({ timeout: 120_000 });
  const kernelDialog = page.locator(".jp-Dialog", { hasText: "Select Kernel" });
  await kernelDialog.waitFor({ timeout: 15_000 }).then(
    () => kernelDialog.locator(".jp-Dialog-button.jp-mod-accept").click(),
    () => {},
  );
  const news = page.locator(".jp-Notification-Toast", { hasText: "Jupyter news" });
  await news.locator("button", { hasText: /^No$/ }).click({ timeout: 5_000 }).catch(() => {});
  await page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']").first()
    .waitFor({ timeout: 120_000 }).catch(() => {});
}

async function runAllCells(page) {
  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();
}

async function shot(locator, name) {
  const file = path.join(outputFolder, name);
  await locator.screenshot({ path: file });
  return file;
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
  const seen = { consoleErrors: [], screenshots: [] };
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  try {
    page.on("console", (message) => {
      if (message.type() === "error") seen.consoleErrors.push(message.text());
    });
    page.on("pageerror", (error) => seen.consoleErrors.push(String(error)));
    await openNotebook(page);
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
    seen.screenshots.push(await shot(widget, "heatmap.png"));

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
    seen.screenshots.push(await shot(widget, "lens.png"));
    seen.screenshots.push(path.join(outputFolder, "notebook.png"));
    await page.screenshot({ path: seen.screenshots.at(-1), fullPage: false });
  } catch (error) {
    await page.screenshot({ path: path.join(outputFolder, "failure.png") }).catch(() => {});
    const outputs = await page.locator(".jp-OutputArea-output").allTextContents().catch(() => []);
    error.message += `\ncell outputs: ${JSON.stringify(outputs).slice(0, 4000)}` +
      `\nconsole errors: ${JSON.stringify(seen.consoleErrors).slice(0, 4000)}` +
      `\nscreenshot: ${path.join(outputFolder, "failure.png")}`;
    throw error;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
