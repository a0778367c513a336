// LLM mode in a real browser: the widget shows the bot's answer while the model writes it
// (`draft` frames), then the stored reply replaces the draft, once.
//
//   node tests/browser/llm.mjs http://127.0.0.1:PORT "QUESTION" "FINAL ANSWER START"
//
// The server runs with assistant.kind = "llm" against a model server that streams the answer
// slowly (tests/it/browser.rs starts both). Env: CHROMIUM_PATH (default /usr/bin/chromium).

import { chromium } from 'playwright-core';

const WAIT_MS = 15_000;
const [base, question, answerStart] = process.argv.slice(2);
if (!/^https?:\/\//.test(base || '') || !question || !answerStart) {
  console.error('usage: node tests/browser/llm.mjs http://127.0.0.1:PORT QUESTION ANSWER_START');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const host = new URL(base).hostname;

function fail(message) {
  console.error(`browser: FAIL ${message}`);
  process.exit(1);
}

const browser = await chromium.launch({
  executablePath,
  headless: true,
  timeout: WAIT_MS,
  args: [
    '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync',
    `--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE localhost , EXCLUDE ${host}`,
  ],
});
try {
  const page = await browser.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  await page.goto(`${base}/`, { timeout: WAIT_MS });
  await page.locator('#sb-panel[data-state="connected"]').waitFor({ state: 'attached', timeout: WAIT_MS });
  // Every text the draft bubble shows, as the page renders it.
  await page.evaluate(() => {
    window.drafts = [];
    const record = () => {
      const draft = document.querySelector('#sb-messages .sb-draft');
      const text = draft ? draft.textContent : null;
      if (text !== null && window.drafts[window.drafts.length - 1] !== text) window.drafts.push(text);
    };
    new MutationObserver(record).observe(document.getElementById('sb-messages'), {
      subtree: true, childList: true, characterData: true,
    });
  });
  await page.locator('#sb-input').fill(question);
  await page.locator('#sb-send').click({ timeout: WAIT_MS });
  const reply = page.locator('#sb-messages .sb-msg[data-author="bot"]:not(.sb-draft)');
  await reply.first().waitFor({ state: 'attached', timeout: WAIT_MS });
  const finals = await reply.allTextContents();
  const drafts = await page.evaluate(() => window.drafts);
  const left = await page.locator('#sb-messages .sb-draft').count();
  console.log(`browser: drafts ${JSON.stringify(drafts)}`);
  console.log(`browser: reply ${JSON.stringify(finals)}`);
  if (finals.length !== 1) fail(`one stored reply expected, the page shows ${finals.length}`);
  const final = finals[0];
  if (!final.startsWith(answerStart)) fail(`the reply should start with ${JSON.stringify(answerStart)}`);
  if (drafts.length < 2) fail(`the answer should show as it is written, saw ${drafts.length} drafts`);
  for (let i = 1; i < drafts.length; i++) {
    if (!drafts[i].startsWith(drafts[i - 1])) fail(`each draft should extend the last: ${JSON.stringify(drafts)}`);
  }
  if (!final.startsWith(drafts[drafts.length - 1])) fail('the reply should complete the last draft');
  if (left !== 0) fail('the draft should be gone once the reply is shown');
  if (errors.length) fail(`page errors: ${errors.join('; ')}`);
  console.log('browser: ok - the answer was shown as it was written, then stored once');
} finally {
  await browser.close();
}
