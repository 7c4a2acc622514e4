// Drives the web console in Debian's Chromium against a real server with
// a real VM: a wrong password is refused, log in, create a VM through the
// wizard (an invalid name first, to see the API's error beside its field),
// follow its create operation, watch it run, read its serial console,
// connect its graphical console, stop it (Escape cancelling the first
// confirmation), delete it and find that on the operations page; then check
// that a viewer sees no mutating controls and no console. Screenshots go
// to PV_SHOTS.
//
// Environment: PV_URL, PV_USER, PV_PASSWORD, PV_VIEWER, PV_VIEWER_PASSWORD,
// PV_PROJECT, PV_DISK, PV_KERNEL, PV_INITRD, PV_KEEP_VM, PV_SHOTS,
// PV_CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const base = env('PV_URL');
const shots = env('PV_SHOTS');
const project = env('PV_PROJECT');
const vmName = 'web-e2e';
mkdirSync(shots, { recursive: true });

const tid = (page, id) => page.getByTestId(id);
const step = (what) => console.log(`-- ${what}`);

async function login(browser, user, password) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  page.on('pageerror', (e) => console.log(`page error: ${e.message}`));
  await page.goto(`${base}/login`);
  await tid(page, 'login-user').fill(user);
  await tid(page, 'login-password').fill(password);
  await tid(page, 'login-submit').click();
  await tid(page, 'dashboard').waitFor({ timeout: 30_000 });
  await tid(page, 'project-switcher').selectOption(project);
  return { context, page };
}

async function expectText(locator, want, timeout) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = ((await locator.textContent().catch(() => '')) ?? '').trim();
    if (typeof want === 'string' ? last === want : want.test(last)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`expected ${want} but saw "${last.slice(-300)}"`);
}

const browser = await chromium.launch({
  executablePath: env('PV_CHROMIUM', '/usr/bin/chromium'),
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  step('a wrong password is refused on the login page');
  {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    await page.goto(`${base}/vms?state=running`);
    await page.waitForURL(/\/login\?next=/, { timeout: 15_000 });
    await tid(page, 'login-user').fill(env('PV_USER'));
    await tid(page, 'login-password').fill('not-the-password');
    await tid(page, 'login-submit').click();
    await tid(page, 'login-error').waitFor({ timeout: 15_000 });
    await context.close();
  }

  step('log in and see the dashboard');
  const { page } = await login(browser, env('PV_USER'), env('PV_PASSWORD'));
  await tid(page, 'host-card').first().waitFor({ timeout: 30_000 });
  await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });

  step('create a VM through the wizard');
  await tid(page, 'nav-vms').click();
  await tid(page, 'vm-table').waitFor();
  await tid(page, 'create-vm-button').click();
  await tid(page, 'wizard-name').fill('Not_A_Valid_Name');
  await tid(page, 'wizard-image').selectOption(env('PV_DISK'));
  await tid(page, 'wizard-vcpus').fill('1');
  await tid(page, 'wizard-memory').fill('256');
  await tid(page, 'wizard-kernel').selectOption(env('PV_KERNEL'));
  await tid(page, 'wizard-initrd').selectOption(env('PV_INITRD'));
  await tid(page, 'wizard-cmdline').fill('console=ttyS0 quiet');
  await tid(page, 'wizard-submit').click();
  await tid(page, 'error-name').waitFor({ timeout: 15_000 });
  console.log(`inline error: ${(await tid(page, 'error-name').textContent()).trim()}`);
  await tid(page, 'wizard-name').fill(vmName);
  await tid(page, 'wizard-submit').click();

  step('watch it reach running');
  await page.waitForURL(new RegExp(`/vms/${project}/${vmName}`), { timeout: 30_000 });
  await expectText(tid(page, 'op-status'), /vm\.create/, 15_000);
  await expectText(tid(page, 'vm-state'), 'running', 180_000);
  step('see its CPU and memory as sampled from its QEMU process');
  await expectText(tid(page, 'spark-mem'), /Memory: \d+ MiB/, 30_000);
  await expectText(tid(page, 'spark-cpu'), /CPU: [\d.]+ %/, 30_000);
  await page.screenshot({ path: join(shots, 'vm.png'), fullPage: true });

  step('read the guest on the serial console');
  await tid(page, 'tab-serial').click();
  await expectText(tid(page, 'serial-terminal'), /POLYVISOR-GUEST-READY[\s\S]*polyvisor-tick/, 90_000);
  await page.screenshot({ path: join(shots, 'serial.png') });

  step('connect the graphical console');
  await tid(page, 'tab-console').click();
  await expectText(tid(page, 'vnc-status'), 'connected', 60_000);
  await tid(page, 'vnc-screen').locator('canvas').first().waitFor({ timeout: 10_000 });
  await page.waitForTimeout(1500);
  await page.screenshot({ path: join(shots, 'console.png') });

  step('stop it');
  await tid(page, 'tab-summary').click();
  await tid(page, 'action-stop').click();
  await tid(page, 'confirm-ok').waitFor();
  await page.keyboard.press('Escape');
  await tid(page, 'confirm-ok').waitFor({ state: 'detached', timeout: 5_000 });
  if ((await tid(page, 'vm-state').textContent()) !== 'running') throw new Error('Escape did not cancel the stop');
  await tid(page, 'action-stop').click();
  await tid(page, 'confirm-ok').click();
  await expectText(tid(page, 'vm-state'), 'stopped', 180_000);

  step('delete it');
  await tid(page, 'action-delete').click();
  await tid(page, 'confirm-ok').click();
  await tid(page, 'vm-table').waitFor({ timeout: 60_000 });
  await tid(page, `vm-row-${vmName}`).waitFor({ state: 'detached', timeout: 120_000 });

  step('the operations page lists what was done');
  await tid(page, 'nav-operations').click();
  await expectText(tid(page, 'ops-table'), new RegExp(`vm\\.delete[\\s\\S]*${vmName}`), 15_000);
  if (await tid(page, 'nav-audit').count()) throw new Error('a member sees the audit link');

  step('a viewer sees no mutating controls');
  const viewer = await login(browser, env('PV_VIEWER'), env('PV_VIEWER_PASSWORD'));
  const keep = env('PV_KEEP_VM');
  await viewer.page.goto(`${base}/vms`);
  await tid(viewer.page, `vm-row-${keep}`).waitFor({ timeout: 30_000 });
  if (await tid(viewer.page, 'create-vm-button').count()) throw new Error('a viewer sees the create button');
  await viewer.page.goto(`${base}/vms/${project}/${keep}`);
  await tid(viewer.page, 'vm-state').waitFor({ timeout: 30_000 });
  for (const a of ['start', 'stop', 'restart', 'pause', 'resume', 'delete']) {
    if (await tid(viewer.page, `action-${a}`).count()) throw new Error(`a viewer sees action-${a}`);
  }
  await tid(viewer.page, 'tab-serial').click();
  await viewer.page.waitForTimeout(500);
  if (await tid(viewer.page, 'serial-terminal').count()) throw new Error('a viewer gets a serial console');
  await tid(viewer.page, 'tab-summary').click();
  await viewer.page.screenshot({ path: join(shots, 'viewer.png'), fullPage: true });

  step('views are URLs: a bookmarked filter applies on load');
  await viewer.page.goto(`${base}/vms?state=running`);
  await tid(viewer.page, 'vm-table').waitFor();
  await viewer.page.waitForTimeout(500);
  if (await tid(viewer.page, `vm-row-${keep}`).count()) throw new Error('a stopped vm under ?state=running');
  await viewer.page.goto(`${base}/vms?state=stopped&q=${keep}`);
  await tid(viewer.page, `vm-row-${keep}`).waitFor({ timeout: 15_000 });
  if ((await tid(viewer.page, 'vm-filter-state').inputValue()) !== 'stopped') throw new Error('the state filter does not show the URL');

  step('the theme toggles, by keyboard too');
  const theme = () => viewer.page.evaluate(() => document.documentElement.dataset.theme);
  const before = await theme();
  await tid(viewer.page, 'theme-toggle').focus();
  await viewer.page.keyboard.press('Enter');
  if ((await theme()) === before) throw new Error(`theme still ${before}`);
  await viewer.page.screenshot({ path: join(shots, 'theme.png'), fullPage: true });
  console.log('-- all steps passed');
} finally {
  await browser.close();
}
