// Runs a `%%ndif --server` notebook in a real JupyterLab with Debian's chromium, then uses the NDIF sidebar at its
// default width: the served model's module tree (every module expanded, measured: one line per row, names cut with an
// ellipsis, counts right-aligned), the jobs section in view beside it, a clicked module's path inserted into the active
// cell, the job listed as done with its notebook, prompt and time sent, "New NDIF notebook" from the palette and the
// launcher, and the job's notebook link opening its notebook, closed by then, at the cell that sent it (and saying so
// once that cell is gone).
//
// node sidebar.mjs LAB_URL TOKEN NOTEBOOK OUTPUT_FOLDER
// Prints one JSON line with what it saw (the page's uncaught errors in `pageErrors`); screenshots go to OUTPUT_FOLDER.

import { openNotebook, runAllCells, session, shot } from "./lab.mjs";

const [labUrl, token, notebook, outputFolder] = process.argv.slice(2);

/** Opens every folded module of the sidebar's trees, level by level. */
async function expandEveryModule(panel) {
  for (let level = 0; level < 20; level++) {
    const opened = await panel.evaluate((node) => {
      const folded = [...node.querySelectorAll(".ndif-tree-item:not(.ndif-open)")].filter(
        (item) => item.querySelector(":scope > .ndif-tree") && item.offsetParent !== null);
      folded.forEach((item) => item.querySelector(":scope > .ndif-tree-row .ndif-tree-toggle").click());
      return folded.length;
    });
    if (opened === 0) return;
  }
}

/** Each shown module row: whether it takes one line, what of it is cut and how, and where its count ends. */
async function measureRows(panel) {
  return panel.evaluate((node) => {
    const rows = [...node.querySelectorAll(".ndif-tree-row")].filter((row) => row.offsetParent !== null);
    return rows.map((row) => {
      const parts = [...row.children].filter((part) => part.textContent);
      const boxes = parts.flatMap((part) => [...part.getClientRects()]);
      const label = row.querySelector(".ndif-tree-label");
      const lineHeight = label.getBoundingClientRect().height;
      const count = row.querySelector(".ndif-tree-count");
      return {
        path: row.parentElement.dataset.path,
        height: row.getBoundingClientRect().height,
        lineHeight,
        oneLine: boxes.every((box) => Math.abs(box.top - boxes[0].top) < 2) &&
          parts.every((part) => part.getClientRects().length === 1),
        cut: parts.filter((part) => part.scrollWidth > part.clientWidth + 1).map((part) => ({
          className: part.className,
          ellipsis: getComputedStyle(part).textOverflow === "ellipsis",
          titled: (part.title || "").includes(part.textContent),
        })),
        labelTitled: label.title.includes(label.textContent),
        countRight: count && count.textContent ? count.getBoundingClientRect().right : null,
        rowRight: row.getBoundingClientRect().right,
      };
    });
  });
}

/** Where the first job is against the sidebar and the page, and whether the trees are taller than their room. */
async function measureJobs(page, panel) {
  const viewport = page.viewportSize();
  return panel.evaluate((node, viewport) => {
    const job = node.querySelector(".ndif-job").getBoundingClientRect();
    const sidebar = node.getBoundingClientRect();
    const scrolled = [node, ...node.querySelectorAll("*")].filter((part) => part.contains(node.querySelector(".ndif-tree")));
    return {
      job: { top: job.top, bottom: job.bottom },
      sidebar: { top: sidebar.top, bottom: sidebar.bottom, width: sidebar.width },
      viewport,
      inView: job.top >= sidebar.top && job.bottom <= sidebar.bottom && job.bottom <= viewport.height,
      treesOverflow: scrolled.some((part) => part.scrollHeight > part.clientHeight + 1),
    };
  }, viewport);
}

/** The shown notebook's tab name, and the index of its active cell and of its selected cells. */
async function shownNotebook(page) {
  return page.evaluate(() => {
    const shown = [...document.querySelectorAll(".jp-NotebookPanel")].find((panel) => panel.offsetParent !== null);
    const tab = document.querySelector(".jp-mod-current.lm-TabBar-tab .lm-TabBar-tabLabel");
    const cells = [...shown.querySelectorAll(".jp-Cell")];
    const active = cells.find((cell) => cell.classList.contains("jp-mod-active"));
    const box = active?.getBoundingClientRect();
    const area = shown.querySelector(".jp-WindowedPanel-outer")?.getBoundingClientRect() ?? shown.getBoundingClientRect();
    return {
      tab: tab?.textContent,
      activeCell: cells.indexOf(active),
      selectedCells: cells.map((cell, index) => cell.classList.contains("jp-mod-selected") ? index : -1)
        .filter((index) => index >= 0),
      activeCellInView: Boolean(box && box.top >= area.top && box.top < area.bottom),
    };
  });
}

async function waitForSampleNotebook(page) {
  await page.waitForFunction(
    () => [...document.querySelectorAll(".jp-NotebookPanel")].some((panel) => panel.offsetParent !== null &&
      panel.querySelectorAll(".jp-Cell").length === 2 && panel.textContent.includes("%load_ext ndif_jupyter")),
    null, { timeout: 60_000 });
  // JupyterLab renders a new notebook's cells when the page is idle; an error of that shows up in the next seconds.
  await page.waitForTimeout(3000);
  return page.locator(".jp-NotebookPanel:visible .jp-Cell").evaluateAll((cells) =>
    cells.map((cell) => cell.querySelector(".cm-content")?.textContent ?? ""));
}

await session(outputFolder, async (page, seen) => {
  seen.pageErrors = [];
  page.on("pageerror", (error) => seen.pageErrors.push(String(error.stack || error)));
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

  // JupyterLab's question about its news comes as a toast over the bottom of the sidebar, where the jobs are.
  const news = page.locator("#react-toastify-container", { hasText: "Jupyter news" });
  await news.locator("button", { hasText: /^No$/ }).click({ timeout: 5_000 }).catch(() => {});
  await expandEveryModule(panel);
  seen.rows = await measureRows(panel);
  seen.jobsPlace = await measureJobs(page, panel);
  await shot(panel, outputFolder, "sidebar.png", seen);
  await shot(page, outputFolder, "lab.png", seen);

  const job = panel.locator(".ndif-job").first();
  const text = async (selector) => (await job.locator(selector).count()) ? job.locator(selector).first().textContent() : null;
  seen.job = {
    notebook: await text(".ndif-job-notebook"),
    prompt: await text(".ndif-job-prompt"),
    sent: await text(".ndif-job-sent"),
  };

  await page.keyboard.press("Control+Shift+C");
  await page.locator(".lm-CommandPalette-input").fill("New NDIF notebook");
  await page.locator(".lm-CommandPalette-item", { hasText: "New NDIF notebook" }).first().click();
  seen.newNotebookCells = await waitForSampleNotebook(page);

  await page.locator(".lm-MenuBar-itemLabel", { hasText: /^File$/ }).click();
  await page.locator(".lm-Menu-itemLabel", { hasText: /^New Launcher$/ }).click();
  await page.locator(".jp-LauncherCard:visible", { hasText: "New NDIF notebook" }).click();
  seen.launcherNotebookCells = await waitForSampleNotebook(page);
  await shot(page, outputFolder, "new-notebook.png", seen);

  const link = job.locator("button.ndif-job-notebook");
  if (await link.count()) {
    // The job's notebook, saved and closed, is opened again by its link.
    const tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab", { hasText: notebook });
    await tab.click();
    await page.keyboard.press("Control+s");
    await page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.jp-mod-dirty", { hasText: notebook })
      .waitFor({ state: "detached", timeout: 30_000 });
    await tab.locator(".lm-TabBar-tabCloseIcon").click();
    await tab.waitFor({ state: "detached", timeout: 30_000 });
    seen.beforeLink = await shownNotebook(page);
    seen.beforeLink.jobNotebookOpen = await tab.count() > 0;
    await link.click();
    await page.waitForFunction((name) => document.querySelector(".jp-mod-current.lm-TabBar-tab")?.textContent
      .includes(name), notebook, { timeout: 30_000 }).catch(() => {});
    await page.waitForTimeout(500);
    seen.afterLink = await shownNotebook(page);
    await shot(page, outputFolder, "job-link.png", seen);

    await page.keyboard.press("Escape");
    await page.keyboard.press("d");
    await page.keyboard.press("d");
    await page.waitForFunction(() => [...document.querySelectorAll(".jp-NotebookPanel")]
      .find((panel) => panel.offsetParent !== null).querySelectorAll(".jp-Cell").length === 2, null,
    { timeout: 10_000 });
    await job.locator("button.ndif-job-notebook").click();
    const problem = job.locator(".ndif-job-origin-problem");
    await problem.waitFor({ timeout: 10_000 });
    seen.originProblem = await problem.textContent();
    await shot(panel, outputFolder, "sidebar-cell-gone.png", seen);
  }
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
