// Logs in to a JupyterHub as a user, opens their JupyterLab and the NDIF sidebar: the hub service's models, who the
// sidebar says is signed in, and the jobs it lists (with their owners' labels, shown to an admin); then opens the
// service's API in the browser, which logs in through JupyterHub's OAuth.
//
// node hub_sidebar.mjs HUB_URL USER OUTPUT_FOLDER
// Prints one JSON line with what it saw; screenshots go to OUTPUT_FOLDER.

import { session, shot } from "./lab.mjs";

const [hubUrl, user, outputFolder] = process.argv.slice(2);

await session(outputFolder, async (page, seen) => {
  await page.goto(`${hubUrl}hub/login`);
  await page.locator("#username_input").fill(user);
  await page.locator("#password_input").fill("any password: the dummy authenticator");
  await page.locator("#login_submit").click();
  await page.waitForURL(/\/(hub\/home|hub\/spawn-pending|user\/)/, { timeout: 60_000 });
  await page.goto(`${hubUrl}user/${user}/lab`);
  await page.locator(".lm-TabBar-tab", { hasText: "NDIF" }).click({ timeout: 120_000 });
  const panel = page.locator("#ndif-panel");
  await panel.locator(".ndif-model").first().waitFor({ timeout: 60_000 });
  await panel.locator(".ndif-job").first().waitFor({ timeout: 30_000 });
  await panel.locator(".ndif-user", { hasText: "signed in as" }).waitFor({ timeout: 30_000 });
  seen.models = await panel.locator(".ndif-model > summary").allTextContents();
  seen.user = await panel.locator(".ndif-user").textContent();
  seen.jobs = await panel.locator(".ndif-job").count();
  seen.owners = [...new Set(await panel.locator(".ndif-job-owner").allTextContents())].sort();
  seen.message = await panel.locator(".ndif-message").textContent();
  await shot(panel, outputFolder, `hub-sidebar-${user}.png`, seen);

  // The service itself, opened in the browser: JupyterHub's OAuth login, then the API as this user.
  await page.goto(`${hubUrl}services/ndif/api/jobs`);
  const answer = JSON.parse(await page.locator("body").textContent());
  seen.serviceOwners = [...new Set(answer.jobs.map((job) => job.owner))].sort();
  seen.serviceUrl = page.url();
}).catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
