// Shared steps of the JupyterLab browser tests: start Debian's chromium, open a notebook, run all its cells.

import { chromium } from "playwright-core";
import path from "node:path";

const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_FLAGS = [
  "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
];

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_FLAGS });
}

export async function openNotebook(page, labUrl, token, notebook) {
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

export async function runAllCells(page) {
  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^Run$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^Run All Cells$/ }).click();
}

/** Runs `steps(page, seen)`, prints `seen` as one JSON line; on failure saves failure.png and the cell outputs. */
export async function session(outputFolder, steps) {
  const browser = await launch();
  const seen = { consoleErrors: [], screenshots: [] };
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("console", (message) => {
    if (message.type() === "error") seen.consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => seen.consoleErrors.push(String(error)));
  try {
    await steps(page, seen);
  } catch (error) {
    await page.screenshot({ path: path.join(outputFolder, "failure.png") }).catch(() => {});
    const outputs = await page.locator(".jp-OutputArea-output").allTextContents().catch(() => []);
    console.error(`cell outputs: ${JSON.stringify(outputs).slice(0, 4000)}`);
    console.error(`console errors: ${JSON.stringify(seen.consoleErrors).slice(0, 4000)}`);
    throw error;
  } finally {
    await browser.close();
  }
  console.log(JSON.stringify(seen));
}

export async function shot(locator, outputFolder, name, seen) {
  const file = path.join(outputFolder, name);
  await locator.screenshot({ path: file });
  seen.screenshots.push(file);
}
