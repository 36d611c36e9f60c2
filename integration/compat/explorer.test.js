// The emulator's explorer page (/$explorer) in a real browser: Debian's headless Chromium,
// driven by playwright-core. Creates a queue, sends a message, peeks it, resubmits a
// dead-lettered message, moves the manual clock and deletes the queue, all through the
// page. Driven by emulator/tests/explorer.rs, which starts the emulator, dead-letters a
// message in `orders` first, and sets EXPLORER_URL, CHROMIUM and ARTIFACTS.
"use strict";
const test = require("node:test");
const assert = require("node:assert");
const path = require("node:path");
const { chromium } = require("playwright-core");

test("the explorer creates, sends, peeks, resubmits dead-letters and deletes", async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM,
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  const shot = (name) => path.join(process.env.ARTIFACTS, name);
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 800 } });
    page.on("dialog", (dialog) => dialog.accept());
    const errors = [];
    page.on("pageerror", (e) => errors.push(e.message));
    await page.goto(process.env.EXPLORER_URL);
    // The emulator runs on the default key: the page connects by itself.
    await page.waitForSelector("body[data-connected=true]");
    assert.strictEqual(await page.inputValue("#key-name"), "RootManageSharedAccessKey");

    // Create a queue.
    await page.fill("#new-queue-name", "made-in-explorer");
    await page.click("#new-queue button");
    const made = page.locator('#queues a[data-path="made-in-explorer"]');
    await made.waitFor();

    // Send a test message to it, then see it counted and peeked.
    await made.click();
    await page.fill("#send-body", "hello from the explorer");
    await page.fill("#send-label", "greeting");
    await page.fill("#send-property", "color=blue");
    await page.click("#send button[type=submit]");
    await page.locator('#queues a[data-path="made-in-explorer"] + .count[data-active="1"]').waitFor();
    await page.click("#peek");
    const row = page.locator("#messages tbody tr", { hasText: "hello from the explorer" });
    await row.waitFor();
    assert.match(await row.textContent(), /greeting/);
    // Shown as the value, not as its header text ("\"blue\"").
    assert.match(await row.textContent(), /"color": "blue"/);
    // Peeking twice changes nothing: no lock, no delivery count.
    await page.click("#peek");
    await row.waitFor();
    assert.match(await row.textContent(), /"deliveryCount": 0/);
    // Only what the page set: none of the browser's own headers became properties.
    assert.doesNotMatch(await row.textContent(), /sec-/i);
    await page.screenshot({ path: shot("explorer-1-send-and-peek.png"), fullPage: true });

    // The dead-lettered message of `orders`: peek it, resubmit it.
    await page.click('#queues a[data-path="orders"]');
    await page.locator('#queues a[data-path="orders"] + .count[data-dead-letter="1"]').waitFor();
    await page.selectOption("#subqueue", "dlq");
    const dead = page.locator("#messages tbody tr", { hasText: "to dead-letter" });
    await dead.waitFor();
    assert.match(await dead.textContent(), /MaxDeliveryCountExceeded/i);
    await page.screenshot({ path: shot("explorer-2-dead-letter.png"), fullPage: true });
    await page.click("#resubmit");
    await page.locator("#status", { hasText: "1 message(s) resubmitted to orders" }).waitFor();
    await page.locator('#queues a[data-path="orders"] + .count[data-active="1"][data-dead-letter="0"]').waitFor();
    await page.screenshot({ path: shot("explorer-3-resubmitted.png"), fullPage: true });

    // A topic with a subscription, made here; the subscription's rules are shown.
    await page.fill("#new-topic-name", "news");
    await page.click("#new-topic button");
    await page.click('#topics a[data-path="news"]');
    await page.fill("#new-subscription-name", "all");
    await page.click("#new-subscription button");
    await page.click('#topics a[data-path="news/Subscriptions/all"]');
    await page.locator("#rules li", { hasText: "$Default" }).waitFor();
    await page.screenshot({ path: shot("explorer-4-subscription.png"), fullPage: true });

    // The manual clock moves from the page.
    const before = await page.textContent("#clock");
    assert.match(before, /manual/);
    await page.fill("#advance-seconds", "3600");
    await page.click("#advance button");
    await page.waitForFunction((was) => document.getElementById("clock").textContent !== was, before);

    // Delete the queue made here.
    await made.click();
    await page.click("#delete-entity");
    await made.waitFor({ state: "detached" });
    assert.deepStrictEqual(errors, []);
  } finally {
    await browser.close();
  }
});
