// Runs one real-browser scenario against a running signaling server and
// prints its outcome as one JSON line on stdout (exit 0), or an error as one
// JSON line {"ok":false,"error":...} (exit 1). Diagnostics (the pages' console,
// their event logs) go to stderr. tests/tests/browser.rs starts the server and
// runs this; by hand:
//
//   node tests/browser/run.mjs <scenario> '<config JSON>'
//
// config: {
//   "server": "https://localhost:8443",      the server's HTTPS origin
//   "webTransportPort": 4433,                its WebTransport (UDP) port
//   "hashes": ["<64 hex digits>", ...],      its certificate hashes
//   "tokens": {"alice": "<jwt>", "bob": "<jwt>"},
//   "fixturePort": 40001,                    the port to serve the pages on (0 or absent: any);
//                                            the server's allowed_origins must hold
//                                            http://localhost:<fixturePort>
//   "deadUdpPort": 40000,                    (fallback) a UDP port nobody listens on
//   "screenshot": "/path/demo.png",          (demo-screenshot) where to save it
//   "transport": "webtransport",             (reconnect, refresh) the transport of the page
//   "refreshToken": "<jwt>",                 (refresh) what alice's refreshToken hook returns
//   "signalAfter": 1700000000000,            (refresh) when alice signals (ms since the epoch)
//   "wrongUserToken": "<jwt>",               (refresh) another user's token bob tries to refresh with
//   "wtTimeoutMs": 800                       (resume) alice's webTransportTimeoutMs: how long her
//                                            reconnect waits for the cut WebTransport before WSS
// }
//
// Scenarios: webtransport, websocket, mixed, fallback (two peers on test pages
// with a data channel between them), reconnect (one page; the test restarts
// the server under it), bad-token, demo-screenshot (the demo page served by
// the server), foreign-origin (pages of an origin the server does not allow),
// refresh (a session outlives its first token by refreshing it in-band),
// resume (a call whose first page loses its WebTransport connection, which
// goes through a UDP proxy of this runner that is cut, and resumes its
// session over WSS), relay (a call whose peer connections may use only the
// TURN relays the server handed out, iceTransportPolicy "relay").
//
// It serves web-client/ (the real /signaling.js) and fixtures/ over plain HTTP
// on 127.0.0.1 (pages open it as http://localhost:<port>, a secure context) and
// drives the system's Chromium (/usr/bin/chromium, or $CHROMIUM) headless with
// playwright-core: no browser is downloaded. The same pages opened as
// http://127.0.0.1:<port> are of another origin (secure too).

import { createSocket } from "node:dgram";
import { createServer } from "node:http";
import { readFile, mkdir } from "node:fs/promises";
import { dirname, extname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const HERE = dirname(fileURLToPath(import.meta.url));
// $WEB_CLIENT_DIR serves another build of the client instead of web-client/.
const ROOTS = [join(HERE, "fixtures"), process.env.WEB_CLIENT_DIR || join(HERE, "..", "..", "web-client")];
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  // Real host candidates (not mDNS names, which headless Chromium cannot resolve).
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  // Gather candidates on loopback too, for machines whose only interface is lo.
  "--allow-loopback-in-peer-connection",
  // No prompt (and no real device) if a page ever asks for the camera.
  "--use-fake-ui-for-media-stream",
  "--use-fake-device-for-media-stream",
];
const SCENARIO_TIMEOUT_MS = 20000; // each scenario is meant to take a few seconds
// ... but refresh waits for a token to expire.
const SCENARIO_TIMEOUTS_MS = { refresh: 30000 };
const BAD_TOKEN_MAX_MS = 5000; // a refused connect must not hang

const TYPES = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json",
};

// ------------------------------------------------------------ static files

function serveStatic(port = 0) {
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url, "http://x").pathname);
    const rel = normalize(path === "/" ? "/index.html" : path).replace(/^[/\\]+/, "");
    if (rel.split(sep).includes("..")) {
      res.writeHead(400).end();
      return;
    }
    for (const root of ROOTS) {
      try {
        const body = await readFile(join(root, rel));
        res.writeHead(200, {
          "content-type": TYPES[extname(rel)] ?? "application/octet-stream",
          "cache-control": "no-store",
        });
        res.end(body);
        return;
      } catch {
        // not in this root: try the next
      }
    }
    res.writeHead(404, { "content-type": "text/plain" }).end("not found");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, "127.0.0.1", () => resolve(server));
  });
}

// --------------------------------------------------------------- UDP proxy

// Forwards the datagrams of one client to 127.0.0.1:<port> and back, so that a
// page's WebTransport (QUIC) connection goes through it, until cut(): from then
// on every datagram is dropped, both ways, without a word to either end (no
// ICMP, no close), as when a phone's network goes away or starts blocking UDP.
async function udpProxy(port) {
  const front = createSocket("udp4");
  const back = createSocket("udp4");
  let client = null;
  let cut = false;
  front.on("message", (msg, from) => {
    if (cut) return;
    client = from;
    back.send(msg, port, "127.0.0.1");
  });
  back.on("message", (msg) => {
    if (!cut && client) front.send(msg, client.port, client.address);
  });
  for (const socket of [front, back]) {
    socket.on("error", (err) => console.error(`[proxy] ${err.message}`));
    await new Promise((resolve) => socket.bind(0, "127.0.0.1", resolve));
  }
  return {
    port: front.address().port,
    cut: () => (cut = true),
    close: () => [front, back].forEach((s) => s.close()),
  };
}

// ------------------------------------------------------------- the browser

class Failure extends Error {
  constructor(message, detail = {}) {
    super(message);
    this.detail = detail;
  }
}

async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
}

// A page whose console and errors go to stderr, tagged with its name.
async function openPage(context, name, url) {
  const page = await context.newPage();
  page.on("console", (msg) => console.error(`[${name}] console.${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => console.error(`[${name}] page error: ${err.message}`));
  page.on("requestfailed", (req) =>
    console.error(`[${name}] request failed: ${req.url()} ${req.failure()?.errorText ?? ""}`),
  );
  const response = await page.goto(url, { waitUntil: "load" });
  if (!response || !response.ok()) {
    throw new Failure(`${name}: loading ${url} answered ${response?.status()}`);
  }
  return page;
}

// Waits until the test page's body[data-state] is one of `states` (or error).
async function waitForState(page, name, states, timeout) {
  try {
    await page.waitForFunction(
      (wanted) => wanted.includes(document.body?.dataset.state) || document.body?.dataset.state === "error",
      states,
      { timeout, polling: 50 },
    );
  } catch {
    throw new Failure(`${name} did not reach ${states.join("/")} within ${timeout} ms`, {
      state: await page.evaluate(() => document.body?.dataset.state).catch(() => "?"),
      events: await events(page),
    });
  }
}

// The outcome of a test page's window.result, as data.
async function outcome(page, timeout) {
  return page.evaluate(
    ({ timeout }) =>
      new Promise((resolve) => {
        const timer = setTimeout(() => resolve({ ok: false, code: "test_timeout", message: `no result within ${timeout} ms` }), timeout);
        const done = (value) => {
          clearTimeout(timer);
          resolve(value);
        };
        const wait = () =>
          window.result
            ? window.result.then((r) => done({ ok: true, ...r }), (e) => done({ ok: false, ...e }))
            : setTimeout(wait, 20);
        wait();
      }),
    { timeout },
  );
}

const events = (page) => page.evaluate(() => window.events ?? []).catch(() => []);

// ------------------------------------------------------------ scenarios

function peerUrl(base, cfg, { user, transport, token, wt, mode, room = "browser-test", wtTimeoutMs, extra = {} }) {
  const query = new URLSearchParams({
    server: cfg.server,
    user,
    room,
    transport,
    token: token ?? cfg.tokens[user],
    hashes: cfg.hashes.join(","),
  });
  // The server binds 127.0.0.1; "localhost" could mean ::1 to QUIC.
  query.set("wt", wt ?? `https://127.0.0.1:${cfg.webTransportPort}/`);
  if (mode) query.set("mode", mode);
  if (wtTimeoutMs !== undefined) query.set("wtTimeoutMs", String(wtTimeoutMs));
  for (const [key, value] of Object.entries(extra)) query.set(key, String(value));
  return `${base}/peer.html?${query}`;
}

// Two test pages in one room: alice joins first, bob joins second and offers.
async function call(ctx, alice, bob) {
  const { pages } = await startCall(ctx, alice, bob);
  return { pages };
}

// A call as above; also gives the pages, which stay open.
async function startCall(ctx, alice, bob) {
  const room = `call-${Date.now()}`;
  const a = await openPage(ctx.context, "alice", peerUrl(ctx.base, ctx.cfg, { user: "alice", room, ...alice }));
  await waitForState(a, "alice", ["joined"], 10000);
  const b = await openPage(ctx.context, "bob", peerUrl(ctx.base, ctx.cfg, { user: "bob", room, ...bob }));
  const [ra, rb] = await Promise.all([outcome(a, 12000), outcome(b, 12000)]);
  const pages = { alice: ra, bob: rb };
  if (!ra.ok || !rb.ok) {
    throw new Failure("the call did not complete", { pages, events: { alice: await events(a), bob: await events(b) } });
  }
  return { pages, a, b };
}

// Waits until `predicate` (run in the page, with `arg`) holds.
async function waitInPage(page, name, what, predicate, arg, timeout) {
  try {
    await page.waitForFunction(predicate, arg, { timeout, polling: 50 });
  } catch {
    throw new Failure(`${name}: ${what} did not happen within ${timeout} ms`, {
      log: await page.evaluate(() => window.resumeLog).catch(() => null),
      events: await events(page),
    });
  }
}

const scenarios = {
  webtransport: (ctx) => call(ctx, { transport: "webtransport" }, { transport: "webtransport" }),
  websocket: (ctx) => call(ctx, { transport: "websocket" }, { transport: "websocket" }),
  mixed: (ctx) => call(ctx, { transport: "webtransport" }, { transport: "websocket" }),
  // Both peer connections may use TURN relays only (the server's TURN server,
  // with the credentials it minted for each page's session).
  relay: (ctx) =>
    call(ctx, { transport: "webtransport", extra: { relay: 1 } }, { transport: "websocket", extra: { relay: 1 } }),
  // alice's WebTransport URL leads nowhere: "auto" must fall back to WSS; bob's
  // works: "auto" must take WebTransport.
  fallback: (ctx) =>
    call(
      ctx,
      { transport: "auto", wt: `https://127.0.0.1:${ctx.cfg.deadUdpPort}/`, wtTimeoutMs: 3000 },
      { transport: "auto" },
    ),

  // One page joins a room; the test (tests/tests/browser.rs) kills and restarts
  // the server meanwhile: the client must reconnect with backoff and rejoin.
  reconnect: async (ctx) => {
    const transport = ctx.cfg.transport ?? "auto";
    const url = peerUrl(ctx.base, ctx.cfg, { user: "alice", transport, room: "reconnect-room", mode: "reconnect" });
    const page = await openPage(ctx.context, "alice", url);
    const r = await outcome(page, 18000);
    if (!r.ok) throw new Failure("the client did not reconnect", { page: r, events: await events(page) });
    return { page: r };
  },

  // A bad token: connect rejects with auth_failed on every transport choice,
  // quickly, and the demo page shows the code.
  "bad-token": async (ctx) => {
    const token = "bad";
    const transports = ["webtransport", "websocket", "auto"];
    const results = await Promise.all(
      transports.map(async (transport) => {
        const url = peerUrl(ctx.base, ctx.cfg, { user: `bad-${transport}`, transport, token, mode: "connect" });
        const page = await openPage(ctx.context, `bad-${transport}`, url);
        const r = await outcome(page, BAD_TOKEN_MAX_MS + 3000);
        return [transport, { ...r, events: r.code === "auth_failed" ? undefined : await events(page) }];
      }),
    );
    const connect = Object.fromEntries(results);

    // The demo page, loaded from the server itself.
    const demo = await openPage(ctx.context, "demo", `${ctx.cfg.server}/?token=bad&autojoin=1`);
    const started = Date.now();
    await demo
      .waitForFunction(() => document.body.dataset.state === "error", null, {
        timeout: BAD_TOKEN_MAX_MS + 3000,
        polling: 50,
      })
      .catch(() => {}); // the test asserts on what the page shows
    const ms = Date.now() - started;
    const shown = await demo.evaluate(() => ({
      errorVisible: !document.getElementById("error")?.hidden,
    }));
    return { connect, demo: { ...(await demoState(demo)), ...shown, ms } };
  },

  // The test pages opened from http://127.0.0.1:<port>, an origin the server
  // does not allow (it allows http://localhost:<port>): refused on every
  // transport, before any message; connect rejects with connection_failed and
  // says to check allowed_origins. The same page from the allowed origin connects.
  "foreign-origin": async (ctx) => {
    const foreign = ctx.base.replace("//localhost:", "//127.0.0.1:");
    const transports = ["webtransport", "websocket", "auto"];
    const results = await Promise.all(
      transports.map(async (transport) => {
        const name = `foreign-${transport}`;
        const url = peerUrl(foreign, ctx.cfg, { user: "alice", transport, mode: "connect" });
        const page = await openPage(ctx.context, name, url);
        const r = await outcome(page, 12000);
        const origin = await page.evaluate(() => location.origin);
        return [transport, { ...r, origin, events: r.ok ? await events(page) : undefined }];
      }),
    );
    const url = peerUrl(ctx.base, ctx.cfg, { user: "alice", transport: "auto", mode: "connect" });
    const page = await openPage(ctx.context, "allowed", url);
    const allowed = { ...(await outcome(page, 12000)), origin: await page.evaluate(() => location.origin) };
    return { refused: Object.fromEntries(results), allowed };
  },

  // bob (the given token, no refreshToken hook; he tries client.refresh() with
  // wrongUserToken when told his token expires) joins a room; alice joins with
  // a short-lived token and a refreshToken hook, refreshes in-band when the
  // server says token_expiring, and signals bob twice after her first token's
  // expiry, on the same session.
  refresh: async (ctx) => {
    const { cfg } = ctx;
    const room = `refresh-${Date.now()}`;
    const bobExtra = cfg.wrongUserToken ? { wrongUserToken: cfg.wrongUserToken } : {};
    const bobUrl = peerUrl(ctx.base, cfg, { user: "bob", room, transport: "websocket", mode: "receive", extra: bobExtra });
    const bob = await openPage(ctx.context, "bob", bobUrl);
    await waitForState(bob, "bob", ["joined"], 10000);
    const extra = { refreshToken: cfg.refreshToken, signalAfter: cfg.signalAfter };
    const transport = cfg.transport ?? "auto";
    const aliceUrl = peerUrl(ctx.base, cfg, { user: "alice", room, transport, mode: "refresh", extra });
    const alice = await openPage(ctx.context, "alice", aliceUrl);
    const [ra, rb] = await Promise.all([outcome(alice, 25000), outcome(bob, 25000)]);
    if (!ra.ok || !rb.ok) {
      throw new Failure("the session did not outlive its first token", {
        pages: { alice: ra, bob: rb },
        events: { alice: await events(alice), bob: await events(bob) },
      });
    }
    return { alice: ra, bob: rb };
  },

  // alice ("auto", her WebTransport through a UDP proxy of ours) and bob
  // (WebTransport) are in a call with a data channel. The proxy is cut: alice's
  // connection is gone without a close, and UDP with it. Meanwhile alice signals
  // and broadcasts (into the void: her client must send them again) and bob
  // signals and broadcasts to her (the server keeps them for her). alice's
  // client notices the missing pong, tries WebTransport (which times out) and
  // resumes over WSS: same peer, and every one of those messages arrives once;
  // neither page sees anyone leave or join, and the data channel still works.
  resume: async (ctx) => {
    const proxy = await udpProxy(ctx.cfg.webTransportPort);
    try {
      const alice = {
        transport: "auto",
        mode: "resume",
        wt: `https://127.0.0.1:${proxy.port}/`,
        wtTimeoutMs: ctx.cfg.wtTimeoutMs ?? 800,
      };
      const { pages, a, b } = await startCall(ctx, alice, { transport: "webtransport", mode: "resume" });
      const who = () => ({ peerId: client.peerId, sessionId: client.sessionId, transport: client.transport });
      const before = { alice: await a.evaluate(who), bob: await b.evaluate(who) };
      // From here on, nobody may leave or join.
      const reset = () => {
        resumeLog.peerJoined.length = 0;
        resumeLog.peerLeft.length = 0;
      };
      await Promise.all([a.evaluate(reset), b.evaluate(reset)]);

      proxy.cut();
      const cutAt = Date.now();
      await a.evaluate(() => {
        sendCustom("alice during the cut");
        room.broadcast("alice broadcast during the cut");
      });
      await b.evaluate(() => {
        sendCustom("bob during the gap");
        room.broadcast("bob broadcast during the gap");
      });
      await waitInPage(a, "alice", "the resume", () => resumeLog.reconnected.length > 0, null, 12000);
      const resumedAfterMs = Date.now() - cutAt;

      // The call goes on: signals both ways, and the data channel both ways.
      await a.evaluate(() => {
        sendCustom("alice after the resume");
        dc.send("data from alice after the switch");
      });
      await b.evaluate(() => {
        sendCustom("bob after the resume");
        dc.send("data from bob after the switch");
      });
      const got = (want) =>
        want.custom.every((d) => resumeLog.custom.some((c) => c.data === d)) &&
        want.broadcasts.every((d) => resumeLog.broadcasts.some((c) => c.data === d)) &&
        dcMessages.includes(want.dc);
      const fromBob = {
        custom: ["bob during the gap", "bob after the resume"],
        broadcasts: ["bob broadcast during the gap"],
        dc: "data from bob after the switch",
      };
      const fromAlice = {
        custom: ["alice during the cut", "alice after the resume"],
        broadcasts: ["alice broadcast during the cut"],
        dc: "data from alice after the switch",
      };
      await Promise.all([
        waitInPage(a, "alice", "bob's messages", got, fromBob, 5000),
        waitInPage(b, "bob", "alice's messages", got, fromAlice, 5000),
      ]);
      // Time for a duplicate (or a late peer-left) to show up.
      await new Promise((resolve) => setTimeout(resolve, 500));
      const state = () => ({
        ...resumeLog,
        dcMessages,
        dcState: dc.readyState,
        pcState: pc.connectionState,
        peerId: client.peerId,
        sessionId: client.sessionId,
        transport: client.transport,
      });
      return {
        pages,
        before,
        after: { alice: await a.evaluate(state), bob: await b.evaluate(state) },
        resumedAfterMs,
      };
    } finally {
      proxy.close();
    }
  },

  // The demo page in two tabs of one room, on WSS; a screenshot of the second.
  "demo-screenshot": async (ctx) => {
    const { cfg } = ctx;
    const room = `demo-${Date.now()}`;
    const url = (user) =>
      `${cfg.server}/?${new URLSearchParams({ token: cfg.tokens[user], room, autojoin: "1", transport: "websocket" })}`;
    // A second context: a desktop-sized window for the picture.
    const context = await ctx.browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const connected = async (page, name) => {
      try {
        await page.waitForFunction(() => ["connected", "error"].includes(document.body.dataset.state), null, {
          timeout: 10000,
          polling: 50,
        });
      } catch {}
      const state = await page.evaluate(() => document.body.dataset.state);
      if (state !== "connected") {
        throw new Failure(`${name}'s demo page is "${state}", not connected`, await demoState(page));
      }
    };
    const alice = await openPage(context, "alice", url("alice"));
    await connected(alice, "alice");
    const bob = await openPage(context, "bob", url("bob"));
    await connected(bob, "bob");
    // Each page lists the other peer.
    for (const [page, name, other] of [[alice, "alice", "bob"], [bob, "bob", "alice"]]) {
      try {
        await page.waitForFunction(
          (other) => [...document.querySelectorAll("#peers > li[data-peer-id]")].some((li) => li.textContent.includes(other)),
          other,
          { timeout: 10000, polling: 50 },
        );
      } catch {
        throw new Failure(`${name}'s peer list does not show ${other}`, await demoState(page));
      }
    }
    // Not required, but a picture of a live call is better: give the data
    // channel a moment to open, and say whether it did.
    const channel = await bob
      .waitForFunction(() => document.querySelector("#peers > li[data-channel='open']"), null, { timeout: 5000 })
      .then(() => "open", () => bob.evaluate(() => document.querySelector("#peers > li")?.dataset.channel ?? "none"));
    await mkdir(dirname(cfg.screenshot), { recursive: true });
    await bob.screenshot({ path: cfg.screenshot, fullPage: true });
    return { screenshot: cfg.screenshot, alice: await demoState(alice), bob: await demoState(bob), channel };
  },
};

// What a demo page shows, for the report.
function demoState(page) {
  return page
    .evaluate(() => ({
      state: document.body.dataset.state,
      transport: document.getElementById("status")?.dataset.transport ?? null,
      errorCode: document.getElementById("error-code")?.textContent || null,
      peers: [...document.querySelectorAll("#peers > li")].map((li) => ({ ...li.dataset, text: li.textContent })),
      log: [...document.querySelectorAll("#log > li")].slice(-30).map((li) => li.textContent),
    }))
    .catch((e) => ({ unavailable: e.message }));
}

// ----------------------------------------------------------------- main

async function main() {
  const [name, json] = process.argv.slice(2);
  const scenario = scenarios[name];
  if (!scenario) throw new Failure(`unknown scenario ${JSON.stringify(name)}; known: ${Object.keys(scenarios).join(", ")}`);
  const cfg = JSON.parse(json ?? "{}");
  const started = Date.now();
  const http = await serveStatic(cfg.fixturePort ?? 0);
  let browser;
  try {
    browser = await launch();
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const ctx = { cfg, browser, context, base: `http://localhost:${http.address().port}` };
    let timer;
    const limitMs = SCENARIO_TIMEOUTS_MS[name] ?? SCENARIO_TIMEOUT_MS;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Failure(`scenario ${name} took more than ${limitMs} ms`)), limitMs);
    });
    const result = await Promise.race([scenario(ctx), timeout]).finally(() => clearTimeout(timer));
    return { ok: true, scenario: name, ms: Date.now() - started, ...result };
  } finally {
    await browser?.close().catch(() => {});
    http.close();
  }
}

main().then(
  (result) => {
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
  },
  (err) => {
    const error = { ok: false, error: err?.message ?? String(err), ...(err?.detail ? { detail: err.detail } : {}) };
    process.stdout.write(JSON.stringify(error) + "\n");
    if (!(err instanceof Failure)) console.error(err?.stack ?? err);
    process.exit(1);
  },
);
