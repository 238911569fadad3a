// The pages' signalling heartbeat (docs/signalling.md, "Heartbeat, client side"), shared by the
// party page (client.js) and the officer's call (call.js).
//
// A network that vanished under the page (Wi-Fi to 4G: its address gone) closes no socket:
// nothing of the old connection arrives any more, not even a reset, and the WebSocket stays
// "open" for minutes. So the page sends `ping` every PING_EVERY ms, and takes the socket for
// dead when a ping went PING_DEAD ms without anything at all (its pong, any message) heard
// since it was sent, or when the socket did not open within PING_DEAD: it drops it and lets the
// page resume on a new one, as after a close. Judged by pings sent, not by silence, so a timer
// the browser throttles (a tab in the background) never makes a live socket look dead.
// PING_DEAD is longer than a short outage plus TCP's backoff after it (a 5 s outage keeps its
// socket and its media, tests/test_network_browser.py).
//
// The browser often knows sooner that something happened to the path. Each sign is only a
// suspicion, so it sends a probe: an immediate ping with a short deadline (PROBE_TIMES the
// median round trip of the last pings, at least 1.5 times the slowest of them, within
// PROBE_MIN..PROBE_MAX). A live socket answers within a round trip, so a sign on a working link
// (a slow mobile link, a phone's connection estimate changing under a live socket) costs one
// ping. What a probe that hears nothing by its deadline means depends on the sign:
// - the device's network changed (`online`/`offline`, a `navigator.connection` `change` whose
//   `type` changed): the socket is dead at that deadline, and so is one whose probe fails
//   within CHANGED_FOR of such a change. A socket on an address that went away never comes
//   back (Wi-Fi to 4G).
// - the path went quiet on a network that did not change (a media connection `disconnected`
//   or `failed`, sends that do not drain: bufferedAmount not going down, a
//   `navigator.connection` `change` of its estimates only, or with no `type` to tell): a
//   tunnel, a lift, a short outage, after which the same socket and media go on
//   (tests/test_network_browser.py rides a 5 s outage through). The probe then only starts the
//   PING_DEAD clock early.
"use strict";

window.remotecaseHeartbeat = (() => {
  const PING_EVERY = 2000;
  const PING_DEAD = 7000;
  const PROBE_MIN = 2000;
  const PROBE_MAX = 4000;
  const PROBE_TIMES = 4;
  const RTT_KEPT = 5;
  const CHANGED_FOR = 10000;
  const seen = [];  // every sign of this page and what its probe found, the last 50 (for tests)

  // ws: the page's signalling socket; isCurrent(): whether the page still uses it; onDead():
  // called once when it is taken for dead (its own handlers are detached and it is closed
  // first). Returns {peer(pc): watch a media connection of this socket's call for the signs,
  // suspect(sign): probe now}.
  function watch(ws, { isCurrent, onDead }) {
    const opened = Date.now();
    let heardAt = opened;
    let pings = 0;
    let waiting = null;  // when the oldest ping not answered by anything heard since was sent
    const sentAt = new Map();  // ping id -> when sent, for its round trip
    const rtts = [];
    let probe = null;  // {at, deadline, timer} of the probe out now
    let buffered = 0;
    let changedAt = -Infinity;  // when the device's network last changed
    let over = false;
    const unwatch = [];

    const listen = (target, type, fn) => {
      target.addEventListener(type, fn);
      unwatch.push(() => target.removeEventListener(type, fn));
    };
    const stop = () => {
      if (over) return;
      over = true;
      clearInterval(timer);
      if (probe) clearTimeout(probe.timer);
      for (const undo of unwatch.splice(0)) undo();
    };
    const dead = () => {
      if (over) return;
      stop();
      ws.onmessage = ws.onclose = null;  // whatever it says from now on is the past
      ws.close();
      onDead();
    };
    const ping = () => {
      const id = ++pings;
      sentAt.set(id, Date.now());
      if (sentAt.size > 20) sentAt.delete(sentAt.keys().next().value);
      ws.send(JSON.stringify({ type: "ping", id }));
    };
    const probeDeadline = () => {
      if (!rtts.length) return PROBE_MAX;
      const sorted = [...rtts].sort((a, b) => a - b);
      const median = sorted[Math.floor(sorted.length / 2)];
      const wanted = Math.max(PROBE_TIMES * median, 1.5 * sorted[sorted.length - 1]);
      return Math.round(Math.min(PROBE_MAX, Math.max(PROBE_MIN, wanted)));
    };

    ws.addEventListener("message", (e) => {
      heardAt = Date.now();
      if (probe && heardAt >= probe.at) {
        clearTimeout(probe.timer);
        probe.sign.verdict = "alive";
        probe = null;
      }
      if (typeof e.data !== "string" || !e.data.startsWith('{"type":"pong"')) return;
      try {
        const { id } = JSON.parse(e.data);
        if (sentAt.has(id)) {
          rtts.push(heardAt - sentAt.get(id));
          if (rtts.length > RTT_KEPT) rtts.shift();
          sentAt.delete(id);
        }
      } catch (err) { /* not ours */ }
    });

    // why: what was seen; changed: the device's network changed (not only the path went quiet)
    function suspect(why, changed = false) {
      if (over || !isCurrent()) return stop();
      if (changed) changedAt = Date.now();
      const sign = { sign: why, at: Date.now(), verdict: null };
      seen.push(sign);
      if (seen.length > 50) seen.shift();
      if (ws.readyState !== WebSocket.OPEN) return void (sign.verdict = "not open");
      // a probe out already: it decides (a change seen meanwhile counts at its deadline)
      if (probe) return void (sign.verdict = "probing");
      const deadline = probeDeadline();
      const at = Date.now();
      probe = {
        at, sign,
        timer: setTimeout(() => {
          if (!probe || probe.at !== at) return;
          probe = null;
          if (heardAt >= at) return;
          if (Date.now() - changedAt > CHANGED_FOR + deadline) {
            sign.verdict = "unanswered";  // the PING_DEAD clock runs from this probe
            return;
          }
          sign.verdict = "dead";
          dead();
        }, deadline),
      };
      sign.deadline = deadline;
      if (waiting === null || heardAt >= waiting) waiting = at;
      try { ping(); } catch (err) { dead(); }
    }

    function peer(pc) {
      if (over || !pc) return;
      const look = (what) => () => {
        if (pc.connectionState === "closed") return;  // the page closed it: no sign
        const state = what === "ice" ? pc.iceConnectionState : pc.connectionState;
        if (state === "disconnected" || state === "failed") suspect(`${what} ${state}`);
      };
      listen(pc, "iceconnectionstatechange", look("ice"));
      listen(pc, "connectionstatechange", look("connection"));
    }

    listen(window, "online", () => suspect("online", true));
    listen(window, "offline", () => suspect("offline", true));
    if (navigator.connection && navigator.connection.addEventListener) {
      // `change` also fires when only the estimates move (effectiveType, downlink, rtt: a
      // mobile link getting slow on the same network); the network changed only when its
      // type did, where the browser tells the type (Android, ChromeOS; not desktop Linux)
      let type = navigator.connection.type;
      listen(navigator.connection, "change", () => {
        const now = navigator.connection.type;
        if (now !== undefined && now !== type) {
          type = now;
          suspect(`connection type ${now}`, true);
        } else {
          suspect("connection change");
        }
      });
    }

    const timer = setInterval(() => {
      if (!isCurrent()) return stop();
      const now = Date.now();
      if (ws.readyState === WebSocket.CONNECTING) {
        if (now - opened > PING_DEAD) {
          seen.push({ sign: "not opened", at: now, verdict: "dead" });
          dead();
        }
        return;
      }
      if (ws.readyState !== WebSocket.OPEN) return;
      if (waiting !== null && heardAt < waiting) {
        if (now - waiting > PING_DEAD) {
          seen.push({ sign: "ping unanswered", at: now, verdict: "dead" });
          return dead();
        }
      } else {
        waiting = now;
      }
      // sends that do not drain: what went out last time is still there, or more
      const stuck = buffered > 0 && ws.bufferedAmount >= buffered;
      buffered = ws.bufferedAmount;
      ping();
      if (stuck) suspect("send not draining");
    }, PING_EVERY);
    ws.addEventListener("close", stop);

    return { peer, suspect };
  }

  return { watch, signs: seen, PING_EVERY, PING_DEAD, PROBE_MIN, PROBE_MAX };
})();
