// The chat example (examples/chat) in a real browser: headless Chromium, driven by
// playwright-core, opens examples/chat/index.html three times. Two pages join one room and
// each sends MESSAGES texts of varied sizes (1 byte to 64 KiB, some non-ASCII); a third joins
// too and leaves mid-way (once it has a quarter of the messages). It checks that every message arrives at the other page exactly
// once, in order and intact (the receiver regenerates each expected text), that the others
// see the third page join and leave, that permessage-deflate was negotiated, and that the
// server told nobody `error` (a member too slow for its room is disconnected with one).
// Prints its figures; exits non-zero on any failure.
//
//   node tests/browser/chat.mjs ws://127.0.0.1:PORT/
//
// Environment: CHROMIUM (default /usr/bin/chromium), CHAT_MESSAGES (default 1000),
// CHAT_TIMEOUT_MS (default 100000), NODE_PATH-free: playwright-core is imported from
// PLAYWRIGHT_DIR (default target/browser-node/node_modules/playwright-core).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, "..", "..");
const wsUrl = process.argv[2];
if (!wsUrl || !wsUrl.startsWith("ws://")) {
  console.error("usage: node tests/browser/chat.mjs ws://127.0.0.1:PORT/");
  process.exit(2);
}
const MESSAGES = Number(process.env.CHAT_MESSAGES || 1000);
const TIMEOUT_MS = Number(process.env.CHAT_TIMEOUT_MS || 100000);
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const playwrightDir = process.env.PLAYWRIGHT_DIR
  || join(repo, "target", "browser-node", "node_modules", "playwright-core");
const { chromium } = await import(pathToFileURL(join(playwrightDir, "index.mjs")).href);

const ROOM = "browsers";
const SENDERS = ["alice", "bob"];
const LEAVER = "carol";

// Every run fails loudly rather than hangs.
const watchdog = setTimeout(() => {
  console.error(`FAIL: the chat test did not finish within ${TIMEOUT_MS} ms`);
  process.exit(1);
}, TIMEOUT_MS);

/**
 * Installed in every page: the texts (regenerated from their sender and sequence number),
 * the checks of what arrives, and the sender loop. Runs inside the browser.
 */
function installHarness({ messages, leaveAfter }) {
  const TOKENS = ["getty", "reactor", "slab", "réacteur", "日本語", "🦀", "mio", "deflate",
    "ws", "Ωmega", "naïve", "session", "room", "lorem", "ipsum", "0123456789"];
  const encoder = new TextEncoder();
  const TOKEN_BYTES = TOKENS.map((t) => encoder.encode(t).length + 1);

  // A small seeded generator (mulberry32): the same text on both ends, from a seed.
  function random(seed) {
    let a = seed >>> 0;
    return () => {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = a;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }
  function seedOf(name, seq) {
    let h = 2166136261;
    for (const c of `${name}#${seq}`) h = Math.imul(h ^ c.codePointAt(0), 16777619);
    return h >>> 0;
  }
  /** The text `name` sends as its message `seq`: `seq:bytes:` then words, exactly `bytes` bytes of UTF-8. */
  function textOf(name, seq) {
    const rnd = random(seedOf(name, seq));
    const r = rnd();
    let bytes;
    if (seq % 250 === 249) bytes = 65536; // the largest there is, a few times
    else if (r < 0.4) bytes = 16 + Math.floor(rnd() * 240);
    else if (r < 0.8) bytes = 256 + Math.floor(rnd() * 7936);
    else bytes = 8192 + Math.floor(rnd() * 57344);
    const parts = [`${seq}:${bytes}:`];
    let used = parts[0].length;
    for (;;) {
      const i = Math.floor(rnd() * TOKENS.length);
      if (used + TOKEN_BYTES[i] > bytes) break;
      parts.push(TOKENS[i], " ");
      used += TOKEN_BYTES[i];
    }
    parts.push("x".repeat(bytes - used));
    return parts.join("");
  }

  const h = {
    received: {}, // sender -> how many arrived from it
    receivedTotal: 0,
    textBytes: 0,
    errors: [],
    joined: [],
    left: [],
    leftAt: {}, // name -> messages received when its `left` arrived
    sentBytes: 0,
    sent: 0,
    extensions: null,
    closed: null,
  };
  window.harness = h;
  const next = {}; // sender -> the sequence number expected next
  chat.addEventListener("msg", ({ detail: { name, text } }) => {
    const seq = next[name] || 0;
    const got = Number.parseInt(text, 10);
    if (got === seq && seq < messages && text === textOf(name, seq)) {
      next[name] = seq + 1;
    } else {
      const what = got === seq ? "its text differs" : got < seq ? "a duplicate or reordered" : `${got - seq} missing or reordered`;
      h.errors.push(`from ${name}: expected message ${seq}, got ${got} (${what})`);
      if (got >= seq) next[name] = got + 1; // report each fault once, not every message after it
    }
    h.received[name] = (h.received[name] || 0) + 1;
    h.receivedTotal += 1;
    h.textBytes += encoder.encode(text).length;
    if (leaveAfter && h.receivedTotal === leaveAfter) chat.leave();
  });
  // Members are a set: across reactors a join in flight when this page joined can be
  // announced although the page's `members` line named it already.
  chat.addEventListener("joined", (e) => { if (!h.joined.includes(e.detail.name)) h.joined.push(e.detail.name); });
  chat.addEventListener("left", (e) => {
    h.left.push(e.detail.name);
    h.leftAt[e.detail.name] = h.receivedTotal;
  });
  chat.addEventListener("error", (e) => h.errors.push(`server error: ${e.detail.why}`));
  chat.addEventListener("closed", (e) => { h.closed = e.detail.code; });

  /** Sends this page's messages, keeping at most 8 MiB in the socket's buffer. */
  h.sendAll = async (name) => {
    for (let seq = 0; seq < messages; seq++) {
      while (chat.socket && chat.socket.bufferedAmount > (8 << 20)) {
        await new Promise((r) => setTimeout(r, 2));
      }
      const text = textOf(name, seq);
      chat.send(text);
      h.sent += 1;
      h.sentBytes += encoder.encode(text).length;
    }
  };
}

async function openPage(context, name, leaveAfter) {
  const page = await context.newPage();
  page.on("pageerror", (e) => console.error(`[${name}] page error: ${e.message}`));
  const file = pathToFileURL(join(repo, "examples", "chat", "index.html"));
  file.search = new URLSearchParams({ ws: wsUrl, room: ROOM, name }).toString();
  await page.goto(file.href);
  await page.evaluate(installHarness, { messages: MESSAGES, leaveAfter });
  const members = await page.evaluate(
    async ([url, room, who]) => {
      const names = await chat.connect(url, room, who);
      harness.extensions = chat.socket.extensions;
      return names;
    },
    [wsUrl, ROOM, name],
  );
  return { name, page, members };
}

const stateOf = (member) => member.page.evaluate(() => {
  const { sendAll, ...state } = harness;
  state.buffered = chat.socket ? chat.socket.bufferedAmount : -1;
  return state;
});

async function main() {
  const failures = [];
  const check = (ok, what) => { if (!ok) failures.push(what); };
  const profile = mkdtempSync(join(tmpdir(), "getty-chat-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const [alice, bob] = [await openPage(context, "alice", 0), await openPage(context, "bob", 0)];
    // The third page leaves once it has a quarter of what it would get.
    const carol = await openPage(context, LEAVER, MESSAGES / 2);
    check(alice.members.length === 0, `alice found ${alice.members} in the room`);
    check(bob.members.join() === "alice", `bob found [${bob.members}], not [alice]`);
    check(carol.members.join() === "alice,bob", `carol found [${carol.members}], not [alice,bob]`);

    const started = performance.now();
    await Promise.all([alice, bob].map((m) => m.page.evaluate((n) => harness.sendAll(n), m.name)));
    const sentIn = performance.now() - started;
    let states;
    for (;;) {
      states = await Promise.all([alice, bob].map(stateOf));
      const done = states.every((s, i) => (s.received[SENDERS[1 - i]] || 0) >= MESSAGES);
      if (done || states.some((s) => s.errors.length)) break;
      if (process.env.CHAT_DEBUG) {
        console.error(states.map((s) => `sent ${s.sent} got ${JSON.stringify(s.received)} buffered ${s.buffered}`).join(" | "));
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    const elapsed = performance.now() - started;
    // Anything late (a duplicate) would arrive now.
    await new Promise((r) => setTimeout(r, 300));
    states = await Promise.all([alice, bob].map(stateOf));
    const carolState = await stateOf(carol);

    for (const [i, member] of [alice, bob].entries()) {
      const s = states[i];
      const other = SENDERS[1 - i];
      check(s.errors.length === 0, `${member.name}: ${s.errors.slice(0, 5).join("; ")}`);
      check(s.received[other] === MESSAGES, `${member.name} got ${s.received[other]} of ${other}'s ${MESSAGES}`);
      check(!s.received[member.name], `${member.name} got its own messages back`);
      check(s.sent === MESSAGES, `${member.name} sent ${s.sent}`);
      check(s.left.join() === LEAVER, `${member.name} saw left: [${s.left}]`);
      check(/permessage-deflate/.test(s.extensions || ""), `${member.name}: no permessage-deflate (${s.extensions})`);
    }
    check(states[0].joined.join() === "bob,carol", `alice saw joined: [${states[0].joined}]`);
    check(states[1].joined.join() === "carol", `bob saw joined: [${states[1].joined}]`);
    check(carolState.errors.length === 0, `carol: ${carolState.errors.slice(0, 5).join("; ")}`);
    check(carolState.receivedTotal === MESSAGES / 2, `carol left after ${carolState.receivedTotal} messages`);
    check(carolState.closed === 1000, `carol's close code ${carolState.closed}`);
    const leftAt = states.map((s) => s.leftAt[LEAVER]);

    const bytes = states.reduce((sum, s) => sum + s.sentBytes, 0);
    const received = states.reduce((sum, s) => sum + s.receivedTotal, 0);
    console.log(`chat in Chromium: 2 pages x ${MESSAGES} messages (1 B to 64 KiB), ${(bytes / 1048576).toFixed(1)} MiB of text sent, ` +
      `${received} received by the two + ${carolState.receivedTotal} by carol before she left; ` +
      `all sent in ${(sentIn / 1000).toFixed(2)} s, all received in ${(elapsed / 1000).toFixed(2)} s ` +
      `(${(bytes / 1048576 / (elapsed / 1000)).toFixed(1)} MiB/s); ` +
      `the others saw carol leave after ${leftAt.join(" and ")} messages; extensions: ${states[0].extensions}`);
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
  if (failures.length) {
    for (const f of failures) console.error(`FAIL: ${f}`);
    console.log(`browser chat: 0 passed, 1 failed`);
    return 1;
  }
  console.log(`browser chat: 1 passed, 0 failed`);
  return 0;
}

let code = 1;
try {
  code = await main();
} catch (e) {
  console.error(`FAIL: ${e.stack || e}`);
}
clearTimeout(watchdog);
process.exit(code);
