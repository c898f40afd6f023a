// Reading time for the tracked page, by the tracking protocol (README, "Browser protocol"):
// only time the page is visible AND focused counts; a heartbeat every interval;
// a flush with sendBeacon when the page is hidden (visibilitychange) or left (pagehide).
(function () {
  "use strict";
  var body = document.body;
  var view = body.getAttribute("data-view");
  var url = body.getAttribute("data-beacon");
  var interval = (parseInt(body.getAttribute("data-interval"), 10) || 10) * 1000;
  if (!view || !url) { return; }
  var seq = 0;
  var engaged = 0;          // engaged ms not yet sent
  var since = null;         // when the current engaged stretch began (performance.now())
  var maxScroll = 0;
  var ended = false;

  function active() { return document.visibilityState === "visible" && document.hasFocus(); }
  function settle() {       // move the running stretch into `engaged`
    var now = performance.now();
    if (since !== null) { engaged += now - since; }
    since = active() ? now : null;
  }
  function scroll() {
    var doc = document.documentElement;
    var seen = (window.scrollY + window.innerHeight) / Math.max(doc.scrollHeight, 1);
    maxScroll = Math.max(maxScroll, Math.min(100, Math.round(seen * 100)));
  }
  function send(end) {
    settle();
    if (ended) { return; }
    var delta = Math.round(engaged);
    if (delta <= 0 && !end) { return; }
    engaged -= delta;
    seq += 1;
    var payload = JSON.stringify({view: view, seq: seq, engaged_ms: delta, scroll: maxScroll, end: !!end});
    if (end) { ended = true; }
    if (navigator.sendBeacon && navigator.sendBeacon(url, new Blob([payload], {type: "text/plain"}))) { return; }
    fetch(url, {method: "POST", body: payload, keepalive: true, credentials: "same-origin"}).catch(function () {});
  }

  scroll();
  settle();
  window.addEventListener("scroll", scroll, {passive: true});
  window.addEventListener("focus", settle);
  window.addEventListener("blur", settle);
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") { send(false); } else { settle(); }
  });
  window.addEventListener("pagehide", function () { send(true); });
  setInterval(function () { send(false); }, interval);
})();
