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
"use strict";

window.remotecaseHeartbeat = (() => {
  const PING_EVERY = 2000;
  const PING_DEAD = 7000;

  // ws: the page's signalling socket; isCurrent(): whether the page still uses it; onDead():
  // called once when it is taken for dead (its own handlers are detached and it is closed first)
  function watch(ws, { isCurrent, onDead }) {
    const opened = Date.now();
    let heardAt = opened;
    let pings = 0;
    let waiting = null;  // when the oldest ping not answered by anything heard since was sent
    ws.addEventListener("message", () => { heardAt = Date.now(); });
    const dead = () => {
      clearInterval(timer);
      ws.onmessage = ws.onclose = null;  // whatever it says from now on is the past
      ws.close();
      onDead();
    };
    const timer = setInterval(() => {
      if (!isCurrent()) return clearInterval(timer);
      const now = Date.now();
      if (ws.readyState === WebSocket.CONNECTING) {
        if (now - opened > PING_DEAD) dead();
        return;
      }
      if (ws.readyState !== WebSocket.OPEN) return;
      if (waiting !== null && heardAt < waiting) {
        if (now - waiting > PING_DEAD) return dead();
      } else {
        waiting = now;
      }
      ws.send(JSON.stringify({ type: "ping", id: ++pings }));
    }, PING_EVERY);
    ws.addEventListener("close", () => clearInterval(timer));
  }

  return { watch, PING_EVERY, PING_DEAD };
})();
