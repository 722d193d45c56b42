// Opens the NDIF sidebar in a JupyterLab whose server runs without the ndif server extension; reports its message.
//
// node sidebar_missing.mjs LAB_URL TOKEN OUTPUT_FOLDER

import { session, shot } from "./lab.mjs";

const [labUrl, token, outputFolder] = process.argv.slice(2);

await session(outputFolder, async (page, seen) => {
  await page.goto(`${labUrl}lab?token=${token}`);
  await page.locator(".jp-LabShell").waitFor({ timeout: 120_000 });
  await page.locator(".lm-TabBar-tab", { hasText: "NDIF" }).click();
  const message = page.locator("#ndif-panel .ndif-message.ndif-missing");
  await message.waitFor({ timeout: 60_000 });
  seen.message = await message.textContent();
  await shot(page.locator("#ndif-panel"), outputFolder, "sidebar-missing.png", seen);
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
