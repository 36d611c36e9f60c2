// The chat demo in a real browser: headless Chromium (Debian's package) opens the chat
// page of node A and of node B; a message typed on A appears on B. Driven by the Rust
// test `integration/tests/browser.rs`, which starts the nodes and sets CHAT_A, CHAT_B,
// CHROMIUM and SCREENSHOT.
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const { chromium } = require("playwright-core");

test("a message typed on node A appears on node B", async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const a = await browser.newPage();
    const b = await browser.newPage();
    await a.goto(process.env.CHAT_A);
    await b.goto(process.env.CHAT_B);
    await a.waitForSelector("body[data-ready=true]");
    await b.waitForSelector("body[data-ready=true]");
    assert.strictEqual(await a.textContent("#node"), "A");
    assert.strictEqual(await b.textContent("#node"), "B");

    await a.fill("#name", "alice");
    await a.fill("#text", "hello from node A");
    await a.click("button[type=submit]");
    const line = b.locator("#log p", { hasText: "hello from node A" });
    await line.waitFor({ timeout: 30000 });
    assert.match(await line.textContent(), /alice \(node A\): hello from node A/);

    await b.fill("#name", "bob");
    await b.fill("#text", "hi alice, this is B");
    await b.click("button[type=submit]");
    await a.locator("#log p", { hasText: "hi alice, this is B" }).waitFor({ timeout: 30000 });

    await b.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  } finally {
    await browser.close();
  }
});
