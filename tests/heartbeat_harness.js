// Runs control/web/heartbeat.js in node against a socket that never answers, to check how a
// probe after a navigator.connection `change` is read (tests/test_heartbeat_signs.py). The
// script is the pages' own; only the browser's objects around it are made here.
"use strict";
const fs = require("fs");
const vm = require("vm");

class Socket extends EventTarget {
  constructor() { super(); this.readyState = 1; this.bufferedAmount = 0; this.sent = 0; }
  send() { this.sent += 1; }
  close() { this.readyState = 3; }
}
Socket.CONNECTING = 0; Socket.OPEN = 1;

const connection = new EventTarget();
const context = {
  window: new EventTarget(), navigator: { connection }, WebSocket: Socket,
  setTimeout, clearTimeout, setInterval, clearInterval, Date, JSON, Map, Math,
};
vm.createContext(context);
vm.runInContext(fs.readFileSync(process.argv[2], "utf8"), context);
const beat = context.window.remotecaseHeartbeat;

// one socket watched; `before`/`after` the connection's type around its change event
async function run(before, after) {
  connection.type = before;
  const ws = new Socket();
  let current = true;
  let deadAt = null;
  const started = Date.now();
  beat.watch(ws, { isCurrent: () => current, onDead: () => { deadAt = Date.now() - started; } });
  // later than the socket's opening, which counts as heard
  await new Promise((ok) => setTimeout(ok, 50));
  connection.type = after;
  connection.dispatchEvent(new Event("change"));
  const sign = beat.signs[beat.signs.length - 1];
  // past the probe's deadline (PROBE_MAX before any pong), before the PING_DEAD clock
  await new Promise((ok) => setTimeout(ok, beat.PROBE_MAX + 1000));
  current = false;
  return { sign: sign.sign, verdict: sign.verdict, deadline: sign.deadline, dead: deadAt,
           probes: ws.sent };
}

(async () => {
  const out = {
    estimates: await run("cellular", "cellular"),
    no_type: await run(undefined, undefined),
    type_changed: await run("wifi", "cellular"),
  };
  process.stdout.write(JSON.stringify(out));
})();
