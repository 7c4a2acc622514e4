// Drives the web console in Debian's Chromium against a real server with
// a real VM.
//
// As a member: a wrong password is refused, log in, create a VM through
// the wizard (an invalid name first, to see the API's error beside its
// field), follow its create operation, watch it run, read its serial
// console, connect its graphical console (which points to the serial one),
// add a NIC on a network made for it (a bad address first, refused beside
// its field) and remove it, stop it (Escape cancelling the first confirmation), delete it and find
// that on the operations page; upload an image and see it listed, import
// one by URL with an error beside the field; upload an OVA through the
// import wizard (a wave of 0 refused beside its field first), see the
// server's plan of its VM, whose name is markup shown as text, then cancel
// and delete the migration from its page; upload it again, start that
// migration from its page, see it succeed there as the event stream tells
// it, its VM boot (the guest's marker), and delete the VM; make a network, a subnet (an
// error beside its CIDR first), a port with its address, a security group
// and a rule, see the wizard offer the network, and delete them; see the
// host's accelerator,
// why, and its allocation against the capacity the scheduler offers; make
// a token narrowed to a viewer's role, see its secret once, use it, revoke
// it. As a superadmin: create a project, add a member and change its role,
// set the lease policy, set a quota (an error first) and see the usage;
// make the image public and delete it; cordon and uncordon the host; add a
// libvirt provider (or see the API refuse it), refresh and remove it;
// create a user, disable and enable it, set its password, and as that user
// change it. As a viewer: no mutating controls (no import) and no console. Every check
// of absence first waits for a sign that the page has loaded what it would
// show. Screenshots go to PV_SHOTS.
//
// On failure it prints, for every open page, its URL, the serial
// terminal's text (from xterm.js's buffer) and the page's visible text,
// and the last errors the API answered; not the page's HTML or CSS.
//
// Environment: PV_URL, PV_USER, PV_PASSWORD, PV_VIEWER, PV_VIEWER_PASSWORD,
// PV_ADMIN, PV_ADMIN_PASSWORD, PV_PROJECT, PV_DISK, PV_KERNEL, PV_INITRD,
// PV_KEEP_VM, PV_SHOTS, PV_UPLOAD (a small raw disk to upload), PV_HOST,
// PV_ACCEL, PV_ACCEL_REASON, PV_VCPU_CAPACITY (what the API says of the
// host), PV_LIBVIRT (a libvirt URI to add as a provider, or empty),
// PV_OVA and PV_OVA_NAME (an OVA to import, and the name of its VM),
// PV_CHROMIUM (default /usr/bin/chromium).
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';

const env = (k, d) => {
  const v = process.env[k] ?? d;
  if (v === undefined) throw new Error(`${k} is not set`);
  return v;
};
const base = env('PV_URL');
const shots = env('PV_SHOTS');
const project = env('PV_PROJECT');
const hostName = env('PV_HOST');
const vmName = 'web-e2e';
mkdirSync(shots, { recursive: true });

const tid = (page, id) => page.getByTestId(id);

// planOVA uploads the test's OVA through the import wizard as migration
// name, onto the test's host, in waves of parallel, and asks for its plan.
async function planOVA(page, name, parallel) {
  await tid(page, 'import-vms-button').click();
  await tid(page, 'import-kind-upload').check();
  await tid(page, 'import-files').setInputFiles(env('PV_OVA'));
  await tid(page, 'import-host').selectOption(hostName);
  await tid(page, 'import-name').fill(name);
  await tid(page, 'import-parallel').fill(parallel);
  await tid(page, 'import-plan').click();
}
const step = (what) => console.log(`-- ${what}`);

// Every page opened, and the API's last error answers, for the report of a failure.
const pages = [];
const apiErrors = [];

function watch(page, who) {
  pages.push({ who, page });
  page.on('pageerror', (e) => console.log(`page error (${who}): ${e.message}`));
  page.on('response', async (r) => {
    const u = new URL(r.url());
    if (!u.pathname.startsWith('/v1/') || r.status() < 400) return;
    let body = '';
    try {
      body = (await r.text()).slice(0, 400);
    } catch {
      // the body is gone (a navigation)
    }
    apiErrors.push(`${new Date().toISOString()} ${who}: ${r.request().method()} ${u.pathname}${u.search} -> ${r.status()} ${body}`);
    if (apiErrors.length > 25) apiErrors.shift();
  });
  return page;
}

async function newPage(browser, who) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
  const page = watch(await context.newPage(), who);
  return { context, page };
}

async function login(browser, who, user, password) {
  const { context, page } = await newPage(browser, who);
  await page.goto(`${base}/login`);
  await tid(page, 'login-user').fill(user);
  await tid(page, 'login-password').fill(password);
  await tid(page, 'login-submit').click();
  await tid(page, 'dashboard').waitFor({ timeout: 30_000 });
  await tid(page, 'project-switcher').selectOption(project);
  return { context, page };
}

// text is what a person sees of an element: its rendered text (innerText
// leaves out style sheets and hidden parts), or for the serial terminal
// the text xterm.js holds.
async function text(locator) {
  return locator.evaluate((el) => (typeof el.terminalText === 'function' ? el.terminalText() : el.innerText)).catch(() => '');
}

async function expectText(locator, want, timeout) {
  const deadline = Date.now() + timeout;
  let last = '';
  while (Date.now() < deadline) {
    last = (await text(locator)).trim();
    if (typeof want === 'string' ? last === want : want.test(last)) return last;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`expected ${want} but saw "${last.slice(-400)}"`);
}

// loaded waits for a list's count to say it loaded (data-loaded), and
// returns its text.
async function loaded(page, id, timeout = 30_000) {
  await page.locator(`[data-testid="${id}"][data-loaded="true"]`).waitFor({ timeout });
  return text(tid(page, id));
}

async function absent(page, id, why) {
  if (await tid(page, id).count()) throw new Error(`${why}: ${id} is on the page`);
}

async function confirm(page) {
  await tid(page, 'confirm-ok').click();
  await tid(page, 'confirm-ok').waitFor({ state: 'detached', timeout: 10_000 });
}

async function shot(page, name, fullPage = true) {
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage });
}

// offers tells whether the server documents a route in its OpenAPI
// document: controls of routes it lacks are not offered.
async function offers(page, method, path) {
  const doc = await page.evaluate(() => fetch('/v1/openapi.json').then((r) => r.json()));
  return !!doc.paths?.[path]?.[method.toLowerCase()];
}

async function diagnose() {
  for (const { who, page } of pages) {
    if (page.isClosed()) continue;
    console.log(`== page of ${who}: ${page.url()}`);
    const term = tid(page, 'serial-terminal');
    if (await term.count().catch(() => 0)) {
      const t = (await text(term)).split('\n').slice(-40).join('\n');
      console.log(`-- its serial terminal (last 40 lines):\n${t}`);
    }
    const visible = await page.evaluate(() => (document.querySelector('main') ?? document.body).innerText).catch((e) => `(unreadable: ${e.message})`);
    console.log(`-- its visible text (last 1500 characters):\n${visible.slice(-1500)}`);
  }
  console.log(`== the API's last error answers:\n${apiErrors.join('\n') || '(none)'}`);
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
    const { context, page } = await newPage(browser, 'anonymous');
    await page.goto(`${base}/vms?state=running`);
    await page.waitForURL(/\/login\?next=/, { timeout: 15_000 });
    await tid(page, 'login-user').fill(env('PV_USER'));
    await tid(page, 'login-password').fill('not-the-password');
    await tid(page, 'login-submit').click();
    await tid(page, 'login-error').waitFor({ timeout: 15_000 });
    await context.close();
  }

  step('log in and see the dashboard, allocation read against the capacity the scheduler offers');
  const { page } = await login(browser, 'member', env('PV_USER'), env('PV_PASSWORD'));
  const cap = env('PV_VCPU_CAPACITY');
  const card = tid(page, 'host-card').filter({ hasText: hostName });
  await expectText(card.getByTestId('host-vcpus'), new RegExp(`^vCPUs\\s+\\d+ of ${cap} \\(\\d+%\\)`), 30_000);
  if ((await card.getByTestId('host-vcpus').getAttribute('data-level')) !== 'ok') throw new Error('one small VM colours the host as full');
  await expectText(card.getByTestId('host-accel'), new RegExp(`^${env('PV_ACCEL')}\\b`), 10_000);
  await shot(page, 'dashboard');

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
  await tid(page, 'wizard-cmdline').fill('console=ttyS0 quiet no_timer_check');
  await tid(page, 'wizard-submit').click();
  await tid(page, 'error-name').waitFor({ timeout: 15_000 });
  console.log(`inline error: ${(await text(tid(page, 'error-name'))).trim()}`);
  await tid(page, 'wizard-name').fill(vmName);
  await tid(page, 'wizard-submit').click();

  step('watch it reach running');
  await page.waitForURL(new RegExp(`/vms/${project}/${vmName}`), { timeout: 30_000 });
  await expectText(tid(page, 'op-status'), /vm\.create/, 15_000);
  await expectText(tid(page, 'vm-state'), 'running', 180_000);
  step('see its CPU and memory as sampled from its QEMU process');
  await expectText(tid(page, 'spark-mem'), /Memory: \d+ MiB/, 30_000);
  await expectText(tid(page, 'spark-cpu'), /CPU: [\d.]+ %/, 30_000);
  await shot(page, 'vm');

  if (await offers(page, 'POST', '/v1/vms/{name}/migrate')) {
    step("migrate: the host picker has no other host to offer here, and the API's refusal of the scheduler's choice is shown");
    await tid(page, 'action-migrate').click();
    await tid(page, 'migrate-host').waitFor({ timeout: 10_000 });
    await tid(page, 'migrate-no-target').waitFor({ timeout: 15_000 });
    await tid(page, 'migrate-ok').click();
    await expectText(tid(page, 'migrate-error'), /\S/, 15_000);
    await tid(page, 'migrate-cancel').click();
    await tid(page, 'migrate-host').waitFor({ state: 'detached', timeout: 5_000 });
  }

  step('read the guest on the serial console');
  await tid(page, 'tab-serial').click();
  await expectText(tid(page, 'serial-terminal'), /POLYVISOR-GUEST-READY[\s\S]*polyvisor-tick/, 90_000);
  await shot(page, 'serial', false);

  step('connect the graphical console: it shows the firmware, and says the console is on the serial line');
  await tid(page, 'tab-console').click();
  await expectText(tid(page, 'vnc-status'), 'connected', 60_000);
  await expectText(tid(page, 'vnc-serial-hint'), /console=ttyS0[\s\S]*Serial tab/, 10_000);
  const canvas = tid(page, 'vnc-screen').locator('canvas').first();
  await canvas.waitFor({ timeout: 10_000 });
  // The firmware's text is on the screen: lit pixels on the black, not an empty canvas.
  let lit = 0;
  for (let i = 0; i < 40 && lit < 50; i++) {
    await page.waitForTimeout(250);
    lit = await canvas.evaluate((c) => {
      const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let j = 0; j < d.length; j += 4) if (d[j] + d[j + 1] + d[j + 2] > 200) n++;
      return n;
    });
  }
  if (lit < 50) throw new Error(`the graphical console shows nothing (${lit} lit pixels)`);
  await shot(page, 'console', false);
  await tid(page, 'open-serial').click();
  await tid(page, 'serial-terminal').waitFor({ timeout: 10_000 });

  // This test's host has no underlay address (its agent runs in the
  // machine's own network namespace, which a test must not program): the
  // server makes the NIC's port and address, its agent cannot plug it. The
  // hot-plug itself is the network end-to-end test's.
  step("NICs: a network and subnet made on the networks page, a NIC on it added to the running VM from its page (a bad address first, refused beside the field; then the port's address and MAC shown), then removed, and the network deleted");
  await tid(page, 'nav-networks').click();
  await tid(page, 'network-table').waitFor({ timeout: 15_000 });
  await tid(page, 'network-name').fill('nic-net');
  await tid(page, 'network-submit').click();
  await tid(page, 'network-row-nic-net').waitFor({ timeout: 15_000 });
  await tid(page, 'subnet-network').selectOption('nic-net');
  await tid(page, 'subnet-cidr').fill('10.77.0.0/24');
  await tid(page, 'subnet-submit').click();
  await expectText(tid(page, 'subnet-nic-net-v4'), /^10\.77\.0\.0\/24/, 15_000);
  await page.goto(`${base}/vms/${project}/${vmName}`);
  await tid(page, 'vm-nics').waitFor({ timeout: 15_000 });
  await tid(page, 'vm-nic-0').waitFor({ timeout: 10_000 });
  if ((await tid(page, 'vm-nics').locator('tbody tr').count()) !== 1) throw new Error('the VM does not begin with one NIC');
  await tid(page, 'nic-network').selectOption('nic-net');
  await tid(page, 'nic-ip').fill('10.77.0.300');
  await tid(page, 'nic-add').click();
  await tid(page, 'error-ip').waitFor({ timeout: 15_000 });
  console.log(`inline error: ${(await text(tid(page, 'error-ip'))).trim()}`);
  await tid(page, 'nic-ip').fill('10.77.0.42');
  await tid(page, 'nic-add').click();
  await expectText(tid(page, 'nic-op'), /nic/i, 15_000);
  await expectText(tid(page, 'vm-nic-1'), /nic-net[\s\S]*10\.77\.0\.42[\s\S]*52:54:00/, 60_000);
  await shot(page, 'vm-nics');
  await tid(page, 'vm-nic-remove-1').click();
  await tid(page, 'vm-nic-1').waitFor({ state: 'detached', timeout: 60_000 });
  await tid(page, 'vm-nic-0').waitFor({ timeout: 5_000 });
  // The NIC's port went with it: the network is deleted as it came.
  await page.goto(`${base}/networks?tab=ports`);
  await tid(page, 'port-table').waitFor({ timeout: 15_000 });
  for (let i = 0; (await text(tid(page, 'port-table'))).includes('nic-net'); i++) {
    if (i === 60) throw new Error("the removed NIC's port is still listed");
    await page.waitForTimeout(500);
  }
  await tid(page, 'tab-networks').click();
  await tid(page, 'subnet-delete-nic-net-v4').click();
  await confirm(page);
  await tid(page, 'subnet-nic-net-v4').waitFor({ state: 'detached', timeout: 15_000 });
  await tid(page, 'network-delete-nic-net').click();
  await confirm(page);
  await tid(page, 'network-row-nic-net').waitFor({ state: 'detached', timeout: 15_000 });
  await page.goto(`${base}/vms/${project}/${vmName}`);
  await tid(page, 'vm-nics').waitFor({ timeout: 15_000 });

  step('stop it');
  await tid(page, 'tab-summary').click();
  await tid(page, 'action-stop').click();
  await tid(page, 'confirm-ok').waitFor();
  await page.keyboard.press('Escape');
  await tid(page, 'confirm-ok').waitFor({ state: 'detached', timeout: 5_000 });
  if ((await text(tid(page, 'vm-state'))) !== 'running') throw new Error('Escape did not cancel the stop');
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
  await absent(page, 'nav-audit', 'a member sees the audit link');
  await absent(page, 'nav-users', 'a member sees the users link');

  step('images: an import by URL without one is refused beside the field; a file is uploaded and listed');
  await tid(page, 'nav-images').click();
  await loaded(page, 'images-count');
  await tid(page, `image-row-${project}-${env('PV_DISK')}`).waitFor({ timeout: 10_000 });
  await tid(page, 'url-import-name').fill('from-url');
  await tid(page, 'url-import-submit').click();
  await expectText(tid(page, 'error-url'), /required/, 15_000);
  const upload = env('PV_UPLOAD');
  const uploaded = basename(upload).replace(/\.img$/, '');
  await tid(page, 'upload-file').setInputFiles(upload);
  if ((await tid(page, 'upload-name').inputValue()) !== uploaded) throw new Error('the upload is not named after its file');
  await tid(page, 'upload-submit').click();
  await expectText(tid(page, 'op-status'), /image\.[\s\S]*succeeded/, 60_000);
  const row = tid(page, `image-row-${project}-${uploaded}`);
  await expectText(row, /disk\s+ready/, 30_000);
  await row.getByRole('button', { name: uploaded }).click();
  await expectText(tid(page, 'image-detail'), /Virtual size\s+1 MiB/, 10_000);
  await shot(page, 'images');

  step("migrations: the import wizard refuses a wave of 0 beside its field, then uploads an OVA whose VM is named in markup; the server's plan shows its row, that name as text; the migration is cancelled and deleted from its page");
  await tid(page, 'nav-migrations').click();
  await loaded(page, 'migrations-count');
  await planOVA(page, 'web-import', '0');
  await expectText(tid(page, 'error-parallel'), /from 1 to/, 5_000);
  await tid(page, 'import-parallel').fill('1');
  await tid(page, 'import-plan').click();
  const planRow = page.locator('[data-testid^="plan-row-"]');
  await planRow.first().waitFor({ timeout: 60_000 });
  if ((await planRow.count()) !== 1) throw new Error(`the plan of one VM shows ${await planRow.count()} rows`);
  const hostile = env('PV_OVA_NAME');
  await expectText(planRow, /1 vCPU, 256 MiB[\s\S]*VM Network → user[\s\S]*00:50:56:12:34:57/, 5_000);
  if (!(await text(planRow)).includes(hostile)) throw new Error(`the plan's row does not show the source's name as text: ${await text(planRow)}`);
  if ((await tid(page, 'import-review').locator('img').count()) > 0 || (await page.title()) === 'injected') throw new Error("the source's name was made markup");
  await expectText(tid(page, 'plan-summary'), /^1 of 1 VM can move/, 5_000);
  await shot(page, 'import');
  await tid(page, 'nav-migrations').click();
  await expectText(tid(page, 'migration-row-web-import'), /planned/, 15_000);
  await tid(page, 'migration-row-web-import').getByRole('link', { name: 'web-import' }).click();
  await expectText(tid(page, 'migration-vms'), /ready|pending/, 15_000);
  if (!(await text(tid(page, 'migration-vms'))).includes(hostile)) throw new Error("the migration's page does not show the source's name as text");
  await tid(page, 'migration-cancel-web-import').click();
  await confirm(page);
  await expectText(tid(page, 'migration-state'), 'cancelled', 15_000);
  await shot(page, 'migrations');
  await tid(page, 'migration-delete-web-import').click();
  await confirm(page);
  await page.waitForURL(/\/migrations$/, { timeout: 15_000 });
  await loaded(page, 'migrations-count');
  await absent(page, 'migration-row-web-import', 'a deleted migration is listed');

  step("migrations: the wizard moves the same OVA onto the host: started from its page, which follows it on the event stream to its end; its VM boots there (the guest's marker on its serial console) and is deleted from its page");
  await planOVA(page, 'web-moved', '1');
  await page.locator('[data-testid^="plan-row-"]').first().waitFor({ timeout: 60_000 });
  await tid(page, 'nav-migrations').click();
  await expectText(tid(page, 'migration-row-web-moved'), /planned/, 15_000);
  await tid(page, 'migration-row-web-moved').getByRole('link', { name: 'web-moved' }).click();
  await expectText(tid(page, 'migration-vms'), /ready|pending/, 15_000);
  await tid(page, 'migration-start-web-moved').click();
  // The page is not read again: only the event stream can bring the end.
  await expectText(tid(page, 'migration-state'), 'succeeded', 120_000);
  await expectText(tid(page, 'migration-vms'), new RegExp(`${hostName}[\\s\\S]*succeeded`), 5_000);
  await shot(page, 'migration-succeeded');
  await tid(page, 'migration-vms').getByRole('link').first().click();
  await expectText(tid(page, 'vm-state'), 'running', 60_000);
  await tid(page, 'tab-serial').click();
  await expectText(tid(page, 'serial-terminal'), /POLYVISOR-GUEST-READY/, 90_000);
  await tid(page, 'action-delete').click();
  await confirm(page);
  await tid(page, 'vm-table').waitFor({ timeout: 60_000 });

  step('networks: a network and its subnet (a bad CIDR first, refused beside the field), a port with its address, a security group whose rule is added and removed; the wizard offers the network');
  await tid(page, 'nav-networks').click();
  await tid(page, 'network-table').waitFor({ timeout: 15_000 });
  await tid(page, 'network-name').fill('web-net');
  await tid(page, 'network-submit').click();
  await tid(page, 'network-row-web-net').waitFor({ timeout: 15_000 });
  await tid(page, 'subnet-network').selectOption('web-net');
  await tid(page, 'subnet-cidr').fill('10.0.0.0/33');
  await tid(page, 'subnet-submit').click();
  await tid(page, 'error-cidr').waitFor({ timeout: 15_000 });
  await tid(page, 'subnet-cidr').fill('10.0.0.0/24');
  await tid(page, 'subnet-submit').click();
  await expectText(tid(page, 'subnet-web-net-v4'), /^10\.0\.0\.0\/24/, 15_000);
  await tid(page, 'tab-ports').click();
  await tid(page, 'port-table').waitFor({ timeout: 10_000 });
  await tid(page, 'port-name').fill('web-port');
  await tid(page, 'port-submit').click();
  await expectText(tid(page, 'port-ips-web-port'), /^10\.0\.0\.\d+$/, 15_000);
  await tid(page, 'tab-security-groups').click();
  await tid(page, 'group-name').fill('web');
  await tid(page, 'group-submit').click();
  await tid(page, 'rules-web').waitFor({ timeout: 15_000 });
  await tid(page, 'rule-protocol').selectOption('tcp');
  await tid(page, 'rule-ports').fill('22');
  await tid(page, 'rule-cidr').fill('10.0.0.0/8');
  await tid(page, 'rule-submit').click();
  const sshRule = tid(page, 'rules-web').locator('tr', { hasText: 'ingress tcp 22 from 10.0.0.0/8' });
  await sshRule.waitFor({ timeout: 15_000 });
  await sshRule.getByRole('button', { name: 'Remove' }).click();
  await sshRule.waitFor({ state: 'detached', timeout: 15_000 });
  await shot(page, 'networks');
  await page.goto(`${base}/create`);
  await tid(page, 'wizard-network').selectOption('web-net');
  await tid(page, 'wizard-nic-ip-0').waitFor({ timeout: 10_000 });
  await page.goto(`${base}/networks?tab=ports`);
  await tid(page, 'port-delete-web-port').click();
  await confirm(page);
  await tid(page, 'port-row-web-port').waitFor({ state: 'detached', timeout: 15_000 });
  await tid(page, 'tab-security-groups').click();
  await tid(page, 'group-delete-web').click();
  await confirm(page);
  await tid(page, 'group-web').waitFor({ state: 'detached', timeout: 15_000 });
  await tid(page, 'tab-networks').click();
  await tid(page, 'subnet-delete-web-net-v4').click();
  await confirm(page);
  await tid(page, 'subnet-web-net-v4').waitFor({ state: 'detached', timeout: 15_000 });
  await tid(page, 'network-delete-web-net').click();
  await confirm(page);
  await tid(page, 'network-row-web-net').waitFor({ state: 'detached', timeout: 15_000 });

  step("hosts: the host's accelerator and why, its allocation against its capacity");
  await tid(page, 'nav-hosts').click();
  await loaded(page, 'hosts-count');
  const reason = env('PV_ACCEL_REASON');
  await expectText(tid(page, `host-accel-${hostName}`), new RegExp(`^${env('PV_ACCEL')}\\s+${reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`), 10_000);
  await shot(page, 'hosts');
  await tid(page, `host-row-${hostName}`).getByRole('link', { name: hostName }).click();
  await expectText(tid(page, 'host-accel'), new RegExp(reason.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 15_000);
  await expectText(tid(page, 'host-vcpus'), new RegExp(`of ${cap} \\(`), 10_000);
  await expectText(tid(page, 'host-drivers'), /qemu/, 10_000);
  for (const b of ['host-cordon', 'host-uncordon', 'host-revoke', 'host-delete', 'host-drain']) await absent(page, b, 'a member may not take hosts out of service');
  await shot(page, 'host');

  step('tokens: a token narrowed to a viewer of the project, its secret shown once, used, then revoked');
  await tid(page, 'nav-account').click();
  await tid(page, 'tokens-table').waitFor({ timeout: 15_000 });
  await tid(page, 'token-name').fill('web-token');
  await tid(page, 'token-project').selectOption(project);
  await tid(page, 'token-role').selectOption('viewer');
  // Signed in with a password: the token needs it again.
  await tid(page, 'token-current').fill(env('PV_PASSWORD'));
  await tid(page, 'token-submit').click();
  const secret = await tid(page, 'token-secret').inputValue({ timeout: 15_000 });
  if (secret.length < 20) throw new Error(`the token's secret is "${secret}"`);
  await shot(page, 'token-secret', false);
  await tid(page, 'token-secret-close').click();
  await expectText(tid(page, 'token-row-web-token'), new RegExp(`viewer in ${project} only`), 10_000);
  const shown = await page.evaluate((s) => document.body.innerText.includes(s) || [...document.querySelectorAll('input')].some((i) => i.value === s), secret);
  if (shown) throw new Error('the secret is still on the page after it was shown');
  await shot(page, 'account');
  {
    const { context, page: tp } = await newPage(browser, 'narrowed token');
    await tp.goto(`${base}/login`);
    await tid(tp, 'login-token').fill(secret);
    await tid(tp, 'login-submit').click();
    await tid(tp, 'dashboard').waitFor({ timeout: 30_000 });
    await tid(tp, 'nav-vms').click();
    await tid(tp, `vm-row-${env('PV_KEEP_VM')}`).waitFor({ timeout: 30_000 });
    await absent(tp, 'create-vm-button', 'a token narrowed to viewer offers to create VMs');
    await tid(tp, 'nav-account').click();
    await expectText(tid(tp, 'narrowed'), new RegExp(`viewer in ${project} only`), 10_000);
    await tid(tp, 'narrowed-account').waitFor();
    await absent(tp, 'token-submit', 'a narrowed token offers to make tokens');
    await context.close();
  }
  await tid(page, 'token-revoke-web-token').click();
  await confirm(page);
  await tid(page, 'token-row-web-token').waitFor({ state: 'detached', timeout: 15_000 });
  {
    const { context, page: tp } = await newPage(browser, 'revoked token');
    await tp.goto(`${base}/login`);
    await tid(tp, 'login-token').fill(secret);
    await tid(tp, 'login-submit').click();
    await tid(tp, 'login-error').waitFor({ timeout: 15_000 });
    await context.close();
  }

  step('a superadmin creates a project, an invalid name first, and adds a member');
  const admin = await login(browser, 'superadmin', env('PV_ADMIN'), env('PV_ADMIN_PASSWORD'));
  const ap = admin.page;
  await tid(ap, 'nav-projects').click();
  await tid(ap, 'projects-table').waitFor();
  await expectText(tid(ap, 'role-viewer'), /vm\.read/, 10_000);
  await tid(ap, 'project-name').fill('Bad_Name');
  await tid(ap, 'project-submit').click();
  await tid(ap, 'error-name').waitFor({ timeout: 15_000 });
  await tid(ap, 'project-name').fill('web-proj');
  await tid(ap, 'project-description').fill('made in the browser');
  await tid(ap, 'project-submit').click();
  await ap.waitForURL(/\/projects\/web-proj$/, { timeout: 15_000 });
  await tid(ap, 'member-user').fill(env('PV_USER'));
  await tid(ap, 'member-new-role').selectOption('operator');
  await tid(ap, 'member-add').click();
  await tid(ap, `member-row-${env('PV_USER')}`).waitFor({ timeout: 15_000 });
  if ((await tid(ap, `member-role-${env('PV_USER')}`).inputValue()) !== 'operator') throw new Error('the member was not added as operator');
  const [changed] = await Promise.all([
    ap.waitForResponse((r) => r.url().includes(`/members/${env('PV_USER')}`) && r.request().method() === 'PUT', { timeout: 15_000 }),
    tid(ap, `member-role-${env('PV_USER')}`).selectOption('viewer'),
  ]);
  if (!changed.ok()) throw new Error(`changing the role answered ${changed.status()}`);
  await expectText(tid(ap, `member-row-${env('PV_USER')}`), /viewer/, 10_000);
  await tid(ap, 'settings-max-lease').fill('24');
  await tid(ap, 'settings-save').click();
  await expectText(tid(ap, 'settings-max-lease').locator('..'), /Now 1 day/, 15_000);
  await shot(ap, 'project');

  step('a quota on the project of the VM: a negative limit is refused beside its field, then the usage shows against it');
  await ap.goto(`${base}/projects/${project}`);
  await tid(ap, 'quota-edit').click();
  await tid(ap, 'quota-input-vcpus').fill('-1');
  await tid(ap, 'quota-save').click();
  await tid(ap, 'error-quota-vcpus').waitFor({ timeout: 15_000 });
  await tid(ap, 'quota-input-vcpus').fill('8');
  await tid(ap, 'quota-input-memoryMiB').fill('4096');
  await tid(ap, 'quota-save').click();
  await expectText(tid(ap, 'quota-vcpus'), /^vCPUs\s+1 of 8 \(13%\)/, 15_000);
  await expectText(tid(ap, 'quota-memoryMiB'), /^Memory\s+256 MiB of 4 GiB/, 15_000);
  await shot(ap, 'quota');

  step('a superadmin makes the uploaded image public (where the server offers it), then deletes it');
  await tid(ap, 'nav-images').click();
  await loaded(ap, 'images-count');
  const adminRow = tid(ap, `image-row-${project}-${uploaded}`);
  await adminRow.waitFor({ timeout: 15_000 });
  if (await offers(ap, 'PATCH', '/v1/images/{name}')) {
    await tid(ap, `image-share-${uploaded}`).click();
    await adminRow.getByTestId('image-public').waitFor({ timeout: 15_000 });
  } else {
    console.log('   (the server has no PATCH /v1/images/{name}: making public is not offered)');
    await absent(ap, `image-share-${uploaded}`, 'a control whose route the server lacks');
  }
  await tid(ap, `image-delete-${uploaded}`).click();
  await confirm(ap);
  await adminRow.waitFor({ state: 'detached', timeout: 60_000 });

  step('a superadmin cordons and uncordons the host (where the server offers it)');
  await ap.goto(`${base}/hosts/${hostName}`);
  await tid(ap, 'host-accel').waitFor({ timeout: 15_000 });
  if (await offers(ap, 'POST', '/v1/hosts/{name}/cordon')) {
    await tid(ap, 'host-cordon').click();
    await expectText(tid(ap, 'host-schedulable'), /^cordoned/, 15_000);
    await tid(ap, 'host-uncordon').click();
    await expectText(tid(ap, 'host-schedulable'), /may be placed/, 15_000);
  } else {
    console.log('   (the server has no host cordon route: cordon, revoke and delete are not offered)');
    for (const b of ['host-cordon', 'host-revoke', 'host-delete']) await absent(ap, b, 'a control whose route the server lacks');
  }

  if (await offers(ap, 'POST', '/v1/hosts/{name}/drain')) {
    step('a superadmin drains the host, the only one: it is cordoned, the stopped VM stays (no other host to move it to) and the result says why');
    await tid(ap, 'host-drain').click();
    await confirm(ap);
    await tid(ap, 'host-drain-result').waitFor({ timeout: 120_000 });
    await expectText(tid(ap, 'host-drain-result'), new RegExp(`${project}/${env('PV_KEEP_VM')}[\\s\\S]*failed[\\s\\S]*no host`), 10_000);
    await expectText(tid(ap, 'host-schedulable'), /^cordoned/, 15_000);
    await shot(ap, 'host-drain');
    await tid(ap, 'host-uncordon').click();
    await expectText(tid(ap, 'host-schedulable'), /may be placed/, 15_000);
  }

  if (await offers(ap, 'POST', '/v1/plans/consolidate')) {
    step('a superadmin plans the live estate: each host before and after the consolidation, and the forecast');
    await tid(ap, 'nav-capacity').click();
    await tid(ap, 'plan-form').locator('button[type=submit]').click();
    await expectText(tid(ap, 'plan-headline'), /hosts? now, \d+ in the plan/, 60_000);
    await tid(ap, 'plan-hosts').locator('tr', { hasText: hostName }).waitFor({ timeout: 10_000 });
    await tid(ap, 'forecast-clusters').waitFor({ timeout: 10_000 });
    await shot(ap, 'capacity');
    step("a superadmin sees the hosts' usage history plotted: their sum, and each host's");
    await tid(ap, 'cluster-usage-sum-cpu-line').first().waitFor({ state: 'attached', timeout: 30_000 });
    await tid(ap, 'host-usage-memory').first().waitFor({ timeout: 10_000 });
    await shot(ap, 'capacity-usage');
  }

  if (await offers(ap, 'GET', '/v1/balance')) {
    step('a superadmin turns the balancer to advise: its cycle shows each host\'s load and what it recommends, then turns it off');
    await tid(ap, 'nav-balance').click();
    await tid(ap, 'balance-mode').selectOption('advise');
    await tid(ap, 'balance-save').click();
    await expectText(tid(ap, 'balance-cycle'), /in mode advise/, 60_000);
    await tid(ap, 'balance-hosts').locator('tr', { hasText: hostName }).waitFor({ timeout: 10_000 });
    await shot(ap, 'balance');
    await tid(ap, 'balance-mode').selectOption('off');
    await tid(ap, 'balance-save').click();
    await expectText(tid(ap, 'balance-none'), /off/, 30_000);
  }

  step('providers: a bad URL is refused beside its field; a libvirt provider is added, synced, refreshed and removed');
  await tid(ap, 'nav-providers').click();
  await loaded(ap, 'providers-count');
  const pw = 'pw-never-shown-back-7';
  await tid(ap, 'provider-name').fill('web-libvirt');
  await tid(ap, 'provider-url').fill('not a uri');
  await tid(ap, 'provider-password').fill(pw);
  await tid(ap, 'provider-project').selectOption('web-proj');
  await tid(ap, 'provider-submit').click();
  await tid(ap, 'error-url').waitFor({ timeout: 30_000 });
  if ((await tid(ap, 'provider-password').inputValue()) !== '') throw new Error('the password stays in the form after the answer');
  const libvirt = env('PV_LIBVIRT', '');
  if (libvirt) {
    await tid(ap, 'provider-url').fill(libvirt);
    await tid(ap, 'provider-password').fill(pw);
    await tid(ap, 'provider-submit').click();
    await tid(ap, 'provider-row-web-libvirt').waitFor({ timeout: 30_000 });
    await tid(ap, 'provider-row-web-libvirt').getByRole('link', { name: 'web-libvirt' }).click();
    await expectText(tid(ap, 'provider-state'), 'connected', 60_000);
    await expectText(tid(ap, 'provider-counts'), /[1-9]\d* hosts/, 60_000);
    await tid(ap, 'provider-inventory').waitFor({ timeout: 30_000 });
    const [refreshed] = await Promise.all([
      ap.waitForResponse((r) => r.url().endsWith('/v1/providers/web-libvirt/refresh'), { timeout: 30_000 }),
      tid(ap, 'provider-refresh').click(),
    ]);
    if (!refreshed.ok()) throw new Error(`the refresh answered ${refreshed.status()}`);
    await expectText(tid(ap, 'provider-refresh'), 'Refresh', 10_000);
    await absent(ap, 'provider-action-error', 'the refresh failed');
    const leaked = await ap.evaluate((s) => document.documentElement.outerHTML.includes(s), pw);
    if (leaked) throw new Error('the provider password is shown back');
    await shot(ap, 'provider');
    await tid(ap, 'provider-remove').click();
    await confirm(ap);
    await ap.waitForURL(/\/providers$/, { timeout: 15_000 });
    await loaded(ap, 'providers-count');
    await tid(ap, 'provider-row-web-libvirt').waitFor({ state: 'detached', timeout: 15_000 });
  } else {
    console.log('   (no libvirtd here: only the refusal was checked)');
  }
  await shot(ap, 'providers');

  step('users: a superadmin creates one (an invalid name first), disables and enables it, sets its password');
  await tid(ap, 'nav-users').click();
  await tid(ap, 'users-table').waitFor();
  await tid(ap, 'user-name').fill('Web User');
  await tid(ap, 'user-submit').click();
  await tid(ap, 'error-name').waitFor({ timeout: 15_000 });
  await tid(ap, 'user-name').fill('web-user');
  await tid(ap, 'user-password').fill('Tulip-Harbor-93');
  await tid(ap, 'user-submit').click();
  await tid(ap, 'user-row-web-user').waitFor({ timeout: 15_000 });
  await tid(ap, 'user-toggle-web-user').click();
  await tid(ap, 'user-disabled-web-user').waitFor({ timeout: 15_000 });
  await tid(ap, 'user-toggle-web-user').click();
  await tid(ap, 'user-disabled-web-user').waitFor({ state: 'detached', timeout: 15_000 });
  await tid(ap, 'user-reset-web-user').click();
  await tid(ap, 'reset-password').fill('Quartz-Meadow-58');
  await tid(ap, 'reset-submit').click();
  await expectText(tid(ap, 'users-note'), /password of web-user is set/, 15_000);
  await shot(ap, 'users');

  step('the user changes their own password: a wrong current one and a short new one are refused beside their fields');
  {
    const { context, page: up } = await newPage(browser, 'web-user');
    await up.goto(`${base}/login`);
    await tid(up, 'login-user').fill('web-user');
    await tid(up, 'login-password').fill('Quartz-Meadow-58');
    await tid(up, 'login-submit').click();
    await tid(up, 'dashboard').waitFor({ timeout: 30_000 });
    await tid(up, 'nav-account').click();
    const change = async (current, next) => {
      await tid(up, 'password-current').fill(current);
      await tid(up, 'password-new').fill(next);
      await tid(up, 'password-again').fill(next);
      await tid(up, 'password-submit').click();
    };
    await change('not-the-current-one', 'Velvet-Canyon-71');
    await tid(up, 'error-current').waitFor({ timeout: 15_000 });
    await change('Quartz-Meadow-58', 'short');
    await tid(up, 'error-password').waitFor({ timeout: 15_000 });
    await change('Quartz-Meadow-58', 'Velvet-Canyon-71');
    await tid(up, 'password-changed').waitFor({ timeout: 15_000 });
    await tid(up, 'logout').click();
    await tid(up, 'login-user').fill('web-user');
    await tid(up, 'login-password').fill('Velvet-Canyon-71');
    await tid(up, 'login-submit').click();
    await tid(up, 'dashboard').waitFor({ timeout: 30_000 });
    await context.close();
  }
  await tid(ap, 'user-delete-web-user').click();
  await confirm(ap);
  await tid(ap, 'user-row-web-user').waitFor({ state: 'detached', timeout: 15_000 });

  step('a viewer sees no mutating controls');
  const viewer = await login(browser, 'viewer', env('PV_VIEWER'), env('PV_VIEWER_PASSWORD'));
  const vp = viewer.page;
  const keep = env('PV_KEEP_VM');
  await vp.goto(`${base}/vms`);
  await tid(vp, `vm-row-${keep}`).waitFor({ timeout: 30_000 });
  await absent(vp, 'create-vm-button', 'a viewer sees the create button');
  await vp.goto(`${base}/vms/${project}/${keep}`);
  await tid(vp, 'vm-state').waitFor({ timeout: 30_000 });
  for (const a of ['start', 'stop', 'restart', 'pause', 'resume', 'delete', 'migrate']) await absent(vp, `action-${a}`, 'a viewer sees a power action');
  await tid(vp, 'tab-serial').click();
  await tid(vp, 'console-denied').waitFor({ timeout: 10_000 });
  await absent(vp, 'serial-terminal', 'a viewer gets a serial console');
  await tid(vp, 'tab-summary').click();
  await shot(vp, 'viewer');
  await tid(vp, 'nav-images').click();
  await tid(vp, `image-row-${project}-${env('PV_DISK')}`).waitFor({ timeout: 15_000 });
  await absent(vp, 'upload-submit', 'a viewer may upload images');
  await absent(vp, `image-delete-${env('PV_DISK')}`, 'a viewer may delete images');

  await tid(vp, 'nav-networks').click();
  await tid(vp, 'network-table').waitFor({ timeout: 15_000 });
  await absent(vp, 'network-submit', 'a viewer may create networks');
  await tid(vp, 'nav-migrations').click();
  await loaded(vp, 'migrations-count');
  await absent(vp, 'import-vms-button', 'a viewer may import VMs');

  step('views are URLs: a bookmarked filter applies on load');
  await vp.goto(`${base}/vms?state=running`);
  const count = await loaded(vp, 'vm-count');
  const [, shownRows, total] = /(\d+) of (\d+)/.exec(count) ?? [];
  if (!(Number(total) >= 1)) throw new Error(`the VM list loaded "${count}": the stopped VM is not in it to be filtered out`);
  if (shownRows !== '0') throw new Error(`?state=running shows ${count}`);
  await absent(vp, `vm-row-${keep}`, 'a stopped VM under ?state=running');
  await vp.goto(`${base}/vms?state=stopped&q=${keep}`);
  await tid(vp, `vm-row-${keep}`).waitFor({ timeout: 15_000 });
  if ((await tid(vp, 'vm-filter-state').inputValue()) !== 'stopped') throw new Error('the state filter does not show the URL');

  step('the theme toggles, by keyboard too');
  const theme = () => vp.evaluate(() => document.documentElement.dataset.theme);
  const before = await theme();
  await tid(vp, 'theme-toggle').focus();
  await vp.keyboard.press('Enter');
  if ((await theme()) === before) throw new Error(`theme still ${before}`);
  await vp.goto(`${base}/hosts`);
  await loaded(vp, 'hosts-count');
  await shot(vp, 'theme');
  console.log('-- all steps passed');
} catch (e) {
  console.log(`FAILED: ${e.stack ?? e}`);
  await diagnose();
  process.exitCode = 1;
} finally {
  await browser.close();
}
