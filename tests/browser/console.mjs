// End-to-end browser test of the agent console against a running Switchboard server with
// the demo shop, whose database already holds three accounts (see tests/it/browser.rs):
// agent@demo.test (team support), finance@demo.test (back office, finance) and
// admin@demo.test, all with the password in CONSOLE_PASSWORD.
//
//   node tests/browser/console.mjs http://127.0.0.1:PORT
//
// Env: CHROMIUM_PATH (default /usr/bin/chromium), CONSOLE_PASSWORD, SCREENSHOT_DIR (where the
// key screens are saved; default: no screenshots).

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const WAIT_MS = 20_000;
const OVERALL_MS = 240_000;
const base = (process.argv[2] || '').replace(/\/+$/, '');
if (!/^https?:\/\//.test(base)) {
  console.error('usage: node tests/browser/console.mjs http://127.0.0.1:PORT');
  process.exit(2);
}
const password = process.env.CONSOLE_PASSWORD || '';
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const screenshots = process.env.SCREENSHOT_DIR || '';
const host = new URL(base).hostname;
if (screenshots) mkdirSync(screenshots, { recursive: true });

let passed = 0;
let browser = null;
let otherBrowser = null;

function launch() {
  return chromium.launch({
    executablePath, headless: true, timeout: WAIT_MS,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost , EXCLUDE ${host}`],
  });
}
const pageErrors = [];
const log = (line) => console.log(`console: ${line}`);
const ok = (what) => { passed += 1; log(`ok ${passed} - ${what}`); };
class Failure extends Error {}
const fail = (message) => { throw new Failure(message); };

async function step(what, fn) {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof Failure) throw error;
    fail(`${what}: ${String((error && error.message) || error).split('\n')[0]}`);
  }
}

async function shot(page, name) {
  if (!screenshots) return;
  const path = join(screenshots, `${name}.png`);
  await page.screenshot({ path, fullPage: false });
  log(`screenshot ${path}`);
}

async function newPage(context, what) {
  const page = await context.newPage();
  page.on('pageerror', (error) => pageErrors.push(`${what}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && /Content Security Policy|Refused to/.test(message.text())) {
      pageErrors.push(`${what}: ${message.text()}`);
    }
  });
  return page;
}

// ---- the customer's side: the demo page's widget ---------------------------------------
function widgetMessages(page) {
  return page.$$eval('#sb-messages .sb-msg', (nodes) => nodes.map((n) => ({
    author: n.getAttribute('data-author'), text: n.textContent, id: n.getAttribute('data-id') || '',
  })));
}

async function waitWidget(page, what, predicate) {
  const deadline = Date.now() + WAIT_MS;
  let last = [];
  while (Date.now() < deadline) {
    last = await widgetMessages(page);
    if (predicate(last)) return last;
    await page.waitForTimeout(150);
  }
  fail(`timed out waiting for ${what}; widget shows ${JSON.stringify(last.map((m) => `${m.author}:${m.text}`))}`);
}

async function openWidget(context, what) {
  const page = await newPage(context, what);
  await step(`${what}: open the demo page`, () => page.goto(`${base}/`, { timeout: WAIT_MS }));
  await step(`${what}: widget connects`, () => page.locator('#sb-panel[data-state="connected"]').waitFor({ state: 'attached', timeout: WAIT_MS }));
  return page;
}

async function say(page, text, what) {
  await step(`${what}: type`, () => page.locator('#sb-input').pressSequentially(text, { delay: 5, timeout: WAIT_MS }));
  await step(`${what}: send`, () => page.locator('#sb-input').press('Enter', { timeout: WAIT_MS }));
}

// Say `text` and wait for a reply (not the customer's) that `predicate` accepts.
async function ask(page, text, what, predicate) {
  const before = (await widgetMessages(page)).length;
  await say(page, text, what);
  const list = await waitWidget(page, what, (l) => l.slice(before).some((m) => m.author !== 'customer' && predicate(m)));
  return list.slice(before).filter((m) => m.author !== 'customer');
}

// ---- the console's side -------------------------------------------------------------------
async function signIn(context, email, what) {
  const page = await newPage(context, what);
  await step(`${what}: open the sign-in page`, () => page.goto(`${base}/console/login`, { timeout: WAIT_MS }));
  await page.fill('#login-email', email);
  await page.fill('#login-password', password);
  await step(`${what}: sign in`, async () => {
    await Promise.all([page.waitForURL(/\/console\/(queue|tasks)/, { timeout: WAIT_MS }), page.click('#login-submit')]);
  });
  return page;
}

async function openInQueue(page, view, predicate, what) {
  await page.click(`.views button[data-view="${view}"]`);
  const deadline = Date.now() + WAIT_MS;
  while (Date.now() < deadline) {
    const items = await page.$$eval('#queue-list .queue-item', (nodes) => nodes.map((n) => ({
      id: n.getAttribute('data-id'), status: n.getAttribute('data-status'), text: n.textContent,
    })));
    const found = items.find(predicate);
    if (found) {
      await page.click(`#queue-list .queue-item[data-id="${found.id}"]`);
      await page.locator(`#conversation[data-id="${found.id}"]`).waitFor({ timeout: WAIT_MS });
      return found.id;
    }
    await page.waitForTimeout(200);
  }
  fail(`${what}: no matching conversation in the ${view} view`);
}

async function historyHas(page, text, what) {
  await step(what, () => page.locator('#history .msg .text', { hasText: text }).first().waitFor({ timeout: WAIT_MS }));
}

async function main() {
  log(`server ${base}, chromium ${executablePath}`);
  browser = await step('launching chromium', launch);
  const viewport = { viewport: { width: 1400, height: 860 } };

  // 1. A visitor asks for a person; the agent sees it with the handoff package, claims it and
  //    replies; the visitor sees the reply live while the bot stays silent; typing shows both
  //    ways; the agent hands back and the bot answers the next message.
  const customer = await browser.newContext(viewport);
  const visitor = await openWidget(customer, 'visitor');
  await ask(visitor, 'hello', 'a greeting', (m) => m.author === 'bot');
  await ask(visitor, 'let me talk to a human', 'the handoff', (m) => m.text.includes('passing you to a colleague'));
  ok('the visitor asked for a person');

  const agentContext = await browser.newContext(viewport);
  const agent = await signIn(agentContext, 'agent@demo.test', 'agent');
  await openInQueue(agent, 'unassigned', (i) => i.status === 'queued', 'agent');
  const reason = await agent.locator('#handoff-reason').textContent();
  if (reason !== 'customer_request') fail(`handoff package reason is ${reason}`);
  const lastMessage = await agent.locator('#handoff-last').textContent();
  if (lastMessage !== 'let me talk to a human') fail(`handoff package last message is ${lastMessage}`);
  await historyHas(agent, 'let me talk to a human', 'the history shows the request');
  ok('the agent sees the conversation in the queue with the handoff package');
  await shot(agent, '1-queue-handoff');

  await agent.click('#claim');
  await agent.locator('#conversation[data-status="agent"]').waitFor({ timeout: WAIT_MS });
  ok('the agent claimed it');
  // Typing is live only (never stored): the customer keeps typing, as people do, so the
  // widget repeats its typing signal every two seconds until the agent's view shows it, even
  // if that view's event stream was reconnecting when the first signal went out.
  await step('the customer typing shows in the console', async () => {
    const indicator = agent.locator('#customer-typing:not([hidden])');
    const deadline = Date.now() + WAIT_MS;
    for (const key of 'I am typing a question about my order'.repeat(4)) {
      await visitor.locator('#sb-input').press(key === ' ' ? 'Space' : key);
      if (await indicator.isVisible()) return;
      if (Date.now() > deadline) break;
      await visitor.waitForTimeout(250);
    }
    await indicator.waitFor({ timeout: 1000 });
  });
  await visitor.locator('#sb-input').fill('');
  ok('the customer\'s typing shows in the console');
  await agent.locator('#reply-text').pressSequentially('Hello, this is Alex from the shop', { delay: 10 });
  await step('the agent typing shows in the widget', () => visitor.locator('#sb-typing:not([hidden])').waitFor({ timeout: WAIT_MS }));
  ok('the agent\'s typing shows in the widget');
  await agent.click('#send-reply');
  await waitWidget(visitor, 'the agent\'s reply in the widget', (l) => l.some((m) => m.author === 'agent' && m.text.includes('Alex from the shop')));
  ok('the visitor sees the agent\'s reply live');
  const botsBefore = (await widgetMessages(visitor)).filter((m) => m.author === 'bot').length;
  await say(visitor, 'my kettle arrived broken', 'the visitor writes to the agent');
  await historyHas(agent, 'my kettle arrived broken', 'the agent sees the visitor\'s message live');
  await visitor.waitForTimeout(1500);
  const botsAfter = (await widgetMessages(visitor)).filter((m) => m.author === 'bot').length;
  if (botsAfter !== botsBefore) fail('the bot answered while the agent owned the conversation');
  ok('the bot stays silent while the agent owns the conversation');
  await shot(agent, '2-conversation-claimed');
  await shot(visitor, '3-widget-agent-reply');
  await agent.click('#hand-back');
  await agent.locator('#conversation[data-status="bot"]').waitFor({ timeout: WAIT_MS });
  const answer = await ask(visitor, "Quant triga l'enviament a Girona?", 'the bot answers after the hand-back', (m) => m.author === 'bot');
  ok(`handed back: the bot answers again (${JSON.stringify(answer[0].text.slice(0, 60))})`);

  // 2. An agent takes over a conversation the bot is still handling. (The demo page signs
  //    every browser in as the same shop customer, so each new browser resumes the same
  //    conversation.) The customer is on another device: a browser of their own, so their
  //    page is the one in front there. (As a second window of the agent's browser, behind the
  //    agent's, Chromium 156 headless held the reply back from that page: 3 runs out of 3
  //    without a call into the page first, and about 1 in 3 with bringToFront.)
  otherBrowser = await step('launching a second chromium', launch);
  const second = await otherBrowser.newContext(viewport);
  const other = await openWidget(second, 'the visitor in another browser');
  await ask(other, 'What payment methods do you accept?', 'a question for the bot', (m) => m.author === 'bot');
  await agent.reload();
  await openInQueue(agent, 'all', (i) => i.status === 'bot' && i.text.includes('payment methods'), 'take over');
  await agent.click('#take-over');
  await agent.locator('#conversation[data-status="agent"]').waitFor({ timeout: WAIT_MS });
  // The pane is rebuilt whenever the conversation changes (here: a label saved while the
  // agent writes); the draft must survive it.
  const draft = 'I took over from the bot; how can I help?';
  await agent.fill('#reply-text', draft);
  const firstBox = await agent.$('#reply-text');
  await agent.fill('#labels', 'payments');
  await agent.click('#save-labels');
  await step('the pane rebuilt after the label', () => agent.waitForFunction((box) => !box.isConnected, firstBox, { timeout: WAIT_MS }));
  const kept = await agent.inputValue('#reply-text');
  if (kept !== draft) fail(`the reply draft was lost when the pane was rebuilt: ${JSON.stringify(kept)}`);
  ok('the reply draft survives the pane being rebuilt');
  await agent.click('#send-reply');
  await step('the reply box cleared after sending', () => agent.waitForFunction(() => document.getElementById('reply-text').value === '', null, { timeout: WAIT_MS }));
  await waitWidget(other, 'the reply after a takeover', (l) => l.some((m) => m.author === 'agent' && m.text.includes('took over')));
  ok('an agent took over a conversation the bot was handling');
  await agent.click('#hand-back');
  await agent.locator('#conversation[data-status="bot"]').waitFor({ timeout: WAIT_MS });

  // 3. A finance user approves a large refund in the tasks view; the customer is told.
  const shopper = await browser.newContext(viewport);
  const buyer = await openWidget(shopper, 'refund visitor');
  await ask(buyer, 'I want a refund', 'the bot asks for the order', (m) => m.text.includes('order number'));
  await ask(buyer, '1043', 'the bot asks for the reason', (m) => m.text.includes('reason'));
  const waiting = await ask(buyer, 'the kettle leaks', 'the refund waits for approval', (m) => m.text.includes('1043'));
  ok(`the large refund waits for approval: ${JSON.stringify(waiting.map((m) => m.text).join(' | ').slice(0, 120))}`);
  const financeContext = await browser.newContext(viewport);
  const finance = await signIn(financeContext, 'finance@demo.test', 'finance');
  await step('the refund in the finance queue', () => finance.locator('#task-list .task-item[data-type="refund"][data-status="awaiting_approval"]').first().waitFor({ timeout: WAIT_MS }));
  await finance.locator('#task-list .task-item[data-type="refund"][data-status="awaiting_approval"]').first().click();
  await finance.locator('#approve').waitFor({ timeout: WAIT_MS });
  await shot(finance, '4-tasks-view');
  await finance.fill('#task-reason', 'receipt checked');
  await finance.click('#approve');
  await step('the task shows approved', () => finance.locator('#task-detail[data-status="approved"]').waitFor({ timeout: WAIT_MS }));
  const audit = await finance.locator('#audit').textContent();
  if (!audit.includes('receipt checked')) fail(`the audit trail lacks the reason: ${audit}`);
  await waitWidget(buyer, 'the approval told in the widget', (l) => l.some((m) => m.author !== 'customer' && /approved/i.test(m.text) && m.text.includes('1043')));
  ok('finance approved the refund and the customer was told in the widget');

  // 4. Access control in the browser.
  const agentOnAdmin = await agent.goto(`${base}/console/admin`);
  if (agentOnAdmin.status() !== 403 || !(await agent.locator('#forbidden').count())) fail('an agent reached the admin page');
  const financeOnQueue = await finance.goto(`${base}/console/queue`);
  if (financeOnQueue.status() !== 403) fail('a back-office user reached the conversations');
  const csrfless = await agent.evaluate(async () => (await fetch('/console/api/me/availability', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ availability: 'online' }),
  })).status);
  if (csrfless !== 403) fail(`a request without the CSRF token got ${csrfless}`);
  const anonymous = await browser.newContext(viewport);
  const stranger = await newPage(anonymous, 'anonymous');
  await stranger.goto(`${base}/console/queue`);
  if (!stranger.url().endsWith('/console/login')) fail(`an anonymous visitor saw ${stranger.url()}`);
  const anonymousApi = await stranger.evaluate(async () => (await fetch('/console/api/queue')).status);
  if (anonymousApi !== 401) fail(`an anonymous API call got ${anonymousApi}`);
  ok('access control: no admin page for agents, no conversations for finance, no CSRF-less change, nothing for strangers');

  // 5. Out of hours: the admin closes the support team; a customer is told when people are back.
  const adminContext = await browser.newContext(viewport);
  const admin = await signIn(adminContext, 'admin@demo.test', 'admin');
  await admin.goto(`${base}/console/admin`);
  await admin.locator('#teams tr').nth(1).waitFor({ timeout: WAIT_MS });
  const days = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];
  const closedDay = days[(new Date().getUTCDay() + 3) % 7];
  await admin.fill('#team-form input[name="name"]', 'support');
  await admin.fill('#team-form input[name="hours"]', JSON.stringify({ timezone: 'UTC', [closedDay]: '00:00-00:01' }));
  await admin.selectOption('#team-form select[name="out_of_hours"]', 'queue');
  await admin.click('#team-form button[type="submit"]');
  await step('the team shows closed', () => admin.locator('#teams td', { hasText: 'closed' }).first().waitFor({ timeout: WAIT_MS }));
  await shot(admin, '5-admin');
  const late = await browser.newContext(viewport);
  const night = await openWidget(late, 'out-of-hours visitor');
  const told = await ask(night, 'let me talk to a human', 'the out-of-hours notice', (m) => m.text.includes('We are back on'));
  ok(`out of hours the customer is told: ${JSON.stringify(told.find((m) => m.text.includes('We are back')).text)}`);
  await shot(night, '6-widget-out-of-hours');

  // 6. Reports with charts.
  await admin.goto(`${base}/console/reports`);
  await step('the report loads', () => admin.locator('body[data-loaded="true"]').waitFor({ timeout: WAIT_MS }));
  const total = await admin.locator('#figure-total .value').textContent();
  if (Number(total) < 1) fail(`the report counts ${total} conversations`);
  const handoffs = await admin.locator('#figure-handoff .value').textContent();
  if (handoffs !== '100%') fail(`the report shows a handoff rate of ${handoffs}`);
  const drawn = await admin.$$eval('canvas', (nodes) => nodes.filter((n) => n.width > 0 && n.height > 0).length);
  if (drawn < 5) fail(`only ${drawn} charts drawn`);
  ok(`reports: ${total} conversations, ${drawn} charts drawn by the vendored Chart.js`);
  await shot(admin, '7-reports');

  if (pageErrors.length) fail(`errors in the pages: ${pageErrors.join('; ')}`);
  ok('no page errors and no Content-Security-Policy refusals');
  await otherBrowser.close();
  otherBrowser = null;
  await browser.close();
  browser = null;
}

const watchdog = setTimeout(() => {
  console.error(`console: FAIL - the whole run took longer than ${OVERALL_MS / 1000}s`);
  console.log(`console: ${passed} passed, 1 failed`);
  process.exit(1);
}, OVERALL_MS);

try {
  await main();
  clearTimeout(watchdog);
  console.log(`console: ${passed} passed, 0 failed`);
  process.exit(0);
} catch (error) {
  clearTimeout(watchdog);
  console.error(`console: FAIL - ${error instanceof Failure ? error.message : (error && error.stack) || error}`);
  if (pageErrors.length) console.error(`console: page errors: ${pageErrors.join('; ')}`);
  if (otherBrowser) await otherBrowser.close().catch(() => {});
  if (browser) await browser.close().catch(() => {});
  console.log(`console: ${passed} passed, 1 failed`);
  process.exit(1);
}
