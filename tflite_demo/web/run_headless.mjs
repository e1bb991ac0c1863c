// Opens the demo page in headless Chromium (puppeteer-core, the system Chromium), waits
// for `window.demoResults`, prints it as JSON on stdout and optionally saves a
// screenshot. Used by tests/demo_web_test.py and bench/web_bench.py.
//
//   node run_headless.mjs URL [--screenshot=PATH] [--timeout=MS] [--chromium=PATH]
//
// Exit status: 0 when the page reports ok, 1 when it reports an error (the JSON still
// goes to stdout), 2 on a usage error or when the page never finishes.
import puppeteer from 'puppeteer-core';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const a = args.find((s) => s.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : fallback;
};
const url = args.find((s) => !s.startsWith('--'));
if (!url) {
  console.error('usage: node run_headless.mjs URL [--screenshot=PATH] [--timeout=MS] ' +
                '[--chromium=PATH]');
  process.exit(2);
}
const timeout = Number(opt('timeout', 60000));
const executablePath = opt('chromium', process.env.CHROMIUM || '/usr/bin/chromium');

const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start.
  args: ['--no-sandbox', '--headless=new', '--disable-gpu', '--disable-dev-shm-usage'],
});
let status = 2;
try {
  const page = await browser.newPage();
  await page.setViewport({width: 1000, height: 640});
  const errors = [];
  const requests = [];
  page.on('request', (r) => requests.push(r.url()));
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()}`));
  page.on('response', (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()}: ${r.url()}`);
  });
  await page.goto(url, {waitUntil: 'load'});
  await page.waitForFunction('window.demoResults !== undefined', {timeout});
  const results = await page.evaluate(() => window.demoResults);
  results.page_errors = errors;
  results.requests = requests;  // everything the page fetched (the test checks: local only)
  const shot = opt('screenshot');
  if (shot) await page.screenshot({path: shot, fullPage: true});
  process.stdout.write(JSON.stringify(results) + '\n');
  status = results.ok ? 0 : 1;
} catch (e) {
  console.error(`run_headless: ${e.message || e}`);
} finally {
  await browser.close();
}
process.exit(status);
