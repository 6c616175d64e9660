// Browser tests of the chat widget (issue 14, item 7): headless Chromium
// (Debian's, never a downloaded one) driven by playwright-core, against a
// spawned chatcore-server (release build, SQLite file, the mock provider).
// Test pages are served on two local ports: one origin the bot allows and
// one it does not. Screenshots go to target/widget-screenshots/.
//
// Run through .ci/browser.sh, which builds the server and installs
// playwright-core. Environment: CHATCORE_BIN, CHROMIUM, PW_MODULES,
// SCREENSHOTS.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

const require = createRequire(join(process.env.PW_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const BIN = process.env.CHATCORE_BIN;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.SCREENSHOTS;
mkdirSync(SHOTS, { recursive: true });

let failures = 0;
const results = [];
async function test(name, fn) {
  const t0 = Date.now();
  try {
    await fn();
    results.push(`ok   ${name} (${Date.now() - t0} ms)`);
  } catch (e) {
    failures++;
    results.push(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
  console.log(results[results.length - 1]);
}
function assert(cond, msg) { if (!cond) throw new Error("assertion failed: " + msg); }

function freePort() {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
}

// ---------------------------------------------------------------- the server
const dir = mkdtempSync(join(tmpdir(), "chatcore-widget-"));
const port = await freePort();
const API = `http://127.0.0.1:${port}`;
const server = spawn(BIN, [], {
  env: {
    PATH: process.env.PATH,
    CHATCORE_DATABASE_URL: `sqlite://${dir}/chatcore.db?mode=rwc`,
    CHATCORE_LISTEN: `127.0.0.1:${port}`,
    RUST_LOG: "warn",
  },
  stdio: ["ignore", "pipe", "pipe"],
});
let out = "";
server.stdout.on("data", (d) => { out += d; });
server.stderr.on("data", (d) => { process.stderr.write(d); });
const stop = () => { try { server.kill("SIGTERM"); } catch (e) { /* gone */ } };
process.on("exit", stop);

async function waitFor(check, what, ms = 30000) {
  const end = Date.now() + ms;
  for (;;) {
    try { const v = await check(); if (v) return v; } catch (e) { /* not yet */ }
    if (Date.now() > end) throw new Error("timed out waiting for " + what);
    await new Promise((r) => setTimeout(r, 100));
  }
}
await waitFor(async () => (await fetch(`${API}/readyz`)).ok, "the server");
const ADMIN = await waitFor(() => (out.match(/\n\s+(cc_[A-Za-z0-9_-]+)\s*\n/) || [])[1], "the admin key");

async function call(method, path, body, key = ADMIN) {
  const r = await fetch(API + path, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await r.text();
  const json = text ? JSON.parse(text) : null;
  if (!r.ok) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return json;
}

// ---------------------------------------------------------------- test pages
const allowedPort = await freePort();
const otherPort = await freePort();
const ALLOWED = `http://127.0.0.1:${allowedPort}`;
const OTHER = `http://127.0.0.1:${otherPort}`;

// A bot with a dataset (sources), a slow echo (streams word by word), the
// allowed origin, settings and a widget secret.
const providers = await call("GET", "/v1/providers");
const mock = providers.data.find((p) => p.provider === "mock");
const ds = await call("POST", "/v1/datasets", { name: "handbook", provider_id: mock.id });
const doc = await call("POST", `/v1/datasets/${ds.id}/documents`, {
  title: "Refund policy",
  content: "# Refunds\n\nRefunds take five business days. Refunds go back to the card that paid.",
  mime_type: "text/markdown",
});
await waitFor(async () => (await call("GET", `/v1/documents/${doc.id}`)).status === "ready", "indexing");
await call("POST", "/v1/bots", {
  name: "Shop helper", slug: "shop", provider_id: mock.id, model: "slow-echo",
  is_public: true, dataset_ids: [ds.id],
});
await call("POST", "/v1/scopes", { bot_id: "shop", kind: "allowed_origins", config: [ALLOWED] });
await call("PUT", "/v1/bots/shop/widget", {
  title: "Shop helper", greeting: "Hello! Ask me about refunds.", placeholder: "Ask about refunds…",
  primary_color: "#0f766e", suggested_questions: ["How long do refunds take?", "Where does my refund go?"],
  show_sources: true,
});
const { secret } = await call("POST", "/v1/bots/shop/widget/secret");
const sign = (user) => createHmac("sha256", secret).update(user).digest("hex");

function page(query) {
  const p = new URLSearchParams(query);
  const user = p.get("user");
  const hash = p.get("hash");
  const attrs = [`src="${API}/widget.js"`, `data-bot="${p.get("bot") || "shop"}"`, "async"];
  if (user) attrs.push(`data-user-id="${user}"`, `data-user-hash="${hash || ""}"`);
  // Hostile page CSS: none of it may reach the widget.
  return `<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Test shop</title>
<style>* { font-family: serif !important; color: #c00 !important; } button { background: yellow !important; }
 body { margin: 0; padding: 40px; background: #fafafa; } @media (prefers-color-scheme: dark) { body { background: #222; } }</style>
</head><body><h1>A shop page</h1><p>Products, prices and a chat in the corner.</p>
<script ${attrs.join(" ")}></script></body></html>`;
}
function serve(p) {
  const s = createServer((req, res) => {
    const url = new URL(req.url, "http://x");
    if (url.pathname === "/favicon.ico") { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(page(url.search));
  });
  return new Promise((r) => s.listen(p, "127.0.0.1", () => r(s)));
}
const pages = [await serve(allowedPort), await serve(otherPort)];

// ---------------------------------------------------------------- browser
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ["--no-sandbox"] });

async function context(opts = {}) {
  const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
  const requests = [];
  ctx.on("request", (r) => requests.push(r.url()));
  return { ctx, requests };
}
const W = "#chatcore-widget";
const launcher = `${W} .launcher`;
const input = `${W} textarea`;
async function openWidget(pg) {
  await pg.waitForSelector(launcher);
  await pg.waitForFunction(() => {
    const h = document.querySelector("#chatcore-widget");
    return h && h.shadowRoot.querySelector("h2").textContent !== "Chat";
  });
  await pg.click(launcher);
  await pg.waitForSelector(`${W} .panel:not([hidden])`);
}
async function ask(pg, text) {
  await pg.fill(input, text);
  await pg.press(input, "Enter");
}
const lastAnswer = (pg) => pg.locator(`${W} .msg.assistant`).last();
async function waitIdle(pg) {
  await pg.waitForFunction(() => {
    const r = document.querySelector("#chatcore-widget").shadowRoot;
    return r.querySelector(".send").getAttribute("aria-label") === "Send" && !r.querySelector(".cursor");
  }, null, { timeout: 20000 });
}

await test("an allowed origin: streams, keeps the conversation over a reload, shows sources, sends feedback", async () => {
  const { ctx, requests } = await context();
  const pg = await ctx.newPage();
  await pg.goto(`${ALLOWED}/`);
  await openWidget(pg);
  // Focus goes to the input, the launcher says it is expanded, roles are set.
  const a11y = await pg.evaluate(() => {
    const r = document.querySelector("#chatcore-widget").shadowRoot;
    return {
      focused: r.activeElement && r.activeElement.tagName,
      expanded: r.querySelector(".launcher").getAttribute("aria-expanded"),
      dialog: r.querySelector(".panel").getAttribute("role"),
      log: r.querySelector(".log").getAttribute("role"),
      font: getComputedStyle(r.querySelector(".msg")).fontFamily,
    };
  });
  assert(a11y.focused === "TEXTAREA", "focus in the input: " + a11y.focused);
  assert(a11y.expanded === "true" && a11y.dialog === "dialog" && a11y.log === "log", JSON.stringify(a11y));
  assert(!/serif/.test(a11y.font) || /sans-serif/.test(a11y.font), "the page's CSS leaked in: " + a11y.font);
  await pg.screenshot({ path: join(SHOTS, "desktop-greeting.png") });

  const question = "How long do refunds take to reach my card?";
  await ask(pg, question);
  // It streams: the answer grows over several frames before it is done.
  const sizes = new Set();
  for (let i = 0; i < 40; i++) {
    const t = (await lastAnswer(pg).textContent().catch(() => "")) || "";
    sizes.add(t.length);
    if (t.trim() === question) break;
    await pg.waitForTimeout(40);
  }
  assert(sizes.size >= 3, "the answer arrived in pieces: " + [...sizes].join(","));
  await waitIdle(pg);
  assert((await lastAnswer(pg).textContent()).trim() === question, "the echo answer");
  const src = await pg.locator(`${W} .sources`).last().textContent();
  assert(src.includes("Refund policy"), "sources shown: " + src);
  await pg.screenshot({ path: join(SHOTS, "desktop.png") });

  // Reload: the conversation is still there.
  await pg.reload();
  await openWidget(pg);
  await pg.waitForFunction((q) => [...document.querySelector("#chatcore-widget").shadowRoot.querySelectorAll(".msg.user")]
    .some((m) => m.textContent === q), question);
  const srcAgain = await pg.locator(`${W} .sources`).first().textContent();
  assert(srcAgain.includes("Refund policy"), "sources shown after the reload: " + srcAgain);
  // Thumbs up, then the API shows it.
  await pg.locator(`${W} .thumb[data-rating=up]`).last().click();
  await pg.waitForFunction(() => /Thanks/.test(document.querySelector("#chatcore-widget").shadowRoot.querySelector(".note:not(:empty)")?.textContent || ""));
  const stored = await pg.evaluate(() => Object.entries(localStorage).find(([k]) => k.startsWith("chatcore-widget:"))[1]);
  const conversation = JSON.parse(stored).conversation_id;
  const msgs = await call("GET", `/v1/conversations/${conversation}/messages`);
  const answer = msgs.data.find((m) => m.role === "assistant");
  assert(answer.feedback && answer.feedback.rating === "up", "feedback in the API: " + JSON.stringify(answer.feedback));
  const usage = await call("GET", "/v1/usage");
  assert(usage.data.some((r) => r.feedback_up === 1), "feedback counted in usage");

  // Stop: a long answer is cut when the visitor presses stop.
  await ask(pg, "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty");
  await pg.waitForFunction(() => document.querySelector("#chatcore-widget").shadowRoot.querySelector(".send").getAttribute("aria-label") === "Stop");
  await pg.waitForTimeout(200);
  await pg.click(`${W} .send`);
  await pg.waitForFunction(() => [...document.querySelector("#chatcore-widget").shadowRoot.querySelectorAll(".meta")].some((m) => m.textContent === "Stopped."));
  const cut = (await lastAnswer(pg).textContent()).trim();
  assert(cut.length > 0 && !cut.endsWith("twenty"), "stopped mid-answer: " + cut);

  // Keyboard: Escape closes and gives focus back to the launcher.
  await pg.press(input, "Escape");
  const back = await pg.evaluate(() => {
    const r = document.querySelector("#chatcore-widget").shadowRoot;
    return { hidden: r.querySelector(".panel").hidden, focused: r.activeElement && r.activeElement.className };
  });
  assert(back.hidden && back.focused === "launcher", "escape: " + JSON.stringify(back));

  // Nothing but the page and the chatcore server was asked for anything.
  const foreign = requests.filter((u) => !u.startsWith(ALLOWED) && !u.startsWith(API));
  assert(foreign.length === 0, "third-party requests: " + foreign.join(", "));

  // Dark scheme.
  const dark = await browser.newContext({ viewport: { width: 1280, height: 800 }, colorScheme: "dark" });
  const dp = await dark.newPage();
  await dp.goto(`${ALLOWED}/`);
  await dp.evaluate((s) => { for (const [k, v] of Object.entries(JSON.parse(s))) localStorage.setItem(k, v); },
    JSON.stringify(Object.fromEntries(await pg.evaluate(() => Object.entries(localStorage)))));
  await dp.reload();
  await openWidget(dp);
  await dp.waitForSelector(`${W} .msg.user`);
  const bg = await dp.evaluate(() => getComputedStyle(document.querySelector("#chatcore-widget").shadowRoot.querySelector(".panel")).backgroundColor);
  assert(bg === "rgb(17, 24, 39)", "dark panel: " + bg);
  await dp.screenshot({ path: join(SHOTS, "desktop-dark.png") });
  await dark.close();
  await ctx.close();
});

await test("a phone viewport: the panel fills the screen", async () => {
  const { ctx } = await context({ viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 });
  const pg = await ctx.newPage();
  await pg.goto(`${ALLOWED}/`);
  await pg.waitForFunction(() => document.querySelector("#chatcore-widget")?.shadowRoot.querySelector("h2").textContent === "Shop helper");
  await pg.screenshot({ path: join(SHOTS, "phone-launcher.png") });
  await openWidget(pg);
  await ask(pg, "Where does my refund go?");
  await waitIdle(pg);
  const box = await pg.locator(`${W} .panel`).boundingBox();
  assert(Math.round(box.width) === 390 && Math.round(box.height) === 844, "full screen: " + JSON.stringify(box));
  await pg.screenshot({ path: join(SHOTS, "phone.png") });
  await ctx.close();
});

await test("an origin that is not allowed gets no session", async () => {
  const { ctx } = await context();
  const pg = await ctx.newPage();
  const errors = [];
  pg.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });
  await pg.goto(`${OTHER}/`);
  await waitFor(() => errors.some((e) => /not available on this site/.test(e)), "the widget to give up", 10000);
  assert(await pg.locator(launcher).count() === 0, "no launcher on a site that may not embed the bot");
  // Asking for a session from this page: refused (and unreadable to it).
  const inPage = await pg.evaluate(async (api) => {
    try {
      const r = await fetch(api + "/v1/widget/shop/session", { method: "POST", headers: { "content-type": "application/json" }, body: "{}" });
      return "read " + r.status;
    } catch (e) { return "blocked"; }
  }, API);
  assert(inPage === "blocked", "the page cannot read a session: " + inPage);
  const direct = await fetch(`${API}/v1/widget/shop/session`, { method: "POST", headers: { origin: OTHER, "content-type": "application/json" }, body: "{}" });
  assert(direct.status === 403 && !direct.headers.get("access-control-allow-origin"), "the origin gets 403: " + direct.status);
  const stored = await pg.evaluate(() => Object.values(localStorage).join(""));
  assert(!stored.includes("cvt1."), "no token stored");
  await pg.screenshot({ path: join(SHOTS, "desktop-refused.png") });
  await ctx.close();
});

await test("XSS payloads render as text", async () => {
  const { ctx } = await context();
  const pg = await ctx.newPage();
  const dialogs = [];
  pg.on("dialog", (d) => { dialogs.push(d.message()); d.dismiss(); });
  await pg.goto(`${ALLOWED}/`);
  await openWidget(pg);
  const payload = [
    `<img src=x onerror="window.__xss=1;alert(1)">`,
    `[click me](javascript:window.__xss=2) and [ok](https://example.com/ok)`,
    `<script>window.__xss=3</script> **bold** \`<b>code</b>\``,
  ].join("\n\n");
  await ask(pg, payload);
  await waitIdle(pg);
  await pg.waitForTimeout(300);
  const r = await pg.evaluate(() => {
    const root = document.querySelector("#chatcore-widget").shadowRoot;
    const log = root.querySelector(".log");
    return {
      xss: window.__xss,
      imgs: log.querySelectorAll("img").length + document.querySelectorAll("img").length,
      scripts: log.querySelectorAll("script").length,
      hrefs: [...log.querySelectorAll("a")].map((a) => a.getAttribute("href")),
      strong: [...log.querySelectorAll(".msg.assistant strong")].map((s) => s.textContent),
      answer: [...log.querySelectorAll(".msg.assistant")].pop().textContent,
      user: [...log.querySelectorAll(".msg.user")].pop().textContent,
    };
  });
  assert(r.xss === undefined && dialogs.length === 0, "no script ran: " + r.xss + " " + dialogs);
  assert(r.imgs === 0 && r.scripts === 0, "no elements from the payload: " + JSON.stringify(r));
  assert(r.hrefs.length === 1 && r.hrefs[0] === "https://example.com/ok", "only the https link is a link: " + r.hrefs);
  assert(r.answer.includes(`<img src=x onerror=`) && r.answer.includes("<script>window.__xss=3</script>"), "shown as text: " + r.answer);
  assert(r.answer.includes("[click me](javascript:window.__xss=2)"), "the javascript: link stays text");
  assert(r.strong.includes("bold"), "markdown still renders");
  assert(r.user === payload, "the visitor's own text is shown as typed");
  await pg.screenshot({ path: join(SHOTS, "desktop-xss.png") });
  await ctx.close();
});

await test("a signed user id lists that user's conversations; a forged one is refused", async () => {
  const q = `?user=alice&hash=${sign("alice")}`;
  // First device: a conversation.
  const one = await context();
  let pg = await one.ctx.newPage();
  await pg.goto(`${ALLOWED}/${q}`);
  await openWidget(pg);
  await ask(pg, "Alice asks about refunds");
  await waitIdle(pg);
  await one.ctx.close();
  // Second device (nothing stored): the earlier conversation is listed.
  const two = await context();
  pg = await two.ctx.newPage();
  await pg.goto(`${ALLOWED}/${q}`);
  await openWidget(pg);
  await pg.click(`${W} [aria-label="Earlier conversations"]`);
  await pg.waitForSelector(`${W} .history li button`);
  assert(await pg.locator(`${W} .log`).isHidden(), "the history replaces the messages");
  const titles = await pg.locator(`${W} .history li button strong`).allTextContents();
  assert(titles.includes("Alice asks about refunds"), "listed: " + titles);
  await pg.screenshot({ path: join(SHOTS, "desktop-history.png") });
  await pg.locator(`${W} .history li button`).first().click();
  await pg.waitForFunction(() => [...document.querySelector("#chatcore-widget").shadowRoot.querySelectorAll(".msg.user")]
    .some((m) => m.textContent === "Alice asks about refunds"));
  await two.ctx.close();
  // Another user's page does not see it.
  const bob = await context();
  pg = await bob.ctx.newPage();
  await pg.goto(`${ALLOWED}/?user=bob&hash=${sign("bob")}`);
  await openWidget(pg);
  await pg.click(`${W} [aria-label="Earlier conversations"]`);
  await pg.waitForSelector(`${W} .history p.notice, ${W} .history li`);
  assert(await pg.locator(`${W} .history li`).count() === 0, "bob sees none of alice's");
  await bob.ctx.close();
  // Forged: refused, no session.
  const forged = await context();
  pg = await forged.ctx.newPage();
  const statuses = [];
  pg.on("response", (r) => { if (r.url().includes("/session")) statuses.push(r.status()); });
  await pg.goto(`${ALLOWED}/?user=alice&hash=${sign("mallory")}`);
  await openWidget(pg);
  await pg.waitForSelector(`${W} .error`);
  assert(statuses[0] === 401, "forged hash refused: " + statuses);
  const text = await pg.locator(`${W} .error`).textContent();
  assert(/user_hash/.test(text), "told why: " + text);
  await forged.ctx.close();
});

await test("the demo page works for a newcomer", async () => {
  const { ctx, requests } = await context();
  const pg = await ctx.newPage();
  await pg.goto(`${API}/demo`);
  await pg.waitForSelector(`${W} .panel:not([hidden])`);
  await ask(pg, "Hello from the **demo** page");
  await waitIdle(pg);
  const t = await lastAnswer(pg).textContent();
  assert(t.includes("Hello from the demo page"), "answered: " + t);
  await pg.screenshot({ path: join(SHOTS, "demo.png") });
  const foreign = requests.filter((u) => !u.startsWith(API));
  assert(foreign.length === 0, "third-party requests: " + foreign.join(", "));
  await ctx.close();
});

await browser.close();
pages.forEach((s) => s.close());
stop();
rmSync(dir, { recursive: true, force: true });
console.log(`\n${results.length - failures} passed, ${failures} failed; screenshots in ${SHOTS}`);
process.exit(failures ? 1 : 0);
