// End-to-end browser test of the web chat widget against a running Switchboard server.
//
//   cd tests/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci
//   node tests/browser/webchat.mjs http://127.0.0.1:PORT
//
// Env: CHROMIUM_PATH (default /usr/bin/chromium), SCREENSHOT (optional PNG path).
// Assumes only that the server serves the demo page at / and that every customer message gets
// at least one reply with author `bot`.

import { chromium } from 'playwright-core';

const WAIT_MS = 10_000;
const OVERALL_MS = 60_000;

const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/webchat.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshotPath = process.env.SCREENSHOT || '';
const host = new URL(base).hostname.replace(/^\[|\]$/g, '');

let passed = 0;
let browser = null;
let firstPage = null;
const pageErrors = [];

function log(line) {
  console.log(`browser: ${line}`);
}

function ok(what) {
  passed += 1;
  log(`ok ${passed} - ${what}`);
}

class Failure extends Error {}

function fail(message) {
  throw new Failure(message);
}

// Run `fn` (a promise-returning step) and turn a timeout into a clear failure message.
async function step(what, fn) {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof Failure) throw error;
    const detail = String((error && error.message) || error).split('\n')[0];
    fail(`${what}: ${detail}`);
  }
}

async function screenshot(page) {
  if (!screenshotPath || !page) return;
  try {
    await page.screenshot({ path: screenshotPath });
    log(`screenshot saved to ${screenshotPath}`);
  } catch (error) {
    log(`could not save screenshot: ${error.message}`);
  }
}

// The messages a page shows, in DOM order.
function messages(page) {
  return page.$$eval('#sb-messages .sb-msg', (nodes) =>
    nodes.map((n) => ({
      id: n.getAttribute('data-id') || '',
      seq: n.getAttribute('data-seq'),
      author: n.getAttribute('data-author'),
      text: n.textContent,
      pending: n.getAttribute('data-pending') === 'true' || n.classList.contains('sb-pending'),
      clientId: n.getAttribute('data-client-id') || '',
    })),
  );
}

// Wait until `predicate(messages)` holds in `page`; returns the messages.
async function waitForMessages(page, what, predicate) {
  const deadline = Date.now() + WAIT_MS;
  let last = [];
  while (Date.now() < deadline) {
    last = await messages(page);
    if (predicate(last)) return last;
    await page.waitForTimeout(100);
  }
  const shown = last.map((m) => `${m.author}${m.pending ? '(pending)' : ''}:${JSON.stringify(m.text)}`);
  fail(`timed out after ${WAIT_MS / 1000}s waiting for ${what}; page shows [${shown.join(', ')}]`);
}

async function openChat(page, what) {
  page.on('pageerror', (error) => pageErrors.push(`${what}: ${error.message}`));
  await step(`${what}: load ${base}/`, () => page.goto(`${base}/`, { timeout: WAIT_MS }));
  await waitPanelReady(page, what);
}

async function waitPanelReady(page, what) {
  await step(`${what}: waiting for #sb-panel to be visible`, () =>
    page.locator('#sb-panel').waitFor({ state: 'visible', timeout: WAIT_MS }));
  await step(`${what}: waiting for the widget to connect (#sb-panel[data-state=connected])`, () =>
    page.locator('#sb-panel[data-state="connected"]').waitFor({ state: 'attached', timeout: WAIT_MS }));
}

async function send(page, text, what, { enter = false } = {}) {
  await step(`${what}: typing into #sb-input`, () =>
    page.locator('#sb-input').pressSequentially(text, { delay: 5, timeout: WAIT_MS }));
  if (enter) {
    await step(`${what}: pressing Enter in #sb-input`, () => page.locator('#sb-input').press('Enter', { timeout: WAIT_MS }));
  } else {
    await step(`${what}: clicking #sb-send`, () => page.locator('#sb-send').click({ timeout: WAIT_MS }));
  }
  const left = await page.locator('#sb-input').inputValue();
  if (left) fail(`${what}: #sb-input should be empty after sending, has ${JSON.stringify(left)}`);
}

function ackedCustomer(list, text) {
  return list.find((m) => m.author === 'customer' && m.text === text && !m.pending && m.id);
}

function checkNoDuplicates(list, what) {
  const ids = list.map((m) => m.id).filter(Boolean);
  const dupes = ids.filter((id, i) => ids.indexOf(id) !== i);
  if (dupes.length) fail(`${what}: message ids shown more than once: ${[...new Set(dupes)].join(', ')}`);
  const seqs = list.filter((m) => m.seq !== null).map((m) => Number(m.seq));
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] < seqs[i - 1]) fail(`${what}: messages are not in seq order: ${seqs.join(', ')}`);
  }
}

async function main() {
  log(`server ${base}, chromium ${executablePath}`);
  browser = await step('launching chromium', () =>
    chromium.launch({
      executablePath,
      headless: true,
      timeout: WAIT_MS,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
        // No DNS for anything but the server under test.
        `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost , EXCLUDE ${host}`,
      ],
    }));
  log(`chromium ${browser.version()} launched`);
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });

  // 1. The demo page opens the panel and the widget connects.
  const page1 = await context.newPage();
  firstPage = page1;
  await openChat(page1, 'first tab');
  const box = await page1.locator('#sb-panel').boundingBox();
  if (!box || Math.abs(box.width - 360) > 2 || Math.abs(box.height - 520) > 2) {
    fail(`first tab: #sb-panel should be 360x520 on desktop (is widget.css served?), got ${box ? `${box.width}x${box.height}` : 'no box'}`);
  }
  for (const selector of ['#sb-launcher', '#sb-messages', '#sb-input', '#sb-send', '#sb-status', '#sb-typing']) {
    if ((await page1.locator(selector).count()) !== 1) fail(`first tab: ${selector} missing`);
  }
  const liveAttr = await page1.locator('#sb-messages').getAttribute('aria-live');
  if (liveAttr !== 'polite') fail(`first tab: #sb-messages should have aria-live="polite", has ${liveAttr}`);
  ok('demo page opens the chat panel and the widget connects');

  // 2. A customer message is acknowledged and answered by the bot.
  const first = 'hello from the browser';
  await send(page1, first, 'first tab');
  let list1 = await waitForMessages(page1, `"${first}" to be acknowledged (not pending)`, (l) => ackedCustomer(l, first));
  const firstId = ackedCustomer(list1, first).id;
  ok(`customer message acknowledged (id ${firstId})`);

  list1 = await waitForMessages(page1, 'a reply with author bot', (l) => l.some((m) => m.author === 'bot' && m.id));
  const botReply = list1.find((m) => m.author === 'bot' && m.id);
  ok(`bot replied: ${JSON.stringify(botReply.text.slice(0, 80))}`);
  const token = await page1.evaluate(() => localStorage.getItem('switchboard.token'));
  if (!token) fail('first tab: no session token stored in localStorage (switchboard.token)');
  const pending = await page1.evaluate(() => localStorage.getItem('switchboard.pending'));
  if (pending && JSON.parse(pending).length) fail(`first tab: acknowledged message still pending in localStorage: ${pending}`);
  checkNoDuplicates(list1, 'first tab');

  // 3. A reload resumes the session and shows both messages from history.
  await step('first tab: reload', () => page1.reload({ timeout: WAIT_MS }));
  await waitPanelReady(page1, 'first tab after reload');
  list1 = await waitForMessages(page1, 'the history after reload', (l) =>
    l.some((m) => m.id === firstId) && l.some((m) => m.id === botReply.id));
  checkNoDuplicates(list1, 'first tab after reload');
  const tokenAfter = await page1.evaluate(() => localStorage.getItem('switchboard.token'));
  if (!tokenAfter) fail('first tab: session token lost after reload');
  ok('reload resumes the session with its history');

  // 4. A second tab in the same browser shows the same conversation.
  const page2 = await context.newPage();
  await openChat(page2, 'second tab');
  let list2 = await waitForMessages(page2, 'the same history in the second tab', (l) =>
    l.some((m) => m.id === firstId) && l.some((m) => m.id === botReply.id));
  checkNoDuplicates(list2, 'second tab');
  ok('second tab shows the same history');

  // 5. A message sent from the second tab shows up in the first tab too.
  const second = 'and hello from a second tab';
  const botsBefore = list1.filter((m) => m.author === 'bot').length;
  await send(page2, second, 'second tab', { enter: true });
  list2 = await waitForMessages(page2, `"${second}" to be acknowledged in the second tab`, (l) => ackedCustomer(l, second));
  const secondId = ackedCustomer(list2, second).id;
  list1 = await waitForMessages(page1, `"${second}" (id ${secondId}) to appear in the first tab`, (l) =>
    l.some((m) => m.id === secondId && m.author === 'customer' && m.text === second));
  ok('a message sent in the second tab appears in the first tab');

  list1 = await waitForMessages(page1, 'the bot reply to the second message in the first tab', (l) =>
    l.filter((m) => m.author === 'bot').length > botsBefore);
  list2 = await waitForMessages(page2, 'the bot reply to the second message in the second tab', (l) =>
    l.filter((m) => m.author === 'bot').length > botsBefore);
  checkNoDuplicates(list1, 'first tab');
  checkNoDuplicates(list2, 'second tab');
  const order = list1.filter((m) => m.id).map((m) => m.id);
  if (order.indexOf(firstId) > order.indexOf(secondId)) fail('first tab: messages out of order');
  ok('both tabs show the reply, in order, without duplicates');

  // 6. The demo shop, as its signed-in customer: a refund collected over turns and approved by
  //    the workflow, an order taken with buttons, a shipping question in Catalan answered with
  //    a citation in Catalan, and a request for a person that hands the conversation to the
  //    queue.
  const signedIn = await page1.locator('.signed-in').textContent();
  if (!signedIn || !signedIn.includes('ana@example.com')) fail(`demo page: not signed in as the demo customer: ${signedIn}`);
  async function ask(text, what, predicate) {
    const before = (await messages(page1)).length;
    await send(page1, text, what, { enter: true });
    const list = await waitForMessages(page1, what, (l) => l.slice(before).some((m) => m.author !== 'customer' && predicate(m.text)));
    return list.slice(before).filter((m) => m.author !== 'customer').map((m) => m.text).join(' | ');
  }
  await ask('I want a refund', 'the bot to ask for the order number', (t) => t.includes('order number'));
  await ask('1042', 'the bot to ask for the reason', (t) => t.includes('What is the reason?'));
  const approved = await ask('the mugs arrived broken', 'the refund to be approved',
    (t) => t.includes('your refund request (45.00 EUR) for order 1042 has been approved'));
  ok(`refund collected over three turns and approved: ${JSON.stringify(approved.slice(0, 100))}`);
  // An order: the product found in the catalogue, the quantity and the confirmation picked
  // with the buttons under the bot's message, the order approved by the workflow and told.
  async function pick(label, what, predicate) {
    const before = (await messages(page1)).length;
    await step(`${what}: clicking the "${label}" button`, () =>
      page1.locator('.sb-choices').getByRole('button', { name: label, exact: true }).click({ timeout: WAIT_MS }));
    const list = await waitForMessages(page1, what, (l) => l.slice(before).some((m) => m.author !== 'customer' && predicate(m.text)));
    return list.slice(before).filter((m) => m.author !== 'customer').map((m) => m.text).join(' | ');
  }
  await ask("I'd like to order a teapot", 'the bot to ask how many teapots', (t) => t.includes('How many would you like?'));
  const summary = await pick('2', 'the order summary', (t) => t.includes('Shall I place it?'));
  if (!summary.includes('Total: 70.00 EUR')) fail(`order summary without its total: ${JSON.stringify(summary)}`);
  const ordered = await pick('Yes, place the order', 'the order to be approved',
    (t) => t.includes('your order request (70.00 EUR) has been approved'));
  ok(`order taken with buttons and approved: ${JSON.stringify(ordered.slice(0, 100))}`);
  const catalan = await ask("Quant triga l'enviament a Girona?", 'a cited answer in Catalan', (t) => t.includes('Font: Enviaments'));
  ok(`Catalan question answered with a citation: ${JSON.stringify(catalan.slice(0, 80))}`);
  const handoff = await ask('let me talk to a human', 'the handoff to a person', (t) => t.includes('passing you to a colleague'));
  ok(`handed to a person: ${JSON.stringify(handoff)}`);

  if (pageErrors.length) fail(`uncaught errors in the page: ${pageErrors.join('; ')}`);
  ok('no uncaught errors in the page');

  await page1.bringToFront();
  await screenshot(page1);
  await browser.close();
  browser = null;
}

const watchdog = setTimeout(() => {
  console.error(`browser: FAIL - the whole run took longer than ${OVERALL_MS / 1000}s`);
  console.log(`browser: ${passed} passed, 1 failed`);
  process.exit(1);
}, OVERALL_MS);

try {
  await main();
  clearTimeout(watchdog);
  console.log(`browser: ${passed} passed, 0 failed`);
  process.exit(0);
} catch (error) {
  clearTimeout(watchdog);
  const message = error instanceof Failure ? error.message : (error && error.stack) || String(error);
  console.error(`browser: FAIL - ${message}`);
  if (pageErrors.length) console.error(`browser: page errors: ${pageErrors.join('; ')}`);
  await screenshot(firstPage);
  if (browser) await browser.close().catch(() => {});
  console.log(`browser: ${passed} passed, 1 failed`);
  process.exit(1);
}
